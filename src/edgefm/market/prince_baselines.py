"""Baselines for PRINCE's market (``prince.py``), each an outcome in the same JSON shape.

- ``uniform``: each tenant posts one price to every device that holds its data, the largest its
  budget affords at the devices' equilibrium (bisection), tenants in turn until none changes.
- ``isolated``: each tenant prices as if it were the only tenant (PRINCE's plan with no
  competition, the single-tenant mechanism run M times); all post at once and the devices play.
- ``random``: the SplitFed default: every device joins a random tenant among those it holds data
  for with q ~ U(q_min, 1), paid what leaves it indifferent; the rounds are the bound's (which
  assumes unbiased aggregation; naive averaging can only need more).
- ``topk``: each tenant takes its k largest-data devices not yet taken at q = 1, k the most its
  budget affords at the prices that induce q = 1.
- ``social``: the reference, not a mechanism: a planner who assigns devices and q directly to
  minimise sum_m J_m, paying each device its cost (individually rational) within every budget,
  ignoring the devices' and tenants' incentives. A local search (best single-device move, a
  tenant or none and q on a grid, until none improves) from the outcomes it is given, so it is
  a local optimum no worse than any of them, not a certified global one.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edgefm.market import prince_tenant as T
from edgefm.market.prince import State, device_equilibrium, outcome, tenant_metrics
from edgefm.market.prince_instance import Instance


def uniform(inst: Instance, max_sweeps: int = 10, steps: int = 20) -> dict:
    clock = time.perf_counter()
    prices = np.zeros((inst.n_tenants, inst.n_devices))
    state, _ = device_equilibrium(inst, prices)
    top = float(np.max(inst.cost + inst.theta[None, :] * inst.n_devices + inst.gamma[:, None], initial=0.0)) * 4
    for _ in range(max_sweeps):
        changed = False
        for m in range(inst.n_tenants):
            eligible = inst.share[:, m] > 0

            def at(price: float, m=m, eligible=eligible, prices=prices, state=state):
                trial = prices.copy()
                trial[m] = np.where(eligible, price, 0.0)
                new, _ = device_equilibrium(inst, trial, state)
                return trial, new, tenant_metrics(inst, trial, new, m)

            lo, hi = 0.0, top
            for _ in range(steps):  # the highest uniform price the budget affords
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if at(mid)[2]["budget_met"] else (lo, mid)
            trial, new, metrics = at(lo)
            if abs(trial[m].max(initial=0.0) - prices[m].max(initial=0.0)) > 1e-9 * top:
                prices, state, changed = trial, new, True
        if not changed:
            break
    return outcome(inst, prices, state, clock=clock)


def isolated(inst: Instance) -> dict:
    clock = time.perf_counter()
    prices = np.zeros((inst.n_tenants, inst.n_devices))
    for m in range(inst.n_tenants):
        prices[m] = T.post(inst, m, T.plan(inst, m, np.zeros(inst.n_devices)))
    state, _ = device_equilibrium(inst, prices)
    return outcome(inst, prices, state, clock=clock)


def random(inst: Instance, rng: np.random.Generator) -> dict:
    clock = time.perf_counter()
    tenant = np.full(inst.n_devices, -1)
    for n in range(inst.n_devices):
        options = np.flatnonzero(inst.share[n] > 0)
        if len(options):
            tenant[n] = int(rng.choice(options))
    q = np.where(tenant >= 0, rng.uniform(inst.q_min, 1.0, inst.n_devices), 0.0)
    return _paid_at_cost(inst, State(tenant, q), clock)


def topk(inst: Instance) -> dict:
    clock = time.perf_counter()
    tenant = np.full(inst.n_devices, -1)
    for m in range(inst.n_tenants):
        free = np.flatnonzero((inst.share[:, m] > 0) & (tenant < 0))
        order = free[np.argsort(-inst.share[free, m], kind="stable")]
        best = 0
        for k in range(1, len(order) + 1):  # payments grow with k: stop at the first that breaks the budget
            members, q = order[:k], np.ones(k)
            r = T.rounds(inst, m, members, q)
            if not math.isfinite(r):  # below the tenant's coverage floor: take more
                continue
            if r * float(np.sum(T.inducing_prices(inst, m, members, q))) > inst.budget[m]:
                break
            best = k
        tenant[order[:best]] = m
    return _paid_at_cost(inst, State(tenant, (tenant >= 0).astype(float)), clock)


def _paid_at_cost(inst: Instance, state: State, clock: float) -> dict:
    """Prices that leave each member indifferent at its assigned q (utility 0)."""
    prices = np.zeros((inst.n_tenants, inst.n_devices))
    load = state.loads(inst.n_tenants)
    for n in np.flatnonzero(state.tenant >= 0):
        m, q = state.tenant[n], state.q[n]
        prices[m, n] = inst.cost[n, m] + inst.theta[m] * load[m] + inst.gamma[n] * q / 2
    return outcome(inst, prices, state, clock=clock)


Q_GRID = np.linspace(0.1, 1.0, 10)


def social(inst: Instance, starts: list[dict], max_sweeps: int = 30) -> dict:
    """The planner's local optimum of sum_m J_m, from each outcome in ``starts`` (their tenant
    and q; a start whose at-cost payments break a budget is skipped, which an outcome that
    honoured its budgets with devices at or above utility 0 never does)."""
    clock = time.perf_counter()
    best: tuple[tuple[int, float], State] | None = None
    for start in starts:
        state = State(np.asarray(start["tenant"], int), np.asarray(start["q"], float))
        state.q = np.where(state.tenant >= 0, state.q, 0.0)
        found = _descend(inst, state, max_sweeps)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    if best is None:
        raise ValueError("social: no start honours the budgets at cost")
    return _paid_at_cost(inst, best[1], clock)


def _descend(inst: Instance, state: State, max_sweeps: int) -> tuple[tuple[int, float], State] | None:
    def time_of(m: int, tenant: np.ndarray, q: np.ndarray) -> float:
        """J_m with members paid at cost: inf when nobody serves or the members hold less than
        the tenant's coverage floor (counted unserved), NaN when paying them breaks the budget."""
        members = np.flatnonzero(tenant == m)
        if not len(members):
            return math.inf
        qm = q[members]
        r = T.rounds(inst, m, members, qm)
        if not math.isfinite(r):
            return math.inf
        load = qm.sum()
        per_round = np.sum(qm * (inst.cost[members, m] + inst.theta[m] * load + inst.gamma[members] * qm / 2))
        if r * per_round > inst.budget[m] * (1 + 1e-9):
            return math.nan
        return r * T.round_time(inst, m, members, qm)

    def score(times: np.ndarray) -> tuple[int, float]:  # fewest unserved tenants first, then sum J
        finite = np.isfinite(times)
        return int((~finite).sum()), float(times[finite].sum())

    times = np.array([time_of(m, state.tenant, state.q) for m in range(inst.n_tenants)])
    if np.isnan(times).any():
        return None  # a tenant over budget at cost
    current = score(times)
    for _ in range(max_sweeps):
        improved = False
        for n in range(inst.n_devices):
            here = int(state.tenant[n])
            move = None
            for m in [-1, *np.flatnonzero(inst.share[n] > 0).tolist()]:
                for qv in Q_GRID if m >= 0 else [0.0]:
                    if m == here and qv == state.q[n]:
                        continue
                    tenant, q = state.tenant.copy(), state.q.copy()
                    tenant[n], q[n] = m, qv
                    trial = times.copy()
                    for k in {here, m} - {-1}:
                        trial[k] = time_of(k, tenant, q)
                    if np.isnan(trial).any():
                        continue  # a budget broken
                    s = score(trial)
                    gains = s[0] < current[0] or (s[0] == current[0] and s[1] < current[1] * (1 - 1e-9))
                    if gains and (move is None or s < move[0]):
                        move = (s, tenant, q, trial)
            if move is not None:
                current, state, times, improved = move[0], State(move[1], move[2]), move[3], True
        if not improved:
            break
    return current, state


def summary(result: dict) -> dict:
    """Per-tenant J_m and payment, and how many tenants met budget and deadline."""
    ts = result["tenants"]
    return {
        "time": [t["time"] if t["time"] is not None else math.inf for t in ts],
        "payment": [t["payment"] for t in ts],
        "budget_met": sum(t["budget_met"] for t in ts),
        "deadline_met": sum(t["deadline_met"] for t in ts),
    }

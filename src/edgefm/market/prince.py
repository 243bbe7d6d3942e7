"""PRINCE's market: devices play a congestion game over tenants, tenants post Stackelberg prices.

Seed paper: Li, Hu, Min, Huang, "PRINCE: price incentives for multi-tenant split federated
fine-tuning" (arXiv 2503.04971). Only its abstract is public; the model is the one fixed in the
project's issue and ``docs/prince.md`` (a reconstruction: every assumption is listed there).

Devices. Device n picks one tenant m (or none) and a participation probability q_n. At tenant m,
``U_n = q_n (P_{m,n} - e_{n,m} - theta_m (L_{-n,m} + q_n)) - gamma_n q_n^2 / 2`` where L_{-n,m}
is the others' load at m; abstaining gives 0. Best response at a fixed tenant:
``q = clip((P - e - theta L) / (gamma + 2 theta), 0, 1)``. The game has the exact potential
``Phi = sum_m [sum_{N_m} (q (P - e) - gamma q^2 / 2) - theta_m / 2 ((sum_{N_m} q)^2 + sum_{N_m} q^2)]``
(:func:`potential`), so asynchronous best responses raise Phi and stop at a pure equilibrium.

:func:`device_equilibrium` alternates two Phi-ascending steps: (1) for the current assignment,
the unique maximiser of Phi over q (strictly concave): every member's q is
``clip((a_n - theta S) / (gamma_n + theta), 0, 1)`` at the tenant's load S, a one-dimensional
monotone fixed point solved by bisection and then exactly on its linear piece; (2) every device
with an improving deviation moves, one at a time, to its best (tenant, q) given the others.
It stops when no device gains more than ``tol`` (the exact check of :func:`device_regret`).

Tenants. Tenant m needs ``R_m(q) = (alpha_m sum_n p~_n^2 G2_n / max(q_n, q_min) + beta_m) / eps_m``
rounds (p~: data shares renormalised over its members), each taking the expected slowest member
``tau_m = E[max_{n participates} d_n] + h_m S_m`` (exact from the sorted times, plus the edge
time that grows with the load S_m). It minimises ``J_m = R_m tau_m`` subject to
``R_m sum_n P_{m,n} q_n <= B_m``; ``J_m <= D_m`` is reported. A price that makes device n play
q_n when the tenant's members all play as planned is ``P = e + theta (S - q_n) + (gamma + 2 theta) q_n``
and leaves it ``(theta + gamma / 2) q_n^2``, so a device whose best alternative pays u_alt
comes only at ``q_n >= sqrt(u_alt / (theta + gamma / 2))`` (the competition premium).
:func:`plan` searches the tenant's plans: members = eligible devices no slower than a time cut
T (a few quantiles of d), and q_n solving the first-order condition of min R s.t. payment,
``q_n^2 (e_n + 2 theta S + 2 (gamma_n + theta) q_n) = kappa p_n^2 G2_n``, raised to the premium,
with kappa the largest the budget allows (``scipy.optimize.brentq``). With no congestion and a
linear cost this is exactly ``q_n = min(1, p_n sqrt(alpha G2_n / (nu c_n)))`` (tested).

:func:`equilibrium` opens with every tenant's plan as if it were alone (all posted at once),
then iterates tenant best responses (Gauss-Seidel): each tenant plans against
the current devices, posts its prices, the devices re-equilibrate, and the new prices are kept
only if the tenant's *realised* J_m falls by more than ``rtol`` (or its budget becomes met).
It stops when a sweep keeps nothing. :func:`tenant_regret` samples random price perturbations to
report how far the result is from a Stackelberg equilibrium.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from edgefm.market import prince_tenant as T
from edgefm.market.prince_instance import Instance, InstanceError

__all__ = ["Instance", "InstanceError", "device_equilibrium", "equilibrium", "outcome", "potential"]


@dataclass
class State:
    """Who serves whom (-1: nobody) and how often; loads S_m follow."""

    tenant: np.ndarray  # [N] int
    q: np.ndarray  # [N]

    def loads(self, m_count: int) -> np.ndarray:
        on = self.tenant >= 0
        return np.bincount(self.tenant[on], weights=self.q[on], minlength=m_count).astype(float)

    def copy(self) -> State:
        return State(self.tenant.copy(), self.q.copy())


# ----------------------------------------------------------------------------- devices


def potential(inst: Instance, prices: np.ndarray, state: State) -> float:
    """Phi of the congestion game (``prices``: [M, N])."""
    on = np.flatnonzero(state.tenant >= 0)
    m, q = state.tenant[on], state.q[on]
    own = q * (prices[m, on] - inst.cost[on, m]) - inst.gamma[on] * q**2 / 2
    s = state.loads(inst.n_tenants)
    sq = np.bincount(m, weights=q**2, minlength=inst.n_tenants)
    return float(own.sum() - np.sum(inst.theta / 2 * (s**2 + sq)))


def responses(inst: Instance, prices: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every device's best q at every tenant given the others ([N, M]), its utility there, and
    its current utility ([N])."""
    n = np.arange(inst.n_devices)
    a = prices.T - inst.cost  # [N, M]
    load = np.broadcast_to(state.loads(inst.n_tenants), a.shape).copy()
    on = state.tenant >= 0
    load[n[on], state.tenant[on]] -= state.q[on]  # L_{-n,m}
    theta, gamma = inst.theta[None, :], inst.gamma[:, None]
    best_q = np.clip((a - theta * load) / (gamma + 2 * theta), 0.0, 1.0)
    best_u = best_q * (a - theta * (load + best_q)) - gamma * best_q**2 / 2
    cur = np.zeros(inst.n_devices)
    mm, qq = state.tenant[on], state.q[on]
    cur[on] = qq * (a[on, mm] - inst.theta[mm] * (load[on, mm] + qq)) - inst.gamma[on] * qq**2 / 2
    return best_q, best_u, cur


def device_regret(inst: Instance, prices: np.ndarray, state: State) -> np.ndarray:
    """Each device's largest gain from a unilateral change of tenant or q (0 at an equilibrium)."""
    _, best_u, cur = responses(inst, prices, state)
    return np.maximum(best_u.max(axis=1, initial=0.0), 0.0) - cur


def _solve_q(inst: Instance, prices: np.ndarray, tenant: np.ndarray) -> np.ndarray:
    """The maximiser of Phi over q for a fixed assignment: per tenant, q_n = clip((a_n - theta S)
    / (gamma_n + theta), 0, 1) with S = sum q_n, solved for all tenants at once."""
    q = np.zeros(inst.n_devices)
    on = np.flatnonzero(tenant >= 0)
    if not len(on):
        return q
    m = tenant[on]
    a = prices[m, on] - inst.cost[on, m]
    th, den = inst.theta[m], inst.gamma[on] + inst.theta[m]
    mc = inst.n_tenants

    def q_at(s: np.ndarray) -> np.ndarray:
        return np.clip((a - th * s[m]) / den, 0.0, 1.0)

    lo, hi = np.zeros(mc), np.bincount(m, minlength=mc).astype(float)
    for _ in range(60):  # g(S) = sum q(S) - S falls in S: bisection on every tenant at once
        mid = (lo + hi) / 2
        up = np.bincount(m, weights=q_at(mid), minlength=mc) > mid
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    s = (lo + hi) / 2
    # Exact on the final linear piece: members strictly inside (0, 1) move with S, the rest are fixed.
    raw = (a - th * s[m]) / den
    inner = (raw > 0) & (raw < 1)
    ones = np.bincount(m, weights=(raw >= 1).astype(float), minlength=mc)
    num = np.bincount(m, weights=np.where(inner, a / den, 0.0), minlength=mc) + ones
    slope = np.bincount(m, weights=np.where(inner, th / den, 0.0), minlength=mc)
    exact = num / (1 + slope)
    ok = np.abs(exact - s) <= 1e-6 * (1 + s)  # trust the closed form only where the piece held
    q[on] = q_at(np.where(ok, exact, s))
    return q


def device_equilibrium(
    inst: Instance, prices: np.ndarray, start: State | None = None, tol: float = 1e-12, max_passes: int = 500
) -> tuple[State, int]:
    """A pure equilibrium of the devices' game at ``prices`` and the number of passes it took."""
    prices = np.asarray(prices, dtype=float)
    if start is None:  # everyone at the tenant best for it alone
        zero = State(np.full(inst.n_devices, -1), np.zeros(inst.n_devices))
        _, u, _ = responses(inst, prices, zero)
        best = u.argmax(axis=1) if inst.n_tenants else np.zeros(inst.n_devices, int)
        start = State(np.where(u.max(axis=1, initial=0.0) > tol, best, -1), zero.q)
    state = start.copy()
    scale = tol * max(1.0, float(np.abs(prices).max(initial=0.0)), float(inst.cost.max(initial=0.0)))
    a_all = prices.T - inst.cost
    for passes in range(1, max_passes + 1):
        state.q = _solve_q(inst, prices, state.tenant)
        gain = device_regret(inst, prices, state)
        movers = np.flatnonzero(gain > scale)
        if not len(movers):
            state.tenant[state.q <= 0] = -1  # a member playing q = 0 is not serving anybody
            return state, passes
        s = state.loads(inst.n_tenants)
        for n in movers[np.argsort(-gain[movers], kind="stable")]:
            _move(inst, a_all[n], n, state, s, scale)
    raise InstanceError(f"device game: no equilibrium within {max_passes} passes; expected convergence")


def _move(inst: Instance, a: np.ndarray, n: int, state: State, s: np.ndarray, tol: float) -> bool:
    """Device n's best response to the current loads ``s`` (updated in place)."""
    m0, q0 = state.tenant[n], state.q[n]
    load = s.copy()
    if m0 >= 0:
        load[m0] -= q0
    qb = np.clip((a - inst.theta * load) / (inst.gamma[n] + 2 * inst.theta), 0.0, 1.0)
    u = qb * (a - inst.theta * (load + qb)) - inst.gamma[n] * qb**2 / 2
    cur = 0.0 if m0 < 0 else q0 * (a[m0] - inst.theta[m0] * (load[m0] + q0)) - inst.gamma[n] * q0**2 / 2
    k = int(np.argmax(u))
    new_m, new_q = (k, float(qb[k])) if u[k] > 0 else (-1, 0.0)
    if max(u[k], 0.0) - cur <= tol:
        return False
    if m0 >= 0:
        s[m0] -= q0
    if new_m >= 0:
        s[new_m] += new_q
    state.tenant[n], state.q[n] = new_m, new_q
    return True


def best_response_dynamics(
    inst: Instance, prices: np.ndarray, rng: np.random.Generator, max_moves: int = 100_000
) -> tuple[State, list[float]]:
    """Plain asynchronous best responses (one device at a time, random order) from nobody
    serving; returns the final state and Phi after every move (what the tests check)."""
    state = State(np.full(inst.n_devices, -1), np.zeros(inst.n_devices))
    s, trace, a_all = np.zeros(inst.n_tenants), [potential(inst, prices, state)], prices.T - inst.cost
    for _ in range(max_moves // max(inst.n_devices, 1) + 1):
        moved = False
        for n in rng.permutation(inst.n_devices):
            if _move(inst, a_all[n], n, state, s, 1e-12):
                moved = True
                trace.append(potential(inst, prices, state))
        if not moved:
            return state, trace
    raise InstanceError(f"best-response dynamics: still moving after {max_moves} moves")


def alternatives(inst: Instance, prices: np.ndarray, state: State, m: int) -> np.ndarray:
    """Each device's best utility away from tenant m (other tenants or abstaining)."""
    _, best_u, _ = responses(inst, prices, state)
    best_u[:, m] = 0.0
    return best_u.max(axis=1, initial=0.0).clip(min=0.0)


# ----------------------------------------------------------------------------- the market


def tenant_metrics(inst: Instance, prices: np.ndarray, state: State, m: int) -> dict:
    """What tenant m gets at this state: rounds, round time, J_m, payments, and its constraints."""
    members = np.flatnonzero((state.tenant == m) & (state.q > 0))
    q = state.q[members]
    r = T.rounds(inst, m, members, q)
    tau = T.round_time(inst, m, members, q)
    per_round = float(np.sum(prices[m, members] * q))
    j = r * tau if math.isfinite(r) else math.inf
    payment = r * per_round if math.isfinite(r) else 0.0
    return {
        "name": inst.names[m],
        "members": len(members),
        "load": float(q.sum()),
        "rounds": r,
        "round_seconds": tau,
        "time": j,
        "per_round_payment": per_round,
        "payment": payment,
        "budget": float(inst.budget[m]),
        "deadline": float(inst.deadline[m]),
        "budget_met": bool(payment <= inst.budget[m] * (1 + 1e-9)),
        "deadline_met": bool(j <= inst.deadline[m]),
    }


def _better(new: dict, old: dict, rtol: float) -> bool:
    if not new["budget_met"]:
        return False
    return not old["budget_met"] or new["time"] < old["time"] * (1 - rtol)


def start_state(inst: Instance) -> State | None:
    if inst.start_q is None:
        return None
    return State(inst.start_tenant.copy(), inst.start_q.copy())


def equilibrium(inst: Instance, rtol: float = 1e-3, max_sweeps: int = 50) -> dict:
    """PRINCE: tenants' best responses (Gauss-Seidel) over the devices' equilibrium; the outcome."""
    clock = time.perf_counter()
    # opening offers: every tenant's plan as if it were alone; then best responses to each other
    prices = np.zeros((inst.n_tenants, inst.n_devices))
    for m in range(inst.n_tenants):
        prices[m] = T.post(inst, m, T.plan(inst, m, np.zeros(inst.n_devices)))
    state, passes = device_equilibrium(inst, prices, start_state(inst))
    sweeps, converged = 0, False
    for sweep in range(1, max_sweeps + 1):
        sweeps, changed = sweep, False
        for m in range(inst.n_tenants):
            chosen = T.plan(inst, m, alternatives(inst, prices, state, m))
            current = tenant_metrics(inst, prices, state, m)
            if current["budget_met"] and chosen.time >= current["time"] * (1 - rtol):
                continue  # its best plan promises no gain: nothing to try
            trial = prices.copy()
            trial[m] = T.post(inst, m, chosen)
            new_state, k = device_equilibrium(inst, trial, state)
            passes += k
            if _better(tenant_metrics(inst, trial, new_state, m), current, rtol):
                prices, state, changed = trial, new_state, True
        if not changed:
            converged = True
            break
    return outcome(inst, prices, state, sweeps=sweeps, passes=passes, converged=converged, clock=clock)


def outcome(inst: Instance, prices: np.ndarray, state: State, clock: float | None = None, **info) -> dict:
    """The JSON outcome of any pricing (PRINCE's or a baseline's) at a device state."""
    _, _, utility = responses(inst, prices, state)
    tenants = [tenant_metrics(inst, prices, state, m) for m in range(inst.n_tenants)]
    for t in tenants:  # JSON has no infinity: an unserved tenant's rounds and time are null
        for key in ("rounds", "time"):
            t[key] = t[key] if math.isfinite(t[key]) else None
    out = {
        "prices": prices.tolist(),
        "tenant": state.tenant.tolist(),
        "q": state.q.tolist(),
        "utility": utility.tolist(),
        "tenants": tenants,
        "potential": potential(inst, prices, state),
        "device_regret": float(device_regret(inst, prices, state).max(initial=0.0)),
        **info,
    }
    if clock is not None:
        out["seconds"] = time.perf_counter() - clock
    return out


def tenant_regret(
    inst: Instance, result: dict, rng: np.random.Generator, samples: int = 20, sigma: float = 0.1, recruit: bool = True
) -> list[float]:
    """Per tenant, the largest relative fall of J_m found by random unilateral price changes that
    keep its budget: each member's price scaled by exp(sigma z); with ``recruit``, half the samples
    also offer a random eligible non-member the price of a random member. Prices stay within the
    tenants' strategy space: at most what makes a device play q = 1 (no bidding above it; see
    ``prince_tenant.plan``). 0: none helped."""
    prices = np.asarray(result["prices"], dtype=float)
    state = State(np.asarray(result["tenant"], dtype=int), np.asarray(result["q"], dtype=float))
    gains = []
    for m in range(inst.n_tenants):
        base = tenant_metrics(inst, prices, state, m)
        members = np.flatnonzero(prices[m] > 0)
        others = np.flatnonzero((prices[m] <= 0) & (inst.share[:, m] > 0))
        load = state.loads(inst.n_tenants)[m]
        mine = np.where(state.tenant == m, state.q, 0.0)
        cap = inst.cost[:, m] + inst.theta[m] * (load - mine) + inst.gamma + 2 * inst.theta[m]  # q = 1
        best = 0.0
        for k in range(samples):
            trial = prices.copy()
            trial[m, members] *= np.exp(sigma * rng.standard_normal(len(members)))
            if recruit and k % 2 and len(others) and len(members):
                trial[m, rng.choice(others)] = prices[m, rng.choice(members)]
            trial[m] = np.minimum(trial[m], np.maximum(cap, prices[m]))
            new_state, _ = device_equilibrium(inst, trial, state)
            new = tenant_metrics(inst, trial, new_state, m)
            if new["budget_met"] and math.isfinite(new["time"]):
                if not base["budget_met"] or not math.isfinite(base["time"]):
                    best = max(best, 1.0)
                else:
                    best = max(best, (base["time"] - new["time"]) / base["time"])
        gains.append(best)
    return gains

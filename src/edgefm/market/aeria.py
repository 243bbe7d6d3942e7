"""AERIA: auction-based pricing of on-demand DNN inference at the edge.

Seed: Li, Hu, Min, Huang, Huang, "Dynamic Pricing for On-Demand DNN Inference in the Edge-AI
Market" (arXiv 2503.04521). Its text was not available to us; this reconstruction follows the
project's issue, each step documented here and in ``docs/aeria.md``.

Market. An edge infrastructure provider (EIP) sells edge compute at ``unit_cost`` per GFLOP up to
``capacity`` GFLOPs; the AI service provider (ASP) runs the auction; each user wants one
inference of a multi-exit DNN (``workloads.py``) with an accuracy requirement, a deadline, a
task complexity (a FLOPs multiplier), a device and an uplink, and holds a private value.

1. **Partitioning** (bid-independent). Over every (exit, cut) pair — layers before the cut run on
   the device, the rest of the way to the exit on the edge — keep the plans that meet the
   accuracy requirement and the deadline (device compute + upload of the cut activation + edge
   compute), and pick the one cheapest for the edge (ties: faster). ``cost_i`` is its edge cost.
2. **Net bids**: b'_i = b_i - cost_i.
3. **Revenue target**: a random consensus estimate (Goldberg & Hartline, "Competitiveness via
   consensus", SODA 2003) of F^(2), the best revenue of a single price with at least two winners:
   F^(2) rounded down to the grid {c^(z + U)}, base c (1.2 by default: the rounding keeps
   (c - 1) / (c ln c) of F^(2) in expectation, 0.63 at c = e but 0.91 at 1.2, and the threshold
   variant is truthful for every c), U ~ Uniform[0, 1) drawn from the seed.
4. **Cost sharing** (Moulin): the largest set of k users whose net bids each cover target/k win;
   each pays its edge cost + target/k; losers pay nothing (``variant="consensus"``).
5. **Bid-independent variant** (``variant="threshold"``, the default): each user i gets the
   threshold the cost-sharing step would offer it if the target were estimated from the *other*
   users' bids — R_i = round_c(F^(2)(b'_{-i})), t_i = R_i / K where K is the largest group (i
   included) whose other K-1 members cover R_i/K — and wins iff b'_i >= t_i, paying cost_i + t_i.
   t_i does not depend on b_i for any draw of U, so the mechanism is universally truthful.
   The consensus variant equals it whenever the estimate reaches consensus (one bid rarely moves
   F^(2) across a grid point), and is envy-free by construction, but a bidder who can move the
   target may gain: its violation rate is measured, not assumed.

Capacity. If the feasible users' edge loads exceed the capacity, the auction runs over a pool
chosen *before* looking at bids: users in a seeded random priority order, greedily, while their
loads fit. Loads come from the bid-independent partitioning, so both variants stay as truthful
as they are without a capacity (a capacity rule that looked at bids would not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefm.market.aeria_instance import USER_FIELDS, Instance, InstanceError
from edgefm.market.workloads import Workload
from edgefm.market.workloads import load as load_workload

VARIANTS = ("threshold", "consensus")
PLACEMENTS = ("aeria", "device_only", "edge_only", "fixed_cut")
__all__ = ["USER_FIELDS", "Instance", "InstanceError", "Outcome", "generate", "partition", "run_auction"]


# ----------------------------------------------------------------------------- 1. partitioning


@dataclass
class Plans:
    exit: np.ndarray  # exit index per user, -1 if no feasible plan
    cut: np.ndarray  # layers run on the device
    edge_gflops: np.ndarray
    cost: np.ndarray  # edge cost ($), inf if infeasible
    latency: np.ndarray  # seconds
    demand: np.ndarray  # edge resource a_i (GFLOP/s) that finishes the edge part by the deadline

    @property
    def feasible(self) -> np.ndarray:
        return self.exit >= 0


def partition(inst: Instance, placement: str = "aeria", objective: str = "cost") -> Plans:
    """The edge-cheapest (exit, cut) per user meeting accuracy and deadline (bid-independent);
    with ``objective="resource"`` the plan needing the least edge resource a_i = edge FLOPs /
    (deadline - device time - network time) instead (ties: cheaper), as the resource-weighted
    auction (``aeria_resource.py``) prices it.

    ``placement`` restricts the cuts for the baselines: ``device_only`` (everything on the
    device), ``edge_only`` (upload the input), ``fixed_cut`` (half-way to the exit)."""
    if placement not in PLACEMENTS:
        raise InstanceError(f"placement: {placement!r}; expected one of {', '.join(PLACEMENTS)}")
    if objective not in ("cost", "resource"):
        raise InstanceError(f"objective: {objective!r}; expected cost or resource")
    w, n = inst.workload, inst.n_users
    cum = np.concatenate([[0.0], np.cumsum(w.layer_flops)])
    inf = np.full(n, np.inf)
    best = Plans(np.full(n, -1), np.zeros(n, dtype=int), np.zeros(n), inf.copy(), inf.copy(), inf.copy())
    for e, (last, acc, head) in enumerate(zip(w.exit_after, w.exit_accuracy, w.exit_flops, strict=True)):
        ok_acc = inst.accuracy_req <= acc + 1e-12
        depth = last + 1  # layers up to and including the exit's layer
        cuts = {"aeria": range(depth + 1), "device_only": [depth], "edge_only": [0], "fixed_cut": [depth // 2]}
        for c in cuts[placement]:
            on_device = (cum[c] + (head if c == depth else 0.0)) * inst.complexity
            on_edge = ((cum[depth] - cum[c]) + (head if c < depth else 0.0)) * inst.complexity
            upload = 0.0 if c == depth else (w.input_bytes if c == 0 else w.out_bytes[c - 1])
            network = 0.0 if c == depth else inst.latency + upload / inst.uplink
            latency = on_device / inst.device_flops + network + on_edge / inst.edge_flops
            cost = on_edge / 1e9 * inst.unit_cost
            ok = ok_acc & (latency <= inst.deadline)
            with np.errstate(divide="ignore", invalid="ignore"):  # infeasible plans leave no slack
                demand = np.where(ok, on_edge / 1e9 / (inst.deadline - (latency - on_edge / inst.edge_flops)), np.inf)
            demand = np.where(ok & (on_edge == 0), 0.0, demand)
            key, old = (cost, best.cost) if objective == "cost" else (demand, best.demand)
            tie = cost < best.cost if objective == "resource" else latency < best.latency
            better = ok & ((key < old) | ((key == old) & tie))
            best.exit[better], best.cut[better] = e, c
            best.edge_gflops[better], best.cost[better], best.latency[better], best.demand[better] = (
                on_edge[better] / 1e9,
                cost[better],
                latency[better],
                demand[better],
            )
    return best


def capacity_pool(inst: Instance, plans: Plans, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of users admitted to the auction: all feasible ones if their edge loads fit,
    else a seeded random priority order filled greedily — never a function of the bids."""
    feasible = plans.feasible
    if plans.edge_gflops[feasible].sum() <= inst.capacity:
        return feasible
    order = rng.permutation(inst.n_users)
    pool = np.zeros(inst.n_users, dtype=bool)
    used = 0.0
    for i in order:
        if feasible[i] and used + plans.edge_gflops[i] <= inst.capacity:
            pool[i] = True
            used += plans.edge_gflops[i]
    return pool


# ----------------------------------------------------------------------------- 2-5. the mechanism


def f2(net: np.ndarray) -> float:
    """F^(2): the best single-price revenue with at least two winners, max_{k>=2} k b_(k)."""
    b = np.sort(net[net > 0])[::-1]
    if len(b) < 2:
        return 0.0
    k = np.arange(1, len(b) + 1)
    return float((k * b)[1:].max())


def round_down(x: np.ndarray | float, base: float, u: float) -> np.ndarray:
    """Largest point of the random grid {base^(z + u) : z integer} not above x (0 for x <= 0)."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        z = np.floor(np.log(np.where(x > 0, x, 1.0)) / np.log(base) - u)
    return np.where(x > 0, base ** (z + u), 0.0)


def f2_without_each(b: np.ndarray) -> np.ndarray:
    """F^(2) of the bids with each one removed, for bids sorted descending (O(n))."""
    n = len(b)
    out = np.zeros(n)
    if n < 3:
        return out  # removing one leaves fewer than two bidders
    k = np.arange(n + 1)
    # P[k] = k b[k-1] (k-th highest of the others when k <= j); prefix max over 2..j
    p = np.full(n + 1, -np.inf)
    p[2:] = k[2:] * b[1:]
    prefix = np.maximum.accumulate(p)  # prefix[j] = max_{k<=j} P[k]
    # Q[k] = k b[k] (k-th highest of the others when k > j), k = 1..n-1; suffix max
    q = np.full(n + 1, -np.inf)
    q[1:n] = k[1:n] * b[1:n]
    suffix = np.maximum.accumulate(q[::-1])[::-1]  # suffix[m] = max_{k>=m} Q[k]
    j = np.arange(n)
    out = np.maximum(prefix[j], suffix[np.maximum(2, j + 1)])
    return np.maximum(out, 0.0)


def thresholds(b: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For bids sorted descending and each user's own target R_j: t_j = R_j / K_j with K_j the
    largest group size (j included, K >= 2) whose K-1 other members each cover R_j / K."""
    n = len(b)
    t = np.full(n, np.inf)
    if n < 2:
        return t
    kk = np.arange(n + 1, dtype=float)
    b_pad = np.concatenate([b, [-np.inf]])
    j = np.arange(n)
    for r in np.unique(targets[targets > 0]):
        mine = targets == r
        # K <= j+1: the (K-1)-th highest other is b[K-2]; K >= j+2: it is b[K-1]
        a_ok = np.zeros(n + 1, dtype=bool)
        a_ok[2:] = kk[2:] * b_pad[: n - 1] >= r
        last_a = np.maximum.accumulate(np.where(a_ok, np.arange(n + 1), 0))  # largest K <= m with A
        b_ok = np.zeros(n + 1, dtype=bool)
        b_ok[2:] = kk[2:] * b_pad[1:n] >= r
        last_b = int(np.flatnonzero(b_ok).max()) if b_ok.any() else 0
        k_best = np.maximum(last_a[np.minimum(j + 1, n)], np.where(last_b >= j + 2, last_b, 0))
        ok = mine & (k_best >= 2)
        t[ok] = r / k_best[ok]
    return t


@dataclass
class Outcome:
    winners: np.ndarray  # user indices
    payments: np.ndarray  # per user ($): edge cost + service price for winners, 0 otherwise
    plans: dict[str, np.ndarray]  # exit and cut per user (-1 where infeasible)
    revenue: float  # the ASP's service revenue: payments minus edge costs of winners
    eip_payment: float  # what the ASP pays the EIP for winners' edge compute
    utilities: np.ndarray  # true value - payment for winners, 0 otherwise
    target: float  # the consensus target from all bids (consensus variant's R)
    prices: np.ndarray  # service price offered to each user (inf: cannot win)
    f2: float
    admitted: int  # users in the capacity pool
    pool: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # who was admitted
    seconds: float = 0.0
    unit_prices: np.ndarray | None = None  # resource-weighted auction: $ per GFLOP/s offered each user

    def to_dict(self) -> dict[str, Any]:
        out = self._fields()
        if self.unit_prices is not None:
            out["unit_prices"] = [None if not np.isfinite(p) else float(p) for p in self.unit_prices]
        return out

    def _fields(self) -> dict[str, Any]:
        return {
            "winners": self.winners.tolist(),
            "payments": self.payments.tolist(),
            "plans": {k: v.tolist() for k, v in self.plans.items()},
            "revenue": self.revenue,
            "eip_payment": self.eip_payment,
            "utilities": self.utilities.tolist(),
            "target": self.target,
            "prices": [None if not np.isfinite(p) else float(p) for p in self.prices],
            "f2": self.f2,
            "admitted": self.admitted,
            "pool": self.pool.tolist(),
            "seconds": self.seconds,
        }


def run_auction(inst: Instance, seed: int, variant: str = "threshold", placement: str = "aeria") -> Outcome:
    """One round of AERIA (see the module docstring). Same seed, same outcome."""
    if variant not in VARIANTS:
        raise InstanceError(f"variant: {variant!r}; expected one of {', '.join(VARIANTS)}")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    u = float(rng.uniform())  # the consensus grid offset
    plans = partition(inst, placement)
    pool = capacity_pool(inst, plans, np.random.default_rng([seed, 1]))
    idx = np.flatnonzero(pool)
    net = np.where(pool, inst.bids - np.where(plans.feasible, plans.cost, 0.0), -np.inf)
    order = idx[np.argsort(-net[idx], kind="stable")]  # admitted users, highest net bid first
    b = np.maximum(net[order], 0.0)
    target = float(round_down(f2(b), inst.base, u))
    prices = np.full(inst.n_users, np.inf)
    if variant == "consensus":
        k = np.arange(1, len(b) + 1)
        ok = (k * b >= target) & (k >= 2) & (target > 0)
        if ok.any():
            k_star = int(k[ok].max())
            prices[order] = target / k_star
            win_sorted = np.zeros(len(b), dtype=bool)
            win_sorted[:k_star] = True
        else:
            win_sorted = np.zeros(len(b), dtype=bool)
    else:
        targets = round_down(f2_without_each(b), inst.base, u)
        t = thresholds(b, targets)
        prices[order] = t
        win_sorted = b >= t
    winners = np.sort(order[win_sorted])  # prices are positive, so every winner's net bid is too
    payments = np.zeros(inst.n_users)
    payments[winners] = plans.cost[winners] + prices[winners]
    values = inst.true_values()
    utilities = np.zeros(inst.n_users)
    utilities[winners] = values[winners] - payments[winners]
    return Outcome(
        winners=winners,
        payments=payments,
        plans={"exit": np.where(plans.feasible, plans.exit, -1), "cut": np.where(plans.feasible, plans.cut, -1)},
        revenue=float(prices[winners].sum()),
        eip_payment=float(plans.cost[winners].sum()),
        utilities=utilities,
        target=target,
        prices=prices,
        f2=f2(b),
        admitted=int(pool.sum()),
        pool=pool,
        seconds=time.perf_counter() - start,
    )


def generate(
    n_users: int, workload: Workload | str, rng: np.random.Generator, capacity_share: float | None = None
) -> Instance:
    """A random market on ``workload``.

    Devices: 40% IoT cameras, 30% low-end and 20% high-end phones, 10% embedded GPU boards
    (``edge/devices.py``) — the weak devices are who needs the edge. Accuracy requirements lie
    between the second exit's accuracy and the best; deadlines are application-level, 30-300 ms;
    task complexity scales FLOPs by 0.5-4 (input resolution); values are log-normal around the
    edge cost of the full model. ``capacity_share``: edge capacity as a share of the load all
    feasible users' plans need (None: unlimited).
    """
    from edgefm.edge.devices import sample_population

    if n_users < 0:
        raise InstanceError(f"n_users: {n_users}; expected >= 0")
    w = load_workload(workload) if isinstance(workload, str) else workload
    mix = {"iot_camera": 0.4, "low_end_phone": 0.3, "high_end_phone": 0.2, "embedded_gpu": 0.1}
    devices = sample_population(max(n_users, 1), mix, 0.2, rng)[:n_users]
    total = float(np.sum(w.layer_flops))
    edge_flops, unit_cost = 4e12, 1e-3
    complexity = rng.uniform(0.5, 4.0, n_users)
    acc = np.sort(np.array(w.exit_accuracy))
    full_cost = total * complexity / 1e9 * unit_cost
    values = full_cost * rng.lognormal(mean=0.7, sigma=0.6, size=n_users)
    inst = Instance(
        workload=w,
        bids=values,
        values=values,
        accuracy_req=rng.uniform(acc[min(1, len(acc) - 1)], acc[-1], n_users),
        deadline=rng.uniform(0.03, 0.3, n_users),
        complexity=complexity,
        device_flops=[d.flops_per_s for d in devices],
        uplink=[d.uplink_bps for d in devices],
        latency=[d.latency_s for d in devices],
        edge_flops=edge_flops,
        unit_cost=unit_cost,
        posted_price=float(np.median(full_cost) * 0.8),
    )
    if capacity_share is not None:  # a share of the edge load the users' own plans would need
        plans = partition(inst)
        inst.capacity = capacity_share * float(plans.edge_gflops[plans.feasible].sum())
    return inst

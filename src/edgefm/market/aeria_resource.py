"""AERIA's resource-weighted auction: one price per unit of edge resource.

Seed: Li, Hu, Min, Huang, Huang, "Dynamic Pricing for On-Demand DNN Inference in the Edge-AI
Market" (arXiv 2503.04521). Source of this variant: a detailed **third-party description** of
the paper, not the paper's text (``docs/aeria.md`` says so beside each step). The per-user
auction of ``aeria.py`` stays the default; this module is the variant the description gives.

1. **Resource demand.** Each bid carries a budget beta_i, a latency bound t_i, an accuracy
   requirement and the model (the instance's workload). For the (exit, cut) plan chosen,
   user i needs a_i = F_edge_i / (t_i - T_dev_i - T_net_i) GFLOP/s of the edge: the rate that
   finishes its edge part exactly by the bound. Plans are chosen without the bids, as the one
   needing the least a_i (``aeria.partition(..., objective="resource")``). Users whose plan runs
   wholly on their device need no edge resource and are outside this market.
2. **Bidding density** d_i = beta_i / a_i, $ per GFLOP/s; net of the edge's rental price rho
   (the reserve: the ASP never sells below what it pays; it follows the hourly electricity
   price in ``benchmarks/aeria_resource.py``), d'_i = d_i - rho.
3. **Benchmark**: the omniscient single unit price, max over k of d'_[k] (a_[1] + ... + a_[k])
   with densities sorted descending; F^(2) asks k >= 2, as the per-user auction does.
4. **Consensus estimate**: R = f(F^(2)) with f(w) = y^(floor(log_y w - u) + u), u ~ U[0, 1)
   from the seed (the instance's ``base`` is y).
5. **Cost sharing** (``variant="consensus"``): one unit price p = R / (sum of the winners' a_i);
   bidders whose net density is below p drop out and p is recomputed until stable. Dropping
   only raises p, so the stable set is the largest prefix of the density order (at least two
   bidders) whose last member covers R / (its demand sum). Winners pay (rho + p) a_i; the
   revenue is R; one unit price for all makes it envy-free by construction. Shares a_i R / A_S
   are cross-monotonic, so with R fixed this is Moulin's group-strategyproof mechanism; a bid
   that moves F^(2) across a grid point can move R, so it is truthful only at consensus.
6. **Bid-independent variant** (``variant="threshold"``, the default here as in ``aeria.py``):
   user i's target R_i is the consensus estimate of F^(2) of the *other* bids, and its unit
   threshold p_i = R_i / (a_i + A) where A is the demand of the largest prefix of the others
   that covers R_i / (a_i + A) with i in; i wins iff d'_i >= p_i and pays (rho + p_i) a_i.
   p_i never depends on beta_i, so the mechanism is universally truthful and individually
   rational. Cost O(n^2) per round (fine to ~20,000 bidders; AERIA's hourly slots hold ~100).
"""

from __future__ import annotations

import time

import numpy as np

from edgefm.market.aeria import Instance, InstanceError, Outcome, Plans, capacity_pool, partition, round_down

VARIANTS = ("threshold", "consensus")
__all__ = ["VARIANTS", "f_weighted", "market", "run_resource_auction", "thresholds_weighted"]


def market(inst: Instance, seed: int, placement: str = "aeria") -> tuple[Plans, np.ndarray, np.ndarray]:
    """(plans, indices of the users in this market, their net densities d'_i), the users sorted
    densest first. The capacity pool is ``aeria.capacity_pool``: drawn without the bids."""
    plans = partition(inst, placement, objective="resource")
    pool = capacity_pool(inst, plans, np.random.default_rng([seed, 1]))
    idx = np.flatnonzero(pool & (plans.demand > 0))
    net = inst.bids[idx] / plans.demand[idx] - inst.rental_price
    order = np.argsort(-net, kind="stable")
    return plans, idx[order], net[order]


def f_weighted(d: np.ndarray, a: np.ndarray, at_least: int = 2) -> float:
    """max_{k >= at_least} d_[k] A_k for densities sorted descending (negative ones count 0)."""
    if len(d) < at_least:
        return 0.0
    prod = np.maximum(d, 0.0) * np.cumsum(a)
    return float(max(prod[at_least - 1 :].max(), 0.0))


def _row_blocks(n: int):
    """Users 0..n-1 as column vectors of a few million matrix cells each (bounded memory)."""
    step = max(1, (1 << 22) // max(n, 1))
    for lo in range(0, n, step):
        yield np.arange(lo, min(n, lo + step))[:, None]


def f2_without_each(d: np.ndarray, a: np.ndarray) -> np.ndarray:
    """F^(2) of the others' bids for each user of a density-sorted market (O(n^2), chunked).

    Others' k densest: when k <= j (user j sits below them) the first k, d[k-1] C[k]; else
    the first k+1 without j, d[k] (C[k+1] - a_j)."""
    n = len(d)
    out = np.zeros(n)
    if n < 3:
        return out
    d = np.maximum(d, 0.0)
    c = np.concatenate([[0.0], np.cumsum(a)])
    k = np.arange(2, n)  # others' group sizes
    below = d[k - 1] * c[k]
    for j in _row_blocks(n):
        vals = np.where(k[None, :] <= j, below[None, :], d[k][None, :] * (c[k + 1][None, :] - a[j]))
        out[j[:, 0]] = np.maximum(vals.max(axis=1), 0.0)
    return out


def thresholds_weighted(d: np.ndarray, a: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each user's unit threshold p_j = R_j / (a_j + A) (inf where no other bidder joins it).

    The others' prefix of size m (m >= 1) with j in: for m <= j its last member has d[m-1] and
    the group's demand is a_j + C[m]; for m > j, d[m] and C[m+1]. The largest m whose last
    member covers R_j / demand is the stable group (``docs/aeria.md``)."""
    n = len(d)
    t = np.full(n, np.inf)
    if n < 2:
        return t
    c = np.concatenate([[0.0], np.cumsum(a)])
    m = np.arange(1, n)
    for j in _row_blocks(n):
        inside = m[None, :] > j  # j among the first m+1
        last = np.where(inside, d[m][None, :], d[m - 1][None, :])
        demand = np.where(inside, c[m + 1][None, :], a[j] + c[m][None, :])
        ok = (last * demand >= targets[j]) & (targets[j] > 0)
        best = np.where(ok, m[None, :], 0).max(axis=1)
        rows = j[:, 0]
        has = best > 0
        t[rows[has]] = targets[rows[has]] / np.where(
            best[has] > rows[has], c[best[has] + 1], a[rows[has]] + c[best[has]]
        )
    return t


def run_resource_auction(inst: Instance, seed: int, variant: str = "threshold", placement: str = "aeria") -> Outcome:
    """One round of the resource-weighted auction (module docstring). Same seed, same outcome.

    ``Outcome.prices`` holds each user's service price above the rental, p a_i, and
    ``unit_prices`` the unit price p ($ per GFLOP/s; inf: cannot win)."""
    if variant not in VARIANTS:
        raise InstanceError(f"variant: {variant!r}; expected one of {', '.join(VARIANTS)}")
    start = time.perf_counter()
    u = float(np.random.default_rng(seed).uniform())  # the same grid offset as aeria.run_auction
    plans, order, d = market(inst, seed, placement)
    a = plans.demand[order]
    f2 = f_weighted(d, a)
    target = float(round_down(f2, inst.base, u))
    unit = np.full(inst.n_users, np.inf)
    win_sorted = np.zeros(len(order), dtype=bool)
    if variant == "consensus":
        covers = (np.maximum(d, 0.0) * np.cumsum(a) >= target) & (np.arange(1, len(d) + 1) >= 2) & (target > 0)
        if covers.any():
            m = int(np.flatnonzero(covers).max()) + 1
            unit[order] = target / float(np.sum(a[:m]))
            win_sorted[:m] = True
    else:
        t = thresholds_weighted(d, a, round_down(f2_without_each(d, a), inst.base, u))
        unit[order] = t
        win_sorted = d >= t
    winners = np.sort(order[win_sorted])
    demand = np.where(np.isfinite(plans.demand), plans.demand, 0.0)
    prices = np.full(inst.n_users, np.inf)
    offered = np.isfinite(unit)
    prices[offered] = unit[offered] * demand[offered]
    payments = np.zeros(inst.n_users)
    payments[winners] = (inst.rental_price + unit[winners]) * demand[winners]
    utilities = np.zeros(inst.n_users)
    utilities[winners] = inst.true_values()[winners] - payments[winners]
    return Outcome(
        winners=winners,
        payments=payments,
        plans={"exit": np.where(plans.feasible, plans.exit, -1), "cut": np.where(plans.feasible, plans.cut, -1)},
        revenue=float(prices[winners].sum()),
        eip_payment=float(inst.rental_price * demand[winners].sum()),
        utilities=utilities,
        target=target,
        prices=prices,
        f2=f2,
        admitted=len(order),
        pool=np.isin(np.arange(inst.n_users), order),
        seconds=time.perf_counter() - start,
        unit_prices=unit,
    )

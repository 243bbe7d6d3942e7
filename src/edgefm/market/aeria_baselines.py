"""Baselines for the AERIA market: pricing rules on the same net bids, and placements.

Pricing (each on the admitted users' net bids b' = bid - edge cost, the same pool AERIA uses):
- ``omniscient``: the best single price knowing every bid, F^(1) = max_k k b'_(k) — an upper
  bound no truthful auction reaches in the worst case.
- ``rsop``: random sampling optimal price (Goldberg et al. 2006): split users in two at random,
  offer each half the optimal single price of the other half.
- ``posted``: a fixed service price announced in advance (the instance's ``posted_price``).
- ``kth_price``: a uniform (k+1)-th price auction with supply k = half the admitted users.
Placements: AERIA's auction with every plan forced to ``device_only``, ``edge_only`` or a
``fixed_cut`` half-way to the exit (``aeria.partition``).
Resource-weighted (``aeria_resource.py``), on the same users' net densities d'_i and demands
a_i: the omniscient unit price F^(1) = max_k d'_(k) A_k, RSOP on unit prices, and a posted unit
margin over the hour's rental price.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefm.market import aeria_resource
from edgefm.market.aeria import Instance, capacity_pool, partition, run_auction


def net_bids(inst: Instance, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(net bids of admitted users, their indices), as AERIA sees them."""
    plans = partition(inst)
    pool = capacity_pool(inst, plans, np.random.default_rng([seed, 1]))
    idx = np.flatnonzero(pool)
    return inst.bids[idx] - plans.cost[idx], idx


def best_single_price(net: np.ndarray) -> tuple[float, float]:
    """(price, revenue) of the best single price: the price is one of the bids."""
    return best_unit_price(net, np.ones(len(net)))


def omniscient(net: np.ndarray) -> dict[str, Any]:
    price, revenue = best_single_price(net)
    return {"revenue": revenue, "winners": int((net >= price).sum()) if revenue > 0 else 0}


def rsop(net: np.ndarray, rng: np.random.Generator, demand: np.ndarray | None = None) -> dict[str, Any]:
    """Split users in two at random, offer each half the best price of the other half (per unit
    of ``demand`` when given: the resource-weighted auction's densities)."""
    a = np.ones(len(net)) if demand is None else demand
    side = rng.random(len(net)) < 0.5
    revenue, winners = 0.0, 0
    for mine, other in ((side, ~side), (~side, side)):
        price, _ = best_unit_price(net[mine], a[mine])
        if price > 0:
            sold = net[other] >= price
            revenue += price * a[other][sold].sum()
            winners += int(sold.sum())
    return {"revenue": float(revenue), "winners": winners}


def posted(net: np.ndarray, price: float, demand: np.ndarray | None = None) -> dict[str, Any]:
    sold = net >= price
    units = sold.sum() if demand is None else demand[sold].sum()
    return {"revenue": float(price * units), "winners": int(sold.sum())}


def kth_price(net: np.ndarray, k: int | None = None) -> dict[str, Any]:
    b = np.sort(net)[::-1]
    k = max(1, len(b) // 2) if k is None else k
    if len(b) <= k:
        return {"revenue": 0.0, "winners": 0}
    price = max(float(b[k]), 0.0)
    winners = int((b[:k] > price).sum()) if price > 0 else 0
    return {"revenue": price * winners, "winners": winners}


def all_pricing(inst: Instance, seed: int) -> dict[str, dict[str, Any]]:
    net, _ = net_bids(inst, seed)
    out = {
        "omniscient": omniscient(net),
        "rsop": rsop(net, np.random.default_rng([seed, 2])),
        "posted": posted(net, inst.posted_price),
        "kth_price": kth_price(net),
    }
    for variant in ("threshold", "consensus"):
        o = run_auction(inst, seed, variant)
        out[f"aeria_{variant}"] = {"revenue": o.revenue, "winners": len(o.winners)}
    return out


def all_placements(inst: Instance, seed: int) -> dict[str, dict[str, Any]]:
    out = {}
    for placement in ("aeria", "device_only", "edge_only", "fixed_cut"):
        plans = partition(inst, placement)
        o = run_auction(inst, seed, placement=placement)
        out[placement] = {
            "revenue": o.revenue,
            "winners": len(o.winners),
            "feasible": int(plans.feasible.sum()),
            "eip_payment": o.eip_payment,
            "mean_latency_s": float(plans.latency[o.winners].mean()) if len(o.winners) else float("nan"),
        }
    return out


def best_unit_price(d: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """(unit price, revenue) of the best single unit price, for any order of the bids."""
    order = np.argsort(-d, kind="stable")
    d, a = np.maximum(d[order], 0.0), a[order]
    if len(d) == 0:
        return 0.0, 0.0
    rev = d * np.cumsum(a)
    k = int(np.argmax(rev))
    return float(d[k]), float(rev[k])


def resource_pricing(inst: Instance, seed: int, posted_margin: float) -> dict[str, dict[str, Any]]:
    """Resource-weighted AERIA (both variants) and its baselines on one market."""
    plans, order, d = aeria_resource.market(inst, seed)
    a = plans.demand[order]
    price, revenue = best_unit_price(d, a)
    out = {
        "omniscient": {"revenue": revenue, "winners": int(np.sum(d >= price)) if revenue > 0 else 0},
        "rsop": rsop(d, np.random.default_rng([seed, 2]), a),
        "posted": posted(d, posted_margin, a),
    }
    for variant in aeria_resource.VARIANTS:
        o = aeria_resource.run_resource_auction(inst, seed, variant)
        out[f"aeria_{variant}"] = {"revenue": o.revenue, "winners": len(o.winners)}
    return out

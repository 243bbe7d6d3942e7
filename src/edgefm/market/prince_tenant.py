"""A PRINCE tenant's side: the rounds its convergence bound needs, the expected round time, the
prices that induce a participation plan, and the plan it picks (see ``prince.py`` for the model
and ``docs/prince.md`` for the assumptions). numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from edgefm.market.prince_instance import Instance


def rounds(inst: Instance, m: int, members: np.ndarray, q: np.ndarray) -> float:
    """R_m: the convergence bound's rounds to eps_m over ``members`` playing ``q`` (inf: none)."""
    if not len(members):
        return math.inf
    p = inst.share[members, m]
    held = float(p.sum())
    if held <= 0 or held < inst.min_share[m] * (1 - 1e-12):  # below the coverage floor
        return math.inf
    # the statistical error of training on a share c of the tenant's data, rho / sqrt(c) of the
    # target gap, leaves the rest for optimisation (0 left: the target is out of reach)
    left = 1.0 - inst.coverage_error[m] / math.sqrt(min(held, 1.0))
    if left <= 0:
        return math.inf
    p = p / held
    var = np.sum(p**2 * inst.g2[members, m] / np.maximum(q, inst.q_min))
    return float((inst.alpha[m] * var + inst.beta[m]) / (inst.eps[m] * left))


def round_time(inst: Instance, m: int, members: np.ndarray, q: np.ndarray) -> float:
    """tau_m: E[slowest participant's device time] under independent participation, plus the
    edge time h_m per unit of expected load."""
    d = inst.seconds[members, m]
    order = np.argsort(d, kind="stable")
    d, qs = d[order], q[order]
    # P(member k is the slowest participant) = q_k * prod_{j > k} (1 - q_j)
    later = np.concatenate([np.cumprod((1 - qs)[::-1])[::-1][1:], [1.0]])
    return float(np.sum(d * qs * later) + inst.edge_seconds[m] * q.sum())


def inducing_prices(inst: Instance, m: int, members: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P_{m,n} that makes each member's best response exactly q_n when all play as planned."""
    s = q.sum()
    return inst.cost[members, m] + inst.theta[m] * (s - q) + (inst.gamma[members] + 2 * inst.theta[m]) * q


@dataclass
class Plan:
    members: np.ndarray
    q: np.ndarray
    time: float  # J_m the tenant's model predicts (inf: nothing fits the budget)
    log_kappa: float = 0.0


NO_PLAN = Plan(np.array([], int), np.array([]), math.inf)


def _allocation(inst, m, idx, w, lo, kappa, s_guess):
    """q for the members ``idx`` at multiplier kappa: the cubic FOC by Newton, then the floors."""
    th = inst.theta[m]
    c = inst.cost[idx, m] + 2 * th * s_guess
    b = 2 * (inst.gamma[idx] + th)
    target = kappa * w
    # q^2 c and b q^3 each bound f from below, so both roots bound the root from above and Newton
    # on the increasing convex f falls to it monotonically; the root lies within a factor 2^(1/3).
    with np.errstate(divide="ignore"):
        q = np.minimum(np.minimum(np.sqrt(target / c), np.cbrt(target / b)), 1.0)
    for _ in range(8):
        q = q - (q * q * (c + b * q) - target) / np.maximum(q * (2 * c + 3 * b * q), 1e-300)
    return np.clip(np.maximum(q, lo), 0.0, 1.0)


def at_cut(inst: Instance, m: int, idx: np.ndarray, floor: np.ndarray, guess: float) -> Plan:
    """The best q for members ``idx`` (at least ``floor``) within the budget, the largest kappa
    the budget allows searched from ``guess`` (log kappa) outwards."""
    w = inst.share[idx, m] ** 2 * inst.g2[idx, m]
    budget = inst.budget[m]
    seen: dict[float, tuple[np.ndarray, float, float]] = {}

    def evaluate(log_kappa: float):
        if log_kappa not in seen:
            seen[log_kappa] = _evaluate(log_kappa)
        return seen[log_kappa]

    def _evaluate(log_kappa: float):
        q = np.full(len(idx), 0.5)
        for _ in range(2):  # the congestion term depends on the tenant's own load
            q = _allocation(inst, m, idx, w, floor, math.exp(log_kappa), q.sum())
        r = rounds(inst, m, idx, q)
        return q, r, r * float(np.sum(inducing_prices(inst, m, idx, q) * q))

    lo, hi, width = guess - 1.0, guess + 1.0, 1.0
    while evaluate(lo)[2] > budget:  # widen the bracket until it straddles the budget
        if lo <= -LOG_KAPPA:
            return Plan(idx, floor, math.inf, guess)  # even the floors cost too much
        hi, width = lo, width * 4
        lo = max(lo - width, -LOG_KAPPA)
    while evaluate(hi)[2] <= budget:
        if hi >= LOG_KAPPA:
            break
        lo, width = hi, width * 4
        hi = min(hi + width, LOG_KAPPA)
    if evaluate(hi)[2] <= budget:
        k = hi
    else:  # the payment rises with kappa: the largest kappa the budget allows
        k = brentq(lambda x: math.log(evaluate(x)[2] / budget), lo, hi, xtol=1e-4)
        while evaluate(k)[2] > budget and k > lo:  # land on the feasible side
            k -= 1e-6 * (1 + abs(k))
    q, r, _ = evaluate(k)
    return Plan(idx, q, r * round_time(inst, m, idx, q), k)


LOG_KAPPA = 80.0
LOCAL_SEARCH_POOL = 512  # the local search runs for tenants with at most this many candidates


def plan(inst: Instance, m: int, alt: np.ndarray, margin: float = 1e-9, grid: int = 8, moves: int = 8) -> Plan:
    """Tenant m's best plan against devices whose best alternatives pay ``alt``.

    Members are the eligible devices no slower than a time cut; the cut is searched over the
    distinct round times, all of them when there are few, else coarse to fine (``grid`` evenly
    spaced, then ``grid`` between the best one's neighbours, twice). A device whose alternative
    pays more than q = 1 here would leave it is not bought: paying such devices a bonus above
    their q = 1 price set off bidding wars that did not settle (docs/prince.md). Then, for
    tenants with at most LOCAL_SEARCH_POOL candidates, a local search (:func:`_improve`) adds and
    drops single devices while J_m falls."""
    eligible = np.flatnonzero((inst.share[:, m] > 0) & (inst.g2[:, m] > 0))
    # the competition premium: the least q that beats the alternative by ``margin``
    lo = np.maximum(np.sqrt((alt[eligible] + margin) / (inst.theta[m] + inst.gamma[eligible] / 2)), inst.q_min)
    pool = lo <= 1
    if not pool.any():
        return NO_PLAN
    best = _search(inst, m, eligible[pool], lo[pool], grid)
    if pool.sum() > LOCAL_SEARCH_POOL:  # at thousands of devices one device moves J little
        return best
    return _improve(inst, m, best, eligible[pool], lo[pool], moves)


def _improve(inst: Instance, m: int, best: Plan, pool: np.ndarray, lo: np.ndarray, moves: int, k: int = 4) -> Plan:
    """Up to ``moves`` times, the best of a few single-device changes, kept while J_m falls:
    drop one of the ``k`` slowest members or the ``k`` that add the most variance once the shares
    renormalise (a small share with a large gradient), or add one of the ``k`` fastest or the
    ``k`` largest-share devices left out."""
    floor = dict(zip(pool.tolist(), lo.tolist(), strict=True))
    for _ in range(moves if math.isfinite(best.time) else 0):
        members = best.members
        d = inst.seconds[members, m]
        p = inst.share[members, m]
        w = p**2 * inst.g2[members, m] / np.maximum(best.q, inst.q_min)
        with np.errstate(divide="ignore", invalid="ignore"):
            after = (w.sum() - w) / (p.sum() - p) ** 2
        drops = set(np.argsort(-d)[:k].tolist()) | set(np.argsort(after)[:k].tolist()) if len(members) > 1 else set()
        out = np.setdiff1d(pool, members)
        adds = set(out[np.argsort(inst.seconds[out, m])[:k]].tolist())
        adds |= set(out[np.argsort(-inst.share[out, m])[:k]].tolist())
        trials = [np.delete(members, i) for i in sorted(drops)] + [np.append(members, n) for n in sorted(adds)]
        found = [at_cut(inst, m, t, np.array([floor[n] for n in t.tolist()]), best.log_kappa) for t in trials]
        step = min(found, key=lambda f: f.time, default=best)
        if step.time >= best.time * (1 - 1e-9):
            break
        best = step
    return best


def _search(inst: Instance, m: int, eligible: np.ndarray, lo: np.ndarray, grid: int) -> Plan:
    d = inst.seconds[eligible, m]
    cuts = np.unique(d)
    tried: dict[int, Plan] = {}
    guess = [0.0]

    def score(i: int) -> float:
        if i not in tried:
            keep = d <= cuts[i]
            tried[i] = at_cut(inst, m, eligible[keep], lo[keep], guess[0])
            if math.isfinite(tried[i].time):
                guess[0] = tried[i].log_kappa
        return tried[i].time

    coarse = len(cuts) > 4 * grid
    lo_i, hi_i = 0, len(cuts) - 1
    for _ in range(3 if coarse else 1):
        points = np.unique(np.linspace(lo_i, hi_i, min(grid, hi_i - lo_i + 1) if coarse else hi_i + 1).round())
        points = points.astype(int)
        best_i = min(points, key=score)
        k = int(np.searchsorted(points, best_i))
        lo_i, hi_i = int(points[max(k - 1, 0)]), int(points[min(k + 1, len(points) - 1)])
    return min(tried.values(), key=lambda p: p.time)


def post(inst: Instance, m: int, chosen: Plan) -> np.ndarray:
    """Tenant m's posted prices (a row over devices; 0 for those it does not recruit)."""
    row = np.zeros(inst.n_devices)
    if len(chosen.members):
        row[chosen.members] = inducing_prices(inst, m, chosen.members, chosen.q)
    return row

"""Large Model as a Service: Stackelberg pricing of rented models — IMP for the seller, RSR for customers.

Seed paper: Wu, Liu, Dong, Wang, "Large Model as a Service" pricing for intelligent (semantic)
communication (arXiv 2401.02675). Its equations are not available to us; this module implements
the model fixed in the project's issue and documented in ``docs/lmaas.md``:

* Models m = 1..M: semantic accuracy a_m, compression ratio rho_m (bits sent per source bit after
  semantic encoding), operating cost c_m per hour, amortised training cost K_m, and a rental
  price p_m per hour in [p_min_m, p_max_m] — the seller's decision (the Stackelberg leader).
* Customer i: data demand D_i per hour, distance d_i, nominal SNR s_i = s0 (d_i/d0)^-eta,
  realised SNR anywhere in [(1 - delta_i) s_i, s_i]; rate r = B log2(1 + SNR); energy price
  kappa_i, transmit power P, energy cap E_i; value weight alpha_i; horizon T; diminishing
  returns beta.
* Renting m for t hours: U_i(m, t) = alpha_i a_m ln(1 + beta t) - p_m t - kappa_i P rho_m D_i t / r,
  subject to P rho_m D_i t / r <= E_i for every realised SNR.

RSR (robust selecting and renting). The profit falls and the energy use rises as r falls, so
the worst case over the uncertainty interval is its lowest SNR, r_i^wc = B log2(1 + (1-delta_i)
s_i), for every model and duration at once. U is concave in t, so the robust optimal duration
is t* = alpha_i a_m / (p_m + e_im) - 1/beta clipped to [0, min(T, E_i r^wc / (P rho_m D_i))],
with e_im = kappa_i P rho_m D_i / r^wc; the customer takes the model of highest worst-case
profit, or none when no profit is positive (ties: the lower index). Exactly optimal for this
model; ``tests/market/test_lmaas.py`` checks it against brute force.

IMP (iterative model pricing). The seller improves one model's price at a time, predicting
every customer's RSR response: with the other prices fixed each customer's best alternative is
fixed, each customer takes the model exactly below a threshold price (closed form, Lambert W),
and the profit along that price is concave between thresholds; ``lmaas_line.py`` maximises it
exactly (or, with thousands of possible buyers, on refined grids). A new price is kept only if
profit rises by more than ``rtol`` of the operating profit; sweeps stop when none does. Profit
never decreases and, being bounded, the loop terminates. The seller starts from the top of
every price range and lowers prices — see :func:`imp` for why — and then tries escape moves
(:func:`_escape`) out of optima that no single price can leave.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgefm.market.lmaas_instance import CUSTOMER_FIELDS, MODEL_FIELDS, Instance, InstanceError
from edgefm.market.lmaas_line import Responses, search

# ----------------------------------------------------------------------------- physics


def nominal_snr(inst: Instance) -> np.ndarray:
    return inst.snr0 * (inst.distance / inst.d0) ** (-inst.path_loss)


def rate(inst: Instance, snr: np.ndarray) -> np.ndarray:
    """Shannon rate in Mbit/s."""
    return inst.bandwidth * np.log2(1.0 + snr)


def worst_rate(inst: Instance) -> np.ndarray:
    return rate(inst, (1.0 - inst.delta) * nominal_snr(inst))


def energy_terms(inst: Instance, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per customer x model: energy cost per hour e_im ($/h) and the energy-cap duration (h).

    Transmit seconds per hour = rho_m D_i / r_i (Mbit/h over Mbit/s); joules per hour = P times that.
    """
    with np.errstate(divide="ignore"):
        joules_per_hour = inst.power * np.outer(inst.demand / r, inst.rho)  # [N, M]
        cap_t = np.where(joules_per_hour > 0, inst.energy_cap[:, None] / joules_per_hour, np.inf)
    return inst.kappa[:, None] * joules_per_hour, cap_t


def profit(inst: Instance, prices: np.ndarray, t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """U_i(m, t) for every customer and model at rate ``r`` (t broadcast as [N, M])."""
    e, _ = energy_terms(inst, r)
    value = inst.alpha[:, None] * inst.accuracy[None, :] * np.log1p(inst.beta * t)
    # (p + e) t as one product: IMP's price lines compute it so, and must agree to the last bit,
    # since IMP prices leave some customers just short of indifferent
    return value - (prices[None, :] + e) * t


def optimal_durations(inst: Instance, prices: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Closed form: t* = alpha a / (p + e) - 1/beta, clipped to [0, min(T, energy-cap duration)]."""
    e, cap_t = energy_terms(inst, r)
    unit = prices[None, :] + e
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(unit > 0, inst.alpha[:, None] * inst.accuracy[None, :] / unit - 1.0 / inst.beta, inst.horizon)
    return np.clip(t, 0.0, np.minimum(inst.horizon, cap_t))


def _choose(u: np.ndarray) -> np.ndarray:
    """Index of the best positive column per row (lowest index on ties), -1 if none is positive."""
    best = np.argmax(u, axis=1)
    return np.where(u[np.arange(len(u)), best] > 0, best, -1)


def rsr(inst: Instance, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust selecting and renting: (choices in -1..M-1, durations, worst-case profits)."""
    prices = _check_prices(inst, prices)
    r = worst_rate(inst)
    t = optimal_durations(inst, prices, r)
    u = profit(inst, prices, t, r)
    choice = _choose(u)
    rows = np.arange(inst.n_customers)
    picked = choice >= 0
    durations = np.where(picked, t[rows, np.maximum(choice, 0)], 0.0)
    profits = np.where(picked, u[rows, np.maximum(choice, 0)], 0.0)
    return choice, durations, profits


def seller_profit(inst: Instance, prices: np.ndarray, choices=None, durations=None) -> float:
    """sum_i t_i (p_m_i - c_m_i) - sum_m K_m, customers answering with RSR unless given."""
    prices = _check_prices(inst, prices)
    if choices is None or durations is None:
        choices, durations, _ = rsr(inst, prices)
    picked = choices >= 0
    margin = (prices - inst.cost)[np.maximum(choices, 0)]
    return float(np.sum(np.where(picked, durations * margin, 0.0)) - inst.train_cost.sum())


def seller_profits(inst: Instance, price_rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """:func:`seller_profit` for many price vectors at once ([B, M] -> [B]), customers answering
    with RSR; the same arithmetic, so the same numbers (tests check it)."""
    price_rows = np.atleast_2d(np.asarray(price_rows, dtype=float))
    if price_rows.shape[1] != inst.n_models:
        raise InstanceError(f"prices: {price_rows.shape[1]} values a row; expected one per model ({inst.n_models})")
    r = worst_rate(inst)
    e, cap_t = energy_terms(inst, r)
    cap = np.minimum(inst.horizon, cap_t)
    w = inst.alpha[:, None] * inst.accuracy[None, :]
    out = np.empty(len(price_rows))
    step = max(1, chunk * 32 // max(inst.n_customers * inst.n_models, 1))
    for s in range(0, len(price_rows), step):
        p = price_rows[s : s + step, None, :]  # [b, 1, M]
        unit = p + e
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(unit > 0, w / unit - 1.0 / inst.beta, inst.horizon)
        t = np.clip(t, 0.0, cap)
        u = w * np.log1p(inst.beta * t) - unit * t
        best = np.argmax(u, axis=2)[..., None]
        ub = np.take_along_axis(u, best, 2)[..., 0]
        margin = np.take_along_axis(np.broadcast_to(p - inst.cost, u.shape), best, 2)[..., 0]
        gain = np.where(ub > 0, np.take_along_axis(t, best, 2)[..., 0] * margin, 0.0)
        out[s : s + step] = gain.sum(axis=1) - inst.train_cost.sum()
    return out


def _check_prices(inst: Instance, prices) -> np.ndarray:
    prices = np.asarray(prices, dtype=float).reshape(-1)
    if len(prices) != inst.n_models:
        raise InstanceError(f"prices: {len(prices)} values; expected one per model ({inst.n_models})")
    return prices


# ----------------------------------------------------------------------------- IMP


def _coordinate_ascent(
    inst: Instance, prices: np.ndarray, r: np.ndarray, opts: dict[str, Any], history: list, order=None
) -> tuple[np.ndarray, float]:
    """Best-response sweeps over the models' prices (in ``order``) until none gains."""
    e, cap, u_lo = opts["market"]
    t_all = optimal_durations(inst, prices, r)
    state = Responses(inst, prices, e, cap, t_all, profit(inst, prices, t_all, r), u_lo)
    current = seller_profit(inst, prices)
    first = history[-1]["sweep"] if history else 0
    order = list(range(inst.n_models)) if order is None else order
    for sweep in range(first + 1, first + opts["max_sweeps"] + 1):
        improved = False
        for m in order:
            lo, hi = inst.p_min[m], inst.p_max[m]
            if hi <= lo:
                continue
            ln = state.line(m)
            best_p, best_v = search(ln, lo, hi, opts["grid"]) if opts["line"] == "exact" else _grid(ln, lo, hi, opts)
            # keep a move only if it gains more than rtol of the operating profit (terminates)
            if best_v > current + opts["rtol"] * max(abs(current + inst.train_cost.sum()), 1e-12):
                state.move(m, best_p)
                current = float(best_v)  # the price line is the exact profit (tests check it)
                history.append({"sweep": sweep, "model": m, "price": float(best_p), "profit": current})
                improved = True
        if not improved:
            break
    return state.prices.copy(), current


def _grid(ln, lo: float, hi: float, opts: dict[str, Any]) -> tuple[float, float]:
    """IMP's line search before exact lines, kept as the baseline ``benchmarks/lmaas.py`` times
    against: a grid of the exact profit, then two finer grids around the best point."""
    xs = np.linspace(lo, hi, opts["grid"])
    vals = ln.exact(xs)
    k = int(np.argmax(vals))
    best_p, best_v = float(xs[k]), float(vals[k])
    for _ in range(2):
        xs = np.linspace(xs[max(k - 1, 0)], xs[min(k + 1, len(xs) - 1)], opts["grid"])
        vals = ln.exact(xs)
        k = int(np.argmax(vals))
        if vals[k] > best_v:
            best_p, best_v = float(xs[k]), float(vals[k])
    return best_p, best_v


def _escape(inst: Instance, prices: np.ndarray, value: float, r: np.ndarray, opts: dict[str, Any], history: list):
    """Leave a coordinate-wise optimum that is not a joint one. Sweeps stop where no single price
    can gain, yet a better point may need two to move at once (a premium model priced up while a
    cheap one comes down to keep its buyers). So each model's price in turn is set to each of
    ``levels`` points spread (geometrically) over its range while the other models re-optimise
    first; the best point reached is kept when it beats the optimum. On 200 random instances
    with unrelated model attributes it lifts the worst ratio to exhaustive search from 0.84 to
    above 0.99 (``benchmarks/results/lmaas.md``), at M x levels more coordinate ascents."""
    best_p, best_v = prices, value
    sweep = history[-1]["sweep"]
    for m in range(inst.n_models):
        lo, hi = inst.p_min[m], inst.p_max[m]
        if hi <= lo:
            continue
        levels = np.geomspace(lo, hi, opts["levels"]) if lo > 0 else np.linspace(lo, hi, opts["levels"])
        for level in levels:
            start = prices.copy()
            start[m] = level
            order = [(m + 1 + j) % inst.n_models for j in range(inst.n_models)]  # the others first
            p, v = _coordinate_ascent(inst, start, r, opts, [], order)
            if v > best_v + opts["rtol"] * max(abs(best_v + inst.train_cost.sum()), 1e-12):
                best_p, best_v = p, v
                history.append({"sweep": sweep + 1, "model": m, "price": float(p[m]), "profit": v,
                                "escape": True, "prices": p.tolist()})  # fmt: skip
    return best_p, best_v


ESCAPE_LIMIT = 20_000  # customers x models up to which IMP escapes coordinate-wise optima by default


def imp(
    inst: Instance,
    init: np.ndarray | None = None,
    rtol: float = 1e-6,
    grid: int = 32,
    max_sweeps: int = 100,
    starts: tuple[str, ...] = ("top",),
    escape: bool | None = None,
    levels: int = 6,
    line_search: str = "exact",
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Iterative model pricing. Returns (prices, history); history[k] = {sweep, model, price, profit}
    (escape moves also carry ``escape`` and every model's ``prices``).

    Without ``init`` the seller starts at the top of every price range and lowers prices one model
    at a time: started low, coordinate moves get stuck where raising one price alone only sends
    customers to a cheaper sibling (measured on 80 random instances: down to 81% of the optimum
    from 2x cost, >= 99.9% from the top). ``starts=("top", "uniform")`` also runs from the best
    uniform price and keeps the better run. With ``init`` (a warm start) it runs from there alone.
    Each price line is maximised exactly (``lmaas_line.py``; ``line_search="grid"`` is the
    earlier grid search). ``escape`` then tries the moves of :func:`_escape`: by default from
    a cold start on markets of at most ``ESCAPE_LIMIT`` customers x models (a warm start tracks a
    moving optimum cheaply). History is monotone non-decreasing.
    """
    if line_search not in ("exact", "grid"):
        raise InstanceError(f"line_search: {line_search!r}; expected 'exact' or 'grid'")
    if levels < 2:
        raise InstanceError(f"levels: {levels}; expected at least 2")
    opts = {"rtol": rtol, "grid": grid, "max_sweeps": max_sweeps, "levels": levels, "line": line_search}
    r = worst_rate(inst)
    # what no price changes, computed once for every ascent (the escape moves run many)
    e, cap_t = energy_terms(inst, r)
    low = profit(inst, inst.p_min, optimal_durations(inst, inst.p_min, r), r)
    opts["market"] = (e, np.minimum(inst.horizon, cap_t), low)
    if init is not None:
        inits = [_check_prices(inst, init)]
    else:
        table = {"top": lambda: inst.p_max.copy(), "uniform": lambda: _best_uniform(inst)}
        unknown = [x for x in starts if x not in table]
        if unknown or not starts:
            raise InstanceError(f"starts: {unknown or starts!r}; expected a non-empty subset of {sorted(table)}")
        inits = [table[x]() for x in starts]
    best_prices, best_profit, best_hist = None, -np.inf, []
    for start in inits:
        prices = np.clip(start, inst.p_min, inst.p_max)
        history = [{"sweep": 0, "model": None, "price": None, "profit": seller_profit(inst, prices)}]
        prices, value = _coordinate_ascent(inst, prices, r, opts, history)
        if value > best_profit:
            best_prices, best_profit, best_hist = prices, value, history
    if escape if escape is not None else init is None and inst.n_customers * inst.n_models <= ESCAPE_LIMIT:
        best_prices, best_profit = _escape(inst, best_prices, best_profit, r, opts, best_hist)
    return best_prices, best_hist


def _best_uniform(inst: Instance, points: int = 24) -> np.ndarray:
    """The best single price for every model (clipped into each range) on a grid."""
    best, best_v = inst.p_max.copy(), -np.inf
    for q in np.linspace(inst.p_min.min(), inst.p_max.max(), points):
        p = np.clip(np.full(inst.n_models, q), inst.p_min, inst.p_max)
        v = seller_profit(inst, p)
        if v > best_v:
            best, best_v = p, v
    return best


def solve(inst: Instance, **imp_kwargs: Any) -> dict[str, Any]:
    """IMP prices and every customer's RSR response, as the JSON result the CLI writes."""
    start = time.perf_counter()
    prices, history = imp(inst, **imp_kwargs)
    choices, durations, profits = rsr(inst, prices)
    return {
        "prices": prices.tolist(),
        "choices": choices.tolist(),
        "durations": durations.tolist(),
        "worst_case_profits": profits.tolist(),
        "seller_profit": seller_profit(inst, prices, choices, durations),
        "iterations": len(history) - 1,
        "sweeps": max(h["sweep"] for h in history),
        "history": history,
        "solve_seconds": time.perf_counter() - start,
    }


def generate(n_customers: int, n_models: int, rng: np.random.Generator, delta: float | None = None) -> Instance:
    """A random instance: better models are more accurate, compress better and cost more to run."""
    if n_customers < 0 or n_models < 1:
        raise InstanceError(f"generate: {n_customers} customers, {n_models} models; expected >= 0 and >= 1")
    q = np.sort(rng.uniform(0, 1, n_models))  # model quality
    cost = 0.5 + 2.5 * q * rng.uniform(0.8, 1.2, n_models)
    return Instance(
        accuracy=0.6 + 0.35 * q,
        rho=0.5 - 0.4 * q * rng.uniform(0.8, 1.0, n_models),
        cost=cost,
        train_cost=rng.uniform(0, 20, n_models),
        p_min=cost,
        p_max=cost * 8,
        demand=rng.uniform(1_000, 20_000, n_customers),  # Mbit per hour of source data
        distance=rng.uniform(20, 200, n_customers),
        delta=rng.uniform(0, 0.5, n_customers) if delta is None else np.full(n_customers, delta),
        kappa=rng.uniform(0.001, 0.01, n_customers),
        energy_cap=rng.uniform(500, 5_000, n_customers),
        alpha=rng.uniform(5, 50, n_customers),
    )


def generate_unrelated(n_customers: int, n_models: int, rng: np.random.Generator, span: float = 100.0) -> Instance:
    """A harder random instance: model attributes drawn independently (a cheap model may be the
    most accurate), customers spread over orders of magnitude, prices anywhere in [cost, span x
    cost]. Coordinate-wise IMP stalls on some of these (``benchmarks/results/lmaas.md``)."""
    if n_customers < 0 or n_models < 1 or span < 1:
        raise InstanceError(f"generate: {n_customers} customers, {n_models} models, span {span}; "
                            "expected >= 0, >= 1 and >= 1")  # fmt: skip
    cost = rng.uniform(0.1, 3, n_models)
    return Instance(
        accuracy=rng.uniform(0.3, 1, n_models),
        rho=rng.uniform(0.05, 0.9, n_models),
        cost=cost,
        train_cost=rng.uniform(0, 20, n_models),
        p_min=cost,
        p_max=cost * span,
        demand=rng.uniform(100, 50_000, n_customers),
        distance=rng.uniform(10, 400, n_customers),
        delta=rng.uniform(0, 0.9, n_customers),
        kappa=10 ** rng.uniform(-4, -1, n_customers),
        energy_cap=10 ** rng.uniform(1, 4, n_customers),
        alpha=10 ** rng.uniform(0, 3, n_customers),
        horizon=float(rng.uniform(1, 48)),
        beta=float(10 ** rng.uniform(-1, 1)),
    )


def generate_spread(
    n_customers: int, n_models: int, rng: np.random.Generator, delta: float | None = None, tail: float = 1.5
) -> Instance:
    """A market that can separate pricing rules (issue 21, item 4): models spread wide and
    customers' values heavy-tailed.

    Model quality q is sorted uniform; accuracy runs 0.3 -> 0.98 and the operating cost over two
    decades (0.1 -> 10 $/h, +-30%) as q rises, prices in [cost, 20 cost]. Customers' value weights
    alpha are Pareto with tail index ``tail`` (1.5: finite mean, infinite variance; a few
    customers value the service 100x the median), their data demand log-normal. In
    :func:`generate` costs sit within 6x of each other and values within 10x, so one price for
    every model is within 5% of the optimum there (``benchmarks/results/lmaas.md``)."""
    if n_customers < 0 or n_models < 1 or tail <= 1:
        raise InstanceError(
            f"generate_spread: {n_customers} customers, {n_models} models, tail {tail}; "
            "expected >= 0, >= 1 and > 1 (a finite mean)"
        )
    q = np.sort(rng.uniform(0, 1, n_models))
    cost = 0.1 * 100.0**q * rng.uniform(0.7, 1.3, n_models)
    return Instance(
        accuracy=0.3 + 0.68 * q,
        rho=0.9 - 0.8 * q * rng.uniform(0.8, 1.0, n_models),
        cost=cost,
        train_cost=rng.uniform(0, 20, n_models),
        p_min=cost,
        p_max=cost * 20,
        demand=np.exp(rng.normal(np.log(5_000), 1.0, n_customers)),
        distance=rng.uniform(20, 200, n_customers),
        delta=rng.uniform(0, 0.5, n_customers) if delta is None else np.full(n_customers, delta),
        kappa=10 ** rng.uniform(-3, -2, n_customers),
        energy_cap=10 ** rng.uniform(2.5, 4, n_customers),
        alpha=5.0 * (1.0 + rng.pareto(tail, n_customers)),  # Lomax + 1: Pareto with minimum 5
    )


def as_json_dict(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: as_json_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_json_dict(v) for v in obj]
    return obj


__all__ = [
    "CUSTOMER_FIELDS",
    "MODEL_FIELDS",
    "Instance",
    "InstanceError",
    "generate",
    "generate_spread",
    "generate_unrelated",
    "imp",
    "rsr",
    "seller_profit",
    "seller_profits",
    "solve",
]

"""Baselines and dynamics for the LMaaS market (``lmaas.py``): what RSR and IMP are compared with.

Customers: *nominal* (trusts the nominal SNR: picks model and duration as if no uncertainty),
*cheapest* and *most accurate* model (robust duration for that model), *random* model. A plan is
judged by its **realised worst-case profit**: at the lowest SNR in the uncertainty set, where a
customer who rented longer than its energy cap allows pays for the whole rental but can only
transmit until the cap is reached.

Seller: *exhaustive* joint grid search (the optimum up to the grid, small M only), *uniform*
(one price for every model, searched), *best markup* (one markup over every model's cost,
searched), *cost-plus* (p = (1 + markup) c), *random* prices.

Dynamics: a multi-period market where customers leave, arrive and drift; IMP re-prices each
period warm-started from the last prices.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from edgefm.market.lmaas import (
    CUSTOMER_FIELDS,
    Instance,
    energy_terms,
    generate,
    imp,
    nominal_snr,
    optimal_durations,
    profit,
    rate,
    rsr,
    seller_profit,
    seller_profits,
    worst_rate,
)


def realised_worst_profit(inst: Instance, prices: np.ndarray, choices: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Each customer's profit at its worst-case SNR when it follows (choice, duration)."""
    r = worst_rate(inst)
    e, cap_t = energy_terms(inst, r)
    rows = np.arange(inst.n_customers)
    m = np.maximum(choices, 0)
    used = np.minimum(durations, cap_t[rows, m])  # transmission stops when the energy cap is hit
    value = inst.alpha * inst.accuracy[m] * np.log1p(inst.beta * used)
    paid = prices[m] * durations + e[rows, m] * used
    return np.where(choices >= 0, value - paid, 0.0)


def nominal_choice(inst: Instance, prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-robust customer: optimises as if the SNR were exactly nominal."""
    r = rate(inst, nominal_snr(inst))
    t = optimal_durations(inst, prices, r)
    u = profit(inst, prices, t, r)
    best = np.argmax(u, axis=1)
    rows = np.arange(inst.n_customers)
    choice = np.where(u[rows, best] > 0, best, -1)
    return choice, np.where(choice >= 0, t[rows, best], 0.0)


def fixed_model_choice(inst: Instance, prices: np.ndarray, model: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each customer rents ``model[i]`` for its robust optimal duration if that profits, else nothing."""
    r = worst_rate(inst)
    t = optimal_durations(inst, prices, r)
    u = profit(inst, prices, t, r)
    rows = np.arange(inst.n_customers)
    choice = np.where(u[rows, model] > 0, model, -1)
    return choice, np.where(choice >= 0, t[rows, model], 0.0)


def customer_baselines(inst: Instance, prices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Realised worst-case profit per customer under RSR and every customer baseline."""
    n, m = inst.n_customers, inst.n_models
    plans = {
        "rsr": rsr(inst, prices)[:2],
        "nominal": nominal_choice(inst, prices),
        "cheapest": fixed_model_choice(inst, prices, np.full(n, int(np.argmin(prices)))),
        "most_accurate": fixed_model_choice(inst, prices, np.full(n, int(np.argmax(inst.accuracy)))),
        "random": fixed_model_choice(inst, prices, rng.integers(0, m, n)),
    }
    return {k: realised_worst_profit(inst, prices, c, t) for k, (c, t) in plans.items()}


# ----------------------------------------------------------------------------- seller baselines


def exhaustive(inst: Instance, points: int = 40) -> tuple[np.ndarray, float]:
    """Joint grid search over every model's price range (points^M evaluations, vectorised): small M only."""
    if inst.n_models > 4:
        raise ValueError(f"exhaustive search over {inst.n_models} models is too large; expected M <= 4")
    grids = [np.linspace(lo, hi, points) for lo, hi in zip(inst.p_min, inst.p_max, strict=True)]
    combos = np.array(np.meshgrid(*grids, indexing="ij")).reshape(inst.n_models, -1).T  # lexicographic
    values = seller_profits(inst, combos)
    k = int(np.argmax(values))  # the first best, as a loop over itertools.product would keep
    return combos[k], float(values[k])


def uniform_price(inst: Instance, points: int = 200) -> tuple[np.ndarray, float]:
    """One price for every model (clipped into each model's range), the best of a grid."""
    rows = np.clip(np.linspace(inst.p_min.min(), inst.p_max.max(), points)[:, None], inst.p_min, inst.p_max)
    values = seller_profits(inst, rows)
    k = int(np.argmax(values))
    return rows[k], float(values[k])


def best_markup(inst: Instance, points: int = 200) -> tuple[np.ndarray, float]:
    """One markup for every model, p = k c (clipped into each range), the best k of a geometric
    grid: a uniform rule that, unlike :func:`uniform_price`, follows models' costs."""
    top = float(np.max(inst.p_max / np.maximum(inst.cost, 1e-12)))
    ks = np.geomspace(1.0, max(top, 1.0 + 1e-9), points)
    rows = np.clip(ks[:, None] * inst.cost[None, :], inst.p_min, inst.p_max)
    values = seller_profits(inst, rows)
    k = int(np.argmax(values))
    return rows[k], float(values[k])


def cost_plus(inst: Instance, markup: float = 0.5) -> tuple[np.ndarray, float]:
    p = np.clip(inst.cost * (1 + markup), inst.p_min, inst.p_max)
    return p, seller_profit(inst, p)


def random_prices(inst: Instance, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    p = rng.uniform(inst.p_min, inst.p_max)
    return p, seller_profit(inst, p)


# ----------------------------------------------------------------------------- dynamics


def simulate_dynamic(
    inst: Instance,
    periods: int,
    rng: np.random.Generator,
    leave: float = 0.1,
    arrive: float = 0.1,
    drift: float = 0.05,
    warm: bool = True,
) -> list[dict[str, Any]]:
    """Each period some customers leave, new ones arrive and the rest drift (distance, demand);
    IMP re-prices, warm-started from the last period's prices when ``warm``."""
    prices, out = None, []
    for period in range(periods):
        if period > 0:
            n = inst.n_customers
            stay = rng.random(n) >= leave
            cols = {k: getattr(inst, k)[stay] for k in CUSTOMER_FIELDS}
            cols["distance"] = np.clip(cols["distance"] * rng.uniform(1 - drift, 1 + drift, stay.sum()), 1.0, None)
            cols["demand"] = cols["demand"] * rng.uniform(1 - drift, 1 + drift, stay.sum())
            new = generate(rng.binomial(max(n, 1), arrive), inst.n_models, rng)
            cols = {k: np.concatenate([cols[k], getattr(new, k)]) for k in CUSTOMER_FIELDS}
            inst = replace(inst, **cols)
        start = time.perf_counter()
        prices, history = imp(inst, init=prices if warm else None)
        choices, _, _ = rsr(inst, prices)
        out.append(
            {
                "period": period,
                "customers": inst.n_customers,
                "prices": prices.tolist(),
                "seller_profit": seller_profit(inst, prices),
                "iterations": len(history) - 1,
                "renting": int((choices >= 0).sum()),
                "seconds": time.perf_counter() - start,
            }
        )
    return out

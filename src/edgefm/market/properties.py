"""Black-box checks of mechanism guarantees, run by tests and benchmarks on random instances.

Each takes a mechanism as a function ``(instance, seed) -> Outcome``, changes one thing (one
user's bid) keeping the seed, reruns it, and counts violations: incentive compatibility (no
user raises value - payment by misreporting), individual rationality (truthful users never pay
more than their value) and envy-freeness (no user prefers another winner's service price).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Mechanism = Callable[[Any, int], Any]  # (instance, seed) -> outcome with .utilities, .payments, .winners


def ic_violations(
    mechanism: Mechanism, inst, seed: int, rng: np.random.Generator, deviations: int, tol: float = 1e-9
) -> tuple[int, list[dict[str, Any]]]:
    """Random unilateral misreports: returns (violations, examples)."""
    truthful = mechanism(inst, seed)
    values = inst.true_values()
    bad, examples = 0, []
    for _ in range(deviations):
        i = int(rng.integers(inst.n_users))
        factor = float(rng.choice([rng.uniform(0, 1), rng.uniform(1, 3)]))
        bids = inst.bids.copy()
        bids[i] = values[i] * factor
        out = mechanism(inst.with_bids(bids), seed)
        won = i in set(out.winners.tolist())
        gain = (values[i] - out.payments[i] if won else 0.0) - truthful.utilities[i]
        if gain > tol * max(1.0, abs(values[i])):
            bad += 1
            if len(examples) < 5:
                examples.append({"user": i, "report": float(bids[i]), "value": float(values[i]), "gain": float(gain)})
    return bad, examples


def ir_violations(outcome, inst, tol: float = 1e-9) -> int:
    """Truthful winners paying more than their value."""
    values = inst.true_values()
    w = outcome.winners
    return int((outcome.payments[w] > values[w] + tol * np.maximum(1.0, values[w])).sum())


def envy_violations(
    outcome,
    inst,
    costs: np.ndarray,
    among: np.ndarray | None = None,
    tol: float = 1e-9,
    demand: np.ndarray | None = None,
) -> int:
    """Users (all, or the mask ``among``) who would rather have the cheapest service price any
    winner got (keeping their own edge cost): value - cost - min winner price > own utility.
    With ``demand`` (resource-weighted auctions) prices compare per unit of demand: the
    cheapest unit price any winner paid, times the user's own demand."""
    if len(outcome.winners) == 0:
        return 0
    values = inst.true_values()
    w = outcome.winners
    per = np.ones(inst.n_users) if demand is None else np.asarray(demand, dtype=float)
    cheapest = float(np.min((outcome.payments[w] - costs[w]) / per[w]))
    with np.errstate(invalid="ignore"):
        envy = values - costs - cheapest * per - outcome.utilities
    who = np.isfinite(costs) if among is None else np.isfinite(costs) & among
    return int(np.sum(who & (envy > tol * np.maximum(1.0, values))))

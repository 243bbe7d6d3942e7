"""Pure aggregation functions on dicts of tensors, and update validation.

Weighted mean (FedAvg, McMahan et al. 2017), coverage-normalised mean (each coordinate
averaged only over the clients that trained it — RaFFM/HeteroFL-style partial updates),
coordinate-wise median and trimmed mean (Yin et al. 2018), and Krum (Blanchard et al. 2017).
No torch state, no I/O: easy to test with known answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from edgefm.fl.ledger import nbytes as nbytes  # defined with the ledger; imported from here too

Tensors = dict[str, torch.Tensor]


# An update whose values exceed the global state's own largest magnitude this many times over
# is no training step: weights do not grow a thousandfold in a round (a scaled or poisoned
# update). Relative to the state, so models of any scale pass; 1 floors it for zero tensors.
MAX_GROWTH = 1e3


def validate_update(payload: Tensors, reference: Tensors) -> str | None:
    """None if ``payload`` is a mapping with exactly the reference's keys, each a tensor of the
    reference's shape, dtype and device with finite values no larger than ``MAX_GROWTH`` times
    the reference's largest magnitude; otherwise a one-line reason."""
    if not isinstance(payload, Mapping):
        return f"payload: a {type(payload).__name__}; expected a mapping of tensor names to tensors"
    missing = sorted(set(reference) - set(payload))
    extra = sorted(set(payload) - set(reference), key=str)
    if missing or extra:
        return f"wrong keys (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, ref in reference.items():
        value = payload[key]
        if not isinstance(value, torch.Tensor):
            return f"{key}: not a tensor ({type(value).__name__})"
        if tuple(value.shape) != tuple(ref.shape):
            return f"{key}: shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if value.dtype != ref.dtype:
            return f"{key}: dtype {value.dtype}, expected {ref.dtype}"
        if value.device != ref.device:
            return f"{key}: on {value.device}, expected {ref.device}"
        if value.is_floating_point() and value.numel():
            if not bool(torch.isfinite(value).all()):
                return f"{key}: non-finite values (NaN or inf)"
            bound = MAX_GROWTH * max(1.0, float(ref.abs().max()))
            if float(value.abs().max()) > bound:
                return f"{key}: values up to {float(value.abs().max()):.3g}, over {bound:.3g} ({MAX_GROWTH:g} x the global state's)"
    return None


def validate_count(num_examples: object, cap: int) -> str | None:
    """None if ``num_examples`` is an integer in [1, cap] (a NaN, huge or fractional count
    would let one client dominate or poison a sample-weighted mean)."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        return f"num_examples={num_examples!r}; expected an integer count"
    if not 1 <= int(num_examples) <= cap:
        return f"num_examples={num_examples}; expected a count in [1, {cap}]"
    return None


def _check(updates: Sequence[Tensors], weights: Sequence[float]) -> None:
    if not updates:
        raise ValueError("no updates to aggregate")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights {list(weights)}: expected non-negative with a positive sum")


def weighted_mean(updates: Sequence[Tensors], weights: Sequence[float]) -> Tensors:
    """sum_k w_k x_k / sum_k w_k, per key (computed in float64, returned in the input dtype)."""
    _check(updates, weights)
    total = float(sum(weights))
    out = {}
    for key in updates[0]:
        acc = sum(float(w) * u[key].double() for u, w in zip(updates, weights, strict=True))
        out[key] = (acc / total).to(updates[0][key].dtype)
    return out


def coverage_mean(
    updates: Sequence[Tensors], masks: Sequence[Tensors], weights: Sequence[float], previous: Tensors
) -> Tensors:
    """Each coordinate averaged over the clients whose mask covers it, weighted; coordinates
    no client covered keep ``previous``."""
    _check(updates, weights)
    out = {}
    for key, prev in previous.items():
        num = torch.zeros_like(prev, dtype=torch.float64)
        den = torch.zeros_like(prev, dtype=torch.float64)
        for u, m, w in zip(updates, masks, weights, strict=True):
            if key in u:
                mk = m[key].double()
                num += float(w) * mk * u[key].double()
                den += float(w) * mk
        covered = den > 0
        merged = prev.double().clone()
        merged[covered] = num[covered] / den[covered]
        out[key] = merged.to(prev.dtype)
    return out


def median(updates: Sequence[Tensors]) -> Tensors:
    """Coordinate-wise median (the lower middle value for an even count, as torch.median)."""
    _check(updates, [1.0] * len(updates))
    return {k: torch.stack([u[k] for u in updates]).median(dim=0).values for k in updates[0]}


def trimmed_mean(updates: Sequence[Tensors], trim: float) -> Tensors:
    """Coordinate-wise mean after dropping the ``trim`` fraction largest and smallest values."""
    _check(updates, [1.0] * len(updates))
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim={trim}: expected 0 <= trim < 0.5")
    n = len(updates)
    cut = int(trim * n)
    out = {}
    for key in updates[0]:
        stacked = torch.stack([u[key] for u in updates]).sort(dim=0).values
        out[key] = stacked[cut : n - cut].mean(dim=0)
    return out


def pairwise_sq_distances(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Exact squared Euclidean distances: float64 sums of squared differences (``torch.cdist``
    goes through a matrix product and loses the small differences of near-identical updates)."""
    n = len(vectors)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = (vectors[i].double() - vectors[j].double()).pow(2).sum()
    return out


def krum(updates: Sequence[Tensors], byzantine: int) -> tuple[Tensors, int]:
    """Krum: the update with the smallest sum of squared distances to its n - f - 2 nearest
    neighbours. Returns (that update, its index)."""
    n = len(updates)
    if n - byzantine - 2 < 1:
        raise ValueError(f"krum needs n - f - 2 >= 1; got n={n}, f={byzantine}")
    dist = pairwise_sq_distances([torch.cat([u[k].double().flatten() for k in sorted(u)]) for u in updates])
    m = n - byzantine - 2
    scores = torch.stack([dist[i][torch.arange(n) != i].sort().values[:m].sum() for i in range(n)])
    best = int(scores.argmin())
    return {k: v.clone() for k, v in updates[best].items()}, best

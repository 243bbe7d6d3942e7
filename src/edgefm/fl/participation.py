"""Independent participation and bias-resilient aggregation (PRINCE, arXiv 2503.04971).

Each enrolled device n takes part in a round with its own probability q_n, independently of the
other devices and of other rounds (seeded by the run seed, the round and the device). With p_n
its data share (sum p_n = 1), the full-participation aggregate is x* = sum_n p_n x_n.

- ``unbiased``: the Horvitz-Thompson estimator (Horvitz & Thompson, 1952) on the updates'
  deltas from the global model g: g + sum_{n in S} (p_n / q_n) (x_n - g). Its expectation over
  who comes is x*, whatever the q_n; its variance grows as q_n shrinks, so q_n is clamped to at
  least ``MIN_Q``.
- ``naive``: the p-weighted mean of whoever came, renormalised. Biased toward frequent
  participants whenever q_n correlates with what a device's data teaches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Tensors = dict[str, torch.Tensor]
MIN_Q = 0.05


def clamp(q: Sequence[float]) -> np.ndarray:
    return np.clip(np.asarray(q, dtype=float), MIN_Q, 1.0)


def participants(seed: int, rnd: int, q: Sequence[float]) -> np.ndarray:
    """Which devices take part in round ``rnd``: an independent Bernoulli(q_n) draw per device."""
    rng = np.random.default_rng([seed, rnd, 7919])
    return rng.random(len(q)) < clamp(q)


def unbiased(global_: Tensors, updates: Sequence[Tensors], p: Sequence[float], q: Sequence[float]) -> Tensors:
    """g + sum_i (p_i / q_i) (x_i - g) over the devices that came (``updates``, with their p, q)."""
    w = np.asarray(p, dtype=float) / clamp(q)
    out = {}
    for k, g in global_.items():
        delta = sum((float(wi) * (u[k].double() - g.double()) for wi, u in zip(w, updates, strict=True)), start=0.0)
        out[k] = (g.double() + delta).to(g.dtype)
    return out


def naive(global_: Tensors, updates: Sequence[Tensors], p: Sequence[float]) -> Tensors:
    """The p-weighted mean of the updates that came (the global model if none came)."""
    if not updates:
        return dict(global_)
    w = np.asarray(p, dtype=float)
    w = w / w.sum()
    return {
        k: sum(float(wi) * u[k].double() for wi, u in zip(w, updates, strict=True)).to(g.dtype)
        for k, g in global_.items()
    }

"""Byzantine-robust aggregation of any method's payloads (``aggregation.rule``).

A method merges a group of updates that train the same tensors (FedAvg's models, FedMS's
experts and gates, FedJETS's shared layers and experts, split learning's device models, RaFFM's
subnetworks placed in the full tensors). With ``aggregation.rule=mean`` it keeps its own
sample-weighted mean; any other rule replaces that mean with :func:`combine`:

- ``median``: the coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, ICML 2018), the
  lower middle value for an even count, as ``torch.nanmedian``; unweighted, as in the paper.
- ``trimmed``: the coordinate-wise trimmed mean (Yin et al. 2018): of the c values a coordinate
  has, the floor(trim c) largest and as many smallest are dropped; unweighted.
- ``krum``: Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017): each update is
  scored by the sum of squared distances to its n - f - 2 nearest neighbours and the n - f best
  are averaged (sample-weighted). Distances are exact float64 sums over every coordinate
  (``torch.cdist`` computes them through a matrix product that loses the small differences of
  near-identical updates). With too few updates for f (n - f - 2 < 1), f is lowered to n - 3
  (none dropped below 3 updates) and the round's metrics say which f was used.
- ``clip``: norm bounding (Sun, Kairouz, Suresh, McMahan, "Can you really backdoor federated
  learning?", 2019): each update's change from the global state is scaled down to at most
  ``clip`` times the round's median change norm (a relative bound: no scale to tune per model),
  then the sample-weighted mean.

Heterogeneous payloads come with masks (the coordinates each client trained): a coordinate no
mask covers is missing for the median and the trimmed mean, and counts as no change (the global
value) in Krum's distances and the clipping norm; coordinates nobody covers keep the global
value. Everything is computed in float64 and returned in the global state's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgefm.fl.aggregate import Tensors, pairwise_sq_distances

RULES = ("mean", "median", "trimmed", "krum", "clip")


def _stack(updates: Sequence[Tensors], masks: Sequence[Tensors] | None, previous: Tensors, key: str):
    """(values [n, ...] float64, covered [n, ...] bool) of one tensor over the updates."""
    prev = previous[key].double()
    values, covered = [], []
    for i, u in enumerate(updates):
        if key in u:
            values.append(u[key].double())
            covered.append(masks[i][key].bool() if masks is not None else torch.ones_like(prev, dtype=torch.bool))
        else:
            values.append(prev)
            covered.append(torch.zeros_like(prev, dtype=torch.bool))
    return torch.stack(values), torch.stack(covered)


def _mean(x: torch.Tensor, m: torch.Tensor, w: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """The weighted mean over covering clients; uncovered coordinates keep ``prev``."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    wm = m.double() * w.view(shape)
    den = wm.sum(0)
    out = (wm * x).sum(0) / den.clamp_min(1e-300)
    return torch.where(den > 0, out, prev)


def _median(x: torch.Tensor, m: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    med = torch.where(m, x, torch.nan).nanmedian(dim=0).values
    return torch.where(m.any(0), med, prev)


def _trimmed(x: torch.Tensor, m: torch.Tensor, prev: torch.Tensor, trim: float) -> torch.Tensor:
    ordered = torch.where(m, x, torch.inf).sort(dim=0).values  # uncovered values sort last
    count = m.sum(0)
    cut = torch.floor(trim * count.double()).long()
    rank = torch.arange(x.shape[0]).view((-1,) + (1,) * (x.dim() - 1))
    keep = (rank >= cut) & (rank < count - cut)
    kept = keep.sum(0)
    out = torch.where(keep, ordered, 0.0).sum(0) / kept.clamp_min(1)
    return torch.where(kept > 0, out, prev)


def krum_scores(vectors: Sequence[torch.Tensor], byzantine: int) -> torch.Tensor:
    """Each vector's sum of squared distances to its n - f - 2 nearest others."""
    n = len(vectors)
    dist = pairwise_sq_distances(vectors)
    m = n - byzantine - 2
    if m < 1:
        raise ValueError(f"krum needs n - f - 2 >= 1; got n={n}, f={byzantine}")
    return torch.stack([dist[i][torch.arange(n) != i].sort().values[:m].sum() for i in range(n)])


def combine(
    updates: Sequence[Tensors],
    weights: Sequence[float],
    previous: Tensors,
    rule: str,
    masks: Sequence[Tensors] | None = None,
    trim: float = 0.2,
    byzantine: int = 1,
    clip: float = 2.0,
) -> tuple[Tensors, dict[str, float]]:
    """The updates merged by ``rule`` into the keys of ``previous`` (the global values the
    clients started from, placed at full size), and what the rule did (for the round's metrics)."""
    if rule not in RULES:
        raise ValueError(f"aggregation rule {rule!r}: expected one of {', '.join(RULES)}")
    if not updates:
        raise ValueError("no updates to aggregate")
    n = len(updates)
    w = torch.as_tensor([float(x) for x in weights], dtype=torch.float64)
    stacks = {k: _stack(updates, masks, previous, k) for k in previous}
    info: dict[str, float] = {}
    if rule in ("krum", "clip"):
        deltas = {k: torch.where(m, x - previous[k].double(), 0.0) for k, (x, m) in stacks.items()}
        flat = [torch.cat([d[i].flatten() for d in deltas.values()]) for i in range(n)]
        if rule == "clip":
            norms = torch.stack([v.norm() for v in flat])
            bound = clip * norms.median()
            scale = torch.where(norms > bound, bound / norms.clamp_min(1e-300), 1.0)
            info = {"clipped": float((norms > bound).sum()), "median_norm": float(norms.median())}
            shape = lambda x: scale.view((-1,) + (1,) * (x.dim() - 1))  # noqa: E731
            stacks = {k: (previous[k].double() + shape(d) * d, stacks[k][1]) for k, d in deltas.items()}
        else:
            f = max(0, min(byzantine, n - 3))
            keep = torch.arange(n)
            if f > 0:
                keep = krum_scores(flat, f).argsort()[: n - f].sort().values
            info = {"krum_f": float(f), "krum_kept": float(len(keep))}
            stacks = {k: (x[keep], m[keep]) for k, (x, m) in stacks.items()}
            w = w[keep]
    out = {}
    for k, (x, m) in stacks.items():
        prev = previous[k].double()
        if rule == "median":
            merged = _median(x, m, prev)
        elif rule == "trimmed":
            merged = _trimmed(x, m, prev, trim)
        else:
            merged = _mean(x, m, w, prev)
        out[k] = merged.to(previous[k].dtype)
    return out, info

"""Byzantine clients, simulated (``attack.*``): what the robust rules of ``fl/robust.py`` face.

A fixed set of clients (``attack.fraction`` of the population, drawn once from the run seed)
is malicious for the whole run. Their updates are corrupted as a hostile device would send
them, after honest training, relative to the state they were given (the Strategy's
``expected_update``: the tensors a valid upload replaces), so the attack works on every
method's payload, heterogeneous ones included:

- ``sign_flip``: the change reversed and amplified, g - s (x - g) (Fang et al., USENIX Security
  2020 use reversed directions; s = ``attack.strength``);
- ``scale``: the change amplified, g + s (x - g) (a boosting attacker, Bhagoji et al., ICML 2019);
- ``noise``: the change replaced by Gaussian noise with s times its own root-mean-square per
  tensor (Blanchard et al. 2017's Gaussian Byzantine workers, made scale-free);
- ``label_flip``: honest training on poisoned data: every label y of a malicious client's
  training split becomes C - 1 - y (Tolpegin et al., ESORICS 2020); classification only.

Corrupted updates still pass validation (finite, right keys, shapes and dtypes, within 1000x
the state's magnitude): what stops them is the aggregation rule. The engine applies the attack
to the update it receives, the same way on both engines, and marks the client's ledger row.
"""

from __future__ import annotations

import numpy as np
import torch

from edgefm.fl.aggregate import Tensors
from edgefm.fl.strategy import seed_for

KINDS = ("none", "sign_flip", "scale", "noise", "label_flip")


def malicious(seed: int, clients: int, fraction: float) -> set[int]:
    """The round(fraction x clients) malicious client ids (fixed for the run)."""
    k = int(round(fraction * clients))
    if k == 0:
        return set()
    rng = np.random.default_rng(seed_for(seed, 4242))
    return {int(i) for i in rng.choice(clients, size=k, replace=False)}


def corrupt(payload: Tensors, reference: Tensors, kind: str, strength: float, seed: int) -> Tensors:
    """A malicious client's upload made from its honest ``payload`` (``label_flip`` and ``none``
    leave it as trained). ``reference``: what each tensor was before training."""
    if kind in ("none", "label_flip"):
        return payload
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, x in payload.items():
        if not x.is_floating_point():
            out[k] = x
            continue
        g = reference[k].to(x.dtype)
        delta = x.double() - g.double()
        if kind == "sign_flip":
            bad = -strength * delta
        elif kind == "scale":
            bad = strength * delta
        elif kind == "noise":
            rms = delta.pow(2).mean().sqrt() if delta.numel() else torch.tensor(0.0, dtype=torch.float64)
            bad = torch.randn(delta.shape, generator=gen, dtype=torch.float64) * strength * rms
        else:
            raise ValueError(f"attack.kind {kind!r}: expected one of {', '.join(KINDS)}")
        out[k] = (g.double() + bad).to(x.dtype)
    return out


def flip_labels(labels: np.ndarray, classes: int) -> np.ndarray:
    """y -> C - 1 - y."""
    return (classes - 1 - np.asarray(labels)).astype(labels.dtype)

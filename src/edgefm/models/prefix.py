"""Compute only what changes: a client's per-example outputs of frozen modules, kept on the device.

With Sparsely Activated LoRA (FedMS) only the top m of L blocks carry a trained adapter; the
blocks below the lowest active one run the bare frozen backbone. Their output for an example
never changes, provided they run without dropout: **frozen passes run in eval mode** (dropout
off) whether or not the cache holds them, so a run computes the same numbers with the cache on
or off (up to float rounding: an example may be computed in a batch of another width). The
same holds for other frozen passes a method makes per example (FedMS stage 2: the bare
backbone's pooled feature that the gate reads, the frozen global expert's probabilities).

A :class:`PrefixCache` holds one client's outputs of one frozen computation (``key`` names it,
and must change whenever what it computes changes: another cut, another global expert); it is
filled batch by batch the first time each example is seen and reused across local epochs and
rounds. The device must hold it: when the projected size exceeds the client's budget (its
memory after the model's own training memory), nothing is kept and every batch recomputes. The
ledger is charged what was actually computed: the trained step's FLOPs every batch, the frozen
pass's FLOPs only for the examples computed (``flops``), and the memory held (``nbytes``).

It lives in the process that trains the client (the strategy's, per Flower node process), so
a client served by another process recomputes once there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.config import TrainConfig
from edgefm.data.encode import Batch, Encoded
from edgefm.models.flops import FlopModel
from edgefm.models.split import Split, split

# What a frozen computation returns for a batch: per-token tensors [B, W, ...] (kept unpadded,
# each example's first ``length`` positions) and per-example rows [B, ...].
Frozen = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@contextmanager
def frozen_mode(model: nn.Module):
    """Eval mode (no dropout), no autograd; the model's training flag restored after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


class PrefixCache:
    """One client's outputs of one frozen computation, per example of its training data."""

    def __init__(self, key: tuple, size: int, budget_bytes: float, enabled: bool = True):
        self.key, self.size, self.budget = key, size, float(budget_bytes)
        self.enabled = enabled
        self.tokens: dict[str, list[torch.Tensor | None]] = {}
        self.rows: dict[str, list[torch.Tensor | None]] = {}
        self.have = torch.zeros(size, dtype=torch.bool)
        self.nbytes = 0
        self.flops = 0.0  # frozen-pass FLOPs computed since the last take_flops()

    def take_flops(self) -> float:
        out, self.flops = self.flops, 0.0
        return out

    def lookup(
        self,
        model: nn.Module,
        batch: Batch,
        compute: Callable[[torch.Tensor, torch.Tensor], Frozen],
        flops: FlopModel,
        positions: int,
    ) -> Frozen:
        """The frozen outputs for ``batch`` (per-token ones padded to its width with zeros),
        computing (in :func:`frozen_mode`, charged to ``flops``) only the examples not held.
        ``positions``: the token positions of all the client's examples (what per-token
        outputs will hold: the projected size is checked against the budget once, at the
        first batch)."""
        if batch.index is None:
            raise ValueError("a prefix cache needs batches that carry their example index")
        index = torch.as_tensor(batch.index, dtype=torch.long)
        missing = (~self.have[index]).nonzero().flatten() if self.enabled else torch.arange(len(index))
        width = batch.input_ids.shape[1]
        if len(missing):
            with frozen_mode(model):
                tokens, rows = compute(batch.input_ids[missing], batch.attention_mask[missing])
            self.flops += flops.batch(len(missing), width)
            if self.enabled and not self.have.any():  # the first batch: can the device hold it all?
                self.enabled = self._projected(tokens, rows, positions) <= self.budget
            if not self.enabled:
                return tokens, rows
            self._store(index[missing], tokens, rows, batch.attention_mask[missing])
        return self._assemble(index, width)

    # -- internals ------------------------------------------------------------------------
    def _projected(self, tokens: dict, rows: dict, positions: int) -> int:
        per_token = sum(t[0, 0].numel() * t.element_size() for t in tokens.values())
        per_row = sum(r[0].numel() * r.element_size() for r in rows.values())
        return per_token * positions + per_row * self.size

    def _store(self, index: torch.Tensor, tokens: dict, rows: dict, mask: torch.Tensor) -> None:
        for name, t in tokens.items():
            # text: each example's own positions (the rest is padding); images, audio: all of them
            lengths = mask.sum(1).tolist() if mask.shape[1] == t.shape[1] else [t.shape[1]] * len(t)
            slot = self.tokens.setdefault(name, [None] * self.size)
            for j, i in enumerate(index.tolist()):
                slot[i] = t[j, : lengths[j]].clone()
                self.nbytes += slot[i].numel() * slot[i].element_size()
        for name, r in rows.items():
            slot = self.rows.setdefault(name, [None] * self.size)
            for j, i in enumerate(index.tolist()):
                slot[i] = r[j].clone()
                self.nbytes += slot[i].numel() * slot[i].element_size()
        self.have[index] = True

    def _assemble(self, index: torch.Tensor, width: int) -> Frozen:
        tokens = {}
        for name, slot in self.tokens.items():
            first = slot[int(index[0])]
            out = first.new_zeros((len(index), width, *first.shape[1:]))
            for j, i in enumerate(index.tolist()):
                out[j, : len(slot[i])] = slot[i]
            tokens[name] = out
        rows = {name: torch.stack([slot[i] for i in index.tolist()]) for name, slot in self.rows.items()}
        return tokens, rows


class PrefixCaches:
    """A strategy's caches, one per client: a new ``key`` replaces that client's old cache (so
    a device holds one at a time). All of them live in the simulating process, which holds at
    most ``train.prefix_cache_mb`` in all: a client whose cache would not fit beside the others
    recomputes, as a device without the memory would."""

    def __init__(self) -> None:
        self.by_client: dict[int, PrefixCache] = {}

    def for_client(
        self, client: int, key: tuple, model: nn.Module, data: Encoded, train: TrainConfig, memory: float
    ) -> PrefixCache:
        """``client``'s cache of ``key`` over ``data`` (a new one when the key changed), with
        the device's ``memory`` less ``model``'s training footprint as its budget; its FLOP
        count starts at zero."""
        cache = self.by_client.get(client)
        if cache is None or cache.key != key or cache.size != len(data):
            self.by_client.pop(client, None)
            budget = memory - training_bytes(model, train.batch_size, int(data.lengths.max(initial=1)))
            room = train.prefix_cache_mb * 2**20 - sum(c.nbytes for c in self.by_client.values())
            budget = min(budget, room)
            cache = self.by_client[client] = PrefixCache(key, len(data), budget, train.prefix_cache)
        cache.flops = 0.0
        return cache


def cut_below(model: nn.Module, k: int) -> Split | None:
    """``model`` cut below block ``k`` (None: nothing below it, or a model that cannot be cut)."""
    if k < 1:
        return None
    try:
        return split(model, k)
    except EdgefmError:
        return None


def positions(data: Encoded, parts: Split) -> int:
    """Token positions of all of ``data``'s examples at the cut (fixed for images and audio)."""
    return parts.positions * len(data) if parts.positions else int(data.lengths.sum())


def flop_models(workbench, key: str, compute: Callable, step: Callable) -> tuple[FlopModel, FlopModel]:
    """(the frozen pass's FLOPs, the trained step's FLOPs without it) per example: the second is
    the whole step, frozen pass included, less the first (both exact quadratics in the length:
    ``models/flops.py``). Cached on the workbench under ``key``."""

    def frozen(ids, mask):
        with torch.no_grad():
            return compute(ids, mask)

    def whole(ids, mask):
        step(frozen(ids, mask), Batch(ids, mask, torch.zeros(len(ids), dtype=torch.long, device=ids.device))).backward()

    flops_compute = workbench.flop_model(train=False, key=key + "-frozen", step=frozen)
    return flops_compute, workbench.flop_model(train=True, key=key + "-whole", step=whole) - flops_compute


def digest(state: dict[str, torch.Tensor]) -> str:
    """A fingerprint of tensors (what a cache key names a frozen model by)."""
    h = hashlib.sha1()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def training_bytes(model: nn.Module, batch: int, length: int) -> float:
    """A rough training footprint of ``model``: float32 weights, gradients and AdamW moments of
    the trainable ones, and ~24 hidden-sized activations per token per block of one batch (what
    a BERT block keeps for its backward pass). The cache gets the device's memory beyond it."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = getattr(getattr(model, "encoder", None), "config", None)
    hidden = getattr(config, "hidden_size", 0)
    blocks = getattr(config, "num_hidden_layers", 0)
    return 4.0 * (total + 3 * trainable) + 4.0 * 24 * batch * length * hidden * blocks

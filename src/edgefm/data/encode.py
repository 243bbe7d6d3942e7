"""Tokenize once, batch many times: unpadded token ids per example, padded per batch.

Padding each batch only to its own longest example (not to ``max_length``) makes short-text
training several times faster on CPU; the FLOP model (``models/flops.py``) charges each batch
for exactly the length it ran at, so the ledger stays exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L] long token ids, or [B, F] float features (mask [B, 1])
    attention_mask: torch.Tensor  # [B, L] long
    labels: torch.Tensor  # [B] long
    # each row's position in the Encoded it came from (what a per-example cache is keyed by)
    index: np.ndarray | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.index)


@dataclass
class Encoded:
    ids: list[np.ndarray]  # token ids of each example, truncated, unpadded (or float features)
    labels: np.ndarray  # [N] int
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | np.ndarray) -> Encoded:
        index = np.asarray(index, dtype=int)
        return Encoded([self.ids[i] for i in index], self.labels[index], self.pad_id)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=int)

    def collate(self, index: Sequence[int] | np.ndarray) -> Batch:
        index = np.asarray(index, dtype=int)
        rows = [self.ids[i] for i in index]
        labels = torch.as_tensor(self.labels[index], dtype=torch.long)
        if rows[0].dtype.kind == "f":  # fixed-size features (images, audio: data/media.py)
            feats = torch.from_numpy(np.stack(rows).astype(np.float32))
            return Batch(feats, torch.ones(len(rows), 1, dtype=torch.long), labels, index)
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = r
            mask[k, : len(r)] = 1
        return Batch(torch.from_numpy(ids), torch.from_numpy(mask), labels, index)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = False
    ) -> Iterator[Batch]:
        """Batches in order, or shuffled by ``generator`` (deterministic for a seeded one).

        Unshuffled (evaluation) batches are taken in length order, which cuts padding and so
        time without changing any per-example prediction.
        """
        for index in self.batch_indices(batch_size, generator, shuffle):
            yield self.collate(index)

    def batch_indices(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = False
    ) -> Iterator[np.ndarray]:
        """The rows of each of :meth:`batches`, without collating them (a split-learning device
        that keeps no state between messages replays its round's order this way)."""
        n = len(self)
        order = torch.randperm(n, generator=generator).numpy() if shuffle else np.argsort(self.lengths, kind="stable")
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def encode(texts: Sequence[str], labels: Sequence[int], tokenizer, max_length: int) -> Encoded:
    """Token ids (with special tokens, truncated to ``max_length``) for every text."""
    out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    ids = [np.asarray(x, dtype=np.int32) for x in out["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(ids, np.asarray(labels, dtype=np.int64), pad)

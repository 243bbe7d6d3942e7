"""Clients' private state in the in-process engine: in memory up to a budget, on disk beyond it.

A client that keeps state between rounds (a local-only model, FedMS's local expert and gate, a
personalised head) owns it on its device; a simulation of 1,000 clients must not hold 1,000 of
them in one process's memory. :class:`PrivateStore` keeps states in memory until they total
``private_memory_mb`` and writes the rest to a temporary folder, one safetensors file per client
(a device's own storage), read back when that client trains or is evaluated. Values are exact
either way: a state read from disk equals the one written, tensor for tensor.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

Tensors = dict[str, torch.Tensor]


def _nbytes(state: Tensors) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


class PrivateStore(MutableMapping):
    """client id -> private state; the first states to arrive stay in memory while they fit
    ``memory_bytes``, the others live on disk (``on_disk`` of them)."""

    def __init__(self, memory_bytes: float, initial: dict[int, Tensors] | None = None):
        self.budget = float(memory_bytes)
        self._memory: dict[int, Tensors] = {}
        self._disk: dict[int, Path] = {}
        self._held = 0
        self._folder: tempfile.TemporaryDirectory | None = None  # removed with the store
        for cid, state in (initial or {}).items():
            self[cid] = state

    @property
    def held_bytes(self) -> int:
        """Bytes of private state in memory."""
        return self._held

    @property
    def on_disk(self) -> int:
        return len(self._disk)

    def __setitem__(self, cid: int, state: Tensors) -> None:
        size = _nbytes(state)
        old = self._memory.pop(cid, None)
        if old is not None:
            self._held -= _nbytes(old)
        if cid not in self._disk and self._held + size <= self.budget:
            self._memory[cid] = state
            self._held += size
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="edgefm-private-")
        path = Path(self._folder.name) / f"{int(cid)}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
        self._disk[cid] = path

    def __getitem__(self, cid: int) -> Tensors:
        if cid in self._memory:
            return self._memory[cid]
        if cid in self._disk:
            return load_file(str(self._disk[cid]))
        raise KeyError(cid)

    def __delitem__(self, cid: int) -> None:
        if cid in self._memory:
            self._held -= _nbytes(self._memory.pop(cid))
        elif cid in self._disk:
            self._disk.pop(cid).unlink(missing_ok=True)
        else:
            raise KeyError(cid)

    def __iter__(self) -> Iterator[int]:
        yield from self._memory
        yield from self._disk

    def __len__(self) -> int:
        return len(self._memory) + len(self._disk)

    def __contains__(self, cid: object) -> bool:
        return cid in self._memory or cid in self._disk

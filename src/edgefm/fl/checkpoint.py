"""Save and resume a run exactly: after every round the global state, every client's private
state, the ledger and the round history go to ``RUN_DIR/checkpoint.pt`` (atomically).

Everything else a run needs (data partitions, devices, per-client seeds) is rebuilt from the
saved ``config.yaml`` and derived from the seed, so a resumed run repeats the uninterrupted
one bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from edgefm import EdgefmError

FILENAME = "checkpoint.pt"


def save(run_dir: Path, payload: dict[str, Any]) -> None:
    path = Path(run_dir) / FILENAME
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def load(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise EdgefmError(
            f"--resume {str(run_dir)!r}: no {FILENAME} in it; expected a run folder written by edgefm train"
        )
    return torch.load(path, weights_only=False)

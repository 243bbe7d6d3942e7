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


def load(run_dir: Path, flag: str = "--resume") -> dict[str, Any]:
    """The last saved round of a run folder; ``flag`` names the option that gave the folder."""
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        raise EdgefmError(
            f"{_named(flag, run_dir)}: no {FILENAME} in it; expected a run folder written by edgefm train"
        )
    return torch.load(path, weights_only=False)


def run_config(run_dir: Path, flag: str = ""):
    """The saved ``config.yaml`` of a run folder, as a RunConfig; a folder without one is a one-line error."""
    from edgefm import config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise EdgefmError(
            f"{_named(flag, run_dir)}: no config.yaml in it; expected a run folder written by edgefm train"
        )
    return config.load(path)


def _named(flag: str, run_dir: Path) -> str:
    return f"{flag} {str(run_dir)!r}" if flag else repr(str(run_dir))

"""Save and resume a run exactly, from files that hold data and never code.

After every round ``RUN_DIR/checkpoint.safetensors`` is replaced atomically. Its tensors are the
global state (``state::KEY``) and every client's private state (``private::CLIENT::KEY``); its
metadata holds, as JSON, the round, the ledger and which clients keep private state elsewhere
(on Flower nodes). safetensors reads tensors without unpickling anything, so a crafted run
folder cannot run code; a pickled ``checkpoint.pt`` from an older edgefm is refused, not loaded.

Everything else a run needs (data partitions, devices, per-client seeds) is rebuilt from the
saved ``config.yaml`` and derived from the seed, so a resumed run repeats the uninterrupted
one bit for bit.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from edgefm import EdgefmError, config

if TYPE_CHECKING:  # torch is imported where tensors are saved or loaded: a launcher reads metadata only
    import torch

FILENAME = "checkpoint.safetensors"
LEGACY = "checkpoint.pt"
FORMAT = 1
Tensors = dict[str, "torch.Tensor"]


@dataclass
class Checkpoint:
    round: int
    state: Tensors
    ledger: dict[str, Any]
    private: dict[int, Tensors] = field(default_factory=dict)
    private_on_nodes: list[int] = field(default_factory=list)  # clients whose private state stayed on their node


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None, so that it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def save(run_dir: Path, ckpt: Checkpoint) -> None:
    from safetensors.torch import save_file

    tensors = {f"state::{k}": v for k, v in ckpt.state.items()}
    for cid, private in ckpt.private.items():
        tensors.update({f"private::{int(cid)}::{k}": v for k, v in private.items()})
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "round": ckpt.round,
        "ledger": ckpt.ledger,
        "clients_with_private": sorted(int(c) for c in ckpt.private),
        "private_on_nodes": sorted(ckpt.private_on_nodes),
    }
    path = Path(run_dir) / FILENAME
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"edgefm": json.dumps(jsonable(meta), allow_nan=False)})
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def _path(run_dir: Path, flag: str) -> Path:
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        if (Path(run_dir) / LEGACY).is_file():
            raise EdgefmError(
                f"{_named(flag, run_dir)}: holds a pickled {LEGACY}, which edgefm no longer loads (unpickling a "
                f"file can run code); expected a {FILENAME} written by this version of edgefm train"
            )
        raise EdgefmError(
            f"{_named(flag, run_dir)}: no {FILENAME} in it; expected a run folder written by edgefm train"
        )
    return path


def _invalid(flag: str, run_dir: Path, exc: Exception) -> EdgefmError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return EdgefmError(f"{_named(flag, run_dir)}: {FILENAME} is not a valid edgefm checkpoint ({reason})")


def _meta(f) -> dict[str, Any]:
    meta = json.loads((f.metadata() or {})["edgefm"])
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def meta(run_dir: Path, flag: str = "--resume") -> Checkpoint:
    """The last saved round of a run folder without its tensors (``state`` and ``private`` hold
    no tensors; ``private`` names the clients that keep private state): what a launcher needs,
    read without importing torch."""
    path = _path(run_dir, flag)
    try:
        with safe_open(str(path), framework="numpy") as f:
            m = _meta(f)
        private = {int(c): {} for c in m["clients_with_private"]}
        return Checkpoint(int(m["round"]), {}, m["ledger"], private, list(m["private_on_nodes"]))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise _invalid(flag, run_dir, exc) from None


def load(run_dir: Path, flag: str = "--resume") -> Checkpoint:
    """The last saved round of a run folder; ``flag`` names the option that gave the folder."""
    path = _path(run_dir, flag)
    try:
        with safe_open(str(path), framework="pt") as f:
            m = _meta(f)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        state = {k[len("state::") :]: v for k, v in tensors.items() if k.startswith("state::")}
        private: dict[int, Tensors] = {int(c): {} for c in m["clients_with_private"]}
        for key, v in tensors.items():
            if key.startswith("private::"):
                _, cid, name = key.split("::", 2)
                private[int(cid)][name] = v
        return Checkpoint(int(m["round"]), state, m["ledger"], private, list(m["private_on_nodes"]))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise _invalid(flag, run_dir, exc) from None


def check_resumable(saved: Checkpoint) -> None:
    """A checkpoint Flower can resume: none whose clients keep private state, which lives in
    the in-process engine's checkpoint or on the nodes of a run that is gone."""
    if saved.private or saved.private_on_nodes:
        where = "the in-process engine" if saved.private else "Flower nodes of the interrupted run, now gone"
        raise EdgefmError(
            f"this checkpoint's clients keep private state ({where}); resume it with engine=inprocess "
            "if it was trained in-process, else it cannot be resumed"
        )


def rewrite_files(run_dir: Path, ledger: dict[str, Any]) -> None:
    """A resumed run's ``metrics.jsonl``, ``clients.jsonl`` and ``evals.jsonl`` as the checkpoint's
    ledger (its saved state) has them: rounds after the checkpoint (a crash mid-round) are
    dropped, then re-run."""
    rounds, clients = ledger["rounds"], ledger["clients"]
    with open(Path(run_dir) / "metrics.jsonl", "w") as fh:
        for summary in rounds:
            fh.write(json.dumps(jsonable(summary)) + "\n")
    with open(Path(run_dir) / "clients.jsonl", "w") as fh:
        for row in clients:
            fh.write(json.dumps(jsonable(row)) + "\n")
    evals = Path(run_dir) / "evals.jsonl"
    if evals.is_file():  # evaluations of rounds the checkpoint does not hold are redone
        last = rounds[-1]["round"] if rounds else 0
        kept = [line for line in evals.read_text().splitlines() if line and json.loads(line)["round"] <= last]
        evals.write_text("".join(line + "\n" for line in kept))


def run_config(run_dir: Path, flag: str = "") -> config.RunConfig:
    """The saved ``config.yaml`` of a run folder, as a RunConfig; a folder without one is a one-line error."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise EdgefmError(
            f"{_named(flag, run_dir)}: no config.yaml in it; expected a run folder written by edgefm train"
        )
    return config.load(path)


def exists(run_dir: Path) -> bool:
    """Whether a run folder already holds a checkpoint (of this or an older edgefm)."""
    return (Path(run_dir) / FILENAME).exists() or (Path(run_dir) / LEGACY).exists()


def _named(flag: str, run_dir: Path) -> str:
    return f"{flag} {str(run_dir)!r}" if flag else repr(str(run_dir))

"""What a launcher needs to know of a run, without holding its scenario: the :class:`Outline`.

A built scenario holds the model, the tokenizer and every client's encoded data, and building it
imports torch, transformers, peft and datasets: about 380 MB of memory no other process shares
(``benchmarks/results/flower_engine.md``, "the floor of this layout"). The in-process engine
trains in that process, so it pays this once. With ``engine=flower`` the ServerApp and every
client actor build the scenario themselves, and the launcher only follows the run folder; a
launcher that built it too would hold those 380 MB for the whole run for nothing.

So for a Flower run :func:`preflight` builds the scenario in a child process (``python -m
edgefm.fl.outline``), which does every check the in-process engine does before anything is
written (a bad data path, an unknown model: the same one-line error) and answers with the
outline, the few figures the launcher prints and the run's summary records (parameter counts,
devices, each client's label mix, GPUs); then the child ends and its memory with it. The launcher
never imports torch while the run goes (``tests/test_flower.py`` checks it). This module imports
only the standard library and ``edgefm.config`` at the top.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from edgefm import EdgefmError, config

FAILED = 2  # the child's exit status for a one-line error (what the CLI exits with too)


@dataclass
class Outline:
    """A built scenario's figures that outlive it (``report.html.finish_run`` writes them into
    ``summary.json``; the CLI prints them before training)."""

    dataset: str  # the data bundle's name
    clients: int  # how many clients the run trains (after the method's ``population``)
    parameters: dict[str, int]  # {"total": ..., "trainable": ...}
    devices: list[dict[str, Any]]  # each client's device profile (``DeviceProfile.to_dict``)
    label_mix: dict[str, Any] | None = None  # classification: each client's training examples per label
    gpus: int = 0  # CUDA devices the run may use (``device`` not ``cpu``)

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Outline:
        return cls(**json.loads(text))


def outline(scenario) -> Outline:
    """The outline of a built scenario (``fl.scenario.Scenario``)."""
    import numpy as np
    import torch

    sc = scenario
    mix = None
    if sc.cfg.task == "classify":
        k = len(sc.bundle.label_names)
        per_client = [np.bincount(np.asarray(c.train.labels, dtype=int), minlength=k)[:k].tolist() for c in sc.clients]
        mix = {"labels": list(sc.bundle.label_names), "clients": per_client}
    gpus = torch.cuda.device_count() if sc.cfg.device != "cpu" else 0
    counts = sc.parameter_counts()
    return Outline(
        dataset=sc.bundle.name,
        clients=len(sc.clients),
        parameters={"total": int(counts["total"]), "trainable": int(counts["trainable"])},
        devices=[d.to_dict() for d in sc.devices],
        label_mix=mix,
        gpus=int(gpus),
    )


def preflight(cfg: config.RunConfig) -> Outline:
    """Build ``cfg``'s scenario in a child process and return its outline; its failure is this
    one-line error. The child runs where the caller runs, so relative paths resolve alike."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgefm.fl.outline"], input=config.dump(cfg), capture_output=True, text=True
    )
    if proc.returncode == 0:
        return Outline.from_json(proc.stdout.strip().splitlines()[-1])
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    if proc.returncode == FAILED and lines:
        raise EdgefmError(lines[-1])
    raise EdgefmError(f"building the run failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")


def main() -> int:
    """The child: a resolved config on stdin, the outline as one JSON line on stdout."""
    from edgefm.fl.scenario import build

    try:
        cfg = config.loads(sys.stdin.read())
        print(outline(build(cfg)).to_json(), flush=True)
    except EdgefmError as exc:
        print(str(exc).splitlines()[0] if str(exc) else "error", file=sys.stderr)
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())

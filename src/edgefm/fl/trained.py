"""A finished (or interrupted) run, reopened: the one path by which ``robust``, ``export`` and
``experts`` reach the models a run ended with.

The run folder's ``config.yaml`` rebuilds the scenario (data, partitions, the workbench and the
Strategy, from the registry); ``checkpoint.safetensors`` gives the global state and each
client's private state. Every model is then asked of the Strategy (``model_for``, ``export``,
``expert_breakdown``), so no caller knows which method trained the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefm import EdgefmError
from edgefm.config import RunConfig
from edgefm.fl import checkpoint
from edgefm.fl.scenario import Scenario, build
from edgefm.fl.strategy import Tensors
from edgefm.models.flops import count_flops
from edgefm.models.workbench import accuracy


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: RunConfig
    scenario: Scenario
    ckpt: checkpoint.Checkpoint

    def models(self, clients: list[int] | None = None) -> list[tuple[str, Tensors | None]]:
        """(name, private state) of the models the run ended with: each client's own where the
        checkpoint keeps clients' private state (``clientK``), else the global model (``global``).
        ``clients`` picks some clients' models."""
        private = self.ckpt.private
        if not private and self.ckpt.private_on_nodes:
            raise EdgefmError(
                f"{str(self.run_dir)!r}: its clients' own models stayed on the Flower nodes that trained them; "
                "expected a run whose checkpoint holds them (engine=inprocess)"
            )
        if clients:
            if not private:
                raise EdgefmError(f"--client {clients[0]}: this run ended with one global model and no per-client ones")
            missing = [c for c in clients if c not in private]
            if missing:
                raise EdgefmError(
                    f"--client {missing[0]}: no such client in this run; expected one of {sorted(private)}"
                )
            return [(f"client{c}", private[c]) for c in clients]
        if private:
            return [(f"client{c}", p) for c, p in sorted(private.items())]
        return [("global", None)]


def open_run(run_dir: Path, flag: str = "") -> TrainedRun:
    """Rebuild a run folder's scenario and load its last checkpoint (one-line errors otherwise)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgefmError(f"{flag + ' ' if flag else ''}{str(run_dir)!r} is not a folder; expected a run folder")
    cfg = checkpoint.run_config(run_dir, flag)
    ckpt = checkpoint.load(run_dir, flag)
    scenario = build(cfg)
    scenario.strategy.initial_state(scenario.workbench)  # prepares the workbench as training did
    return TrainedRun(run_dir, cfg, scenario, ckpt)


def export(
    run: TrainedRun, budgets: list[str], clients: list[int] | None = None, reorder: bool = False
) -> dict[str, Any]:
    """Each model the run ended with, cut to each budget by its Strategy (``full``: as trained;
    ``reorder``: salience order first), with its test accuracy, size and inference FLOPs per
    example at ``data.max_length`` tokens."""
    sc = run.scenario
    wb, strategy, seq_len = sc.workbench, sc.strategy, run.cfg.data.max_length
    rows = []
    for name, private in run.models(clients):
        for budget in budgets:
            module, info = strategy.export(wb, run.ckpt.state, private, budget, reorder)
            params = sum(p.numel() for p in module.parameters())
            rows.append(
                {
                    "model": name,
                    "budget": budget,
                    **info,
                    "params": params,
                    "size_mb": params * 4 / 1e6,  # fp32 weights
                    "flops_per_example": count_flops(module, seq_len, train=False),
                    "accuracy": accuracy(module, sc.test, wb.device),
                }
            )
    return {
        "run": str(run.run_dir),
        "algorithm": run.cfg.algorithm.name,
        "dataset": sc.bundle.name,
        "round": run.ckpt.round,
        "seq_len": seq_len,
        "models": rows,
    }


def expert_breakdown(run: TrainedRun) -> dict[str, Any]:
    """The Strategy's per-client breakdown of a mixture of experts, from the checkpoint."""
    if not run.ckpt.private and run.ckpt.private_on_nodes:
        raise EdgefmError(
            f"{str(run.run_dir)!r}: the clients' experts stayed on the Flower nodes; expected an in-process run"
        )
    sc = run.scenario
    out = sc.strategy.expert_breakdown(run.ckpt.state, sc.workbench, sc.clients, run.ckpt.private)
    return {"run": str(run.run_dir), "round": run.ckpt.round, **out}

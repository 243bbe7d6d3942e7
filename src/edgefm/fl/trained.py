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


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: RunConfig
    scenario: Scenario
    ckpt: checkpoint.Checkpoint

    def models(self, clients: list[int] | None = None) -> list[tuple[str, Tensors | None, int | None]]:
        """(name, private state, client) of the models the run ended with: each client's own
        where the checkpoint keeps clients' private state (``clientK``), else the global model
        (``global``). ``clients`` picks the models of some clients (without private state: the
        global model of each one's architecture)."""
        private = self.ckpt.private
        if not private and self.ckpt.private_on_nodes:
            raise EdgefmError(
                f"{str(self.run_dir)!r}: its clients' own models stayed on the Flower nodes that trained them; "
                "expected a run whose checkpoint holds them (engine=inprocess)"
            )
        n = len(self.scenario.clients)
        if clients:
            bad = [c for c in clients if not 0 <= c < n]
            if bad:
                raise EdgefmError(f"--client {bad[0]}: no such client in this run; expected 0 to {n - 1}")
            return [(f"client{c}", private.get(c), c) for c in clients]
        if private:
            return [(f"client{c}", p, c) for c, p in sorted(private.items())]
        return [("global", None, None)]


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
    run: TrainedRun,
    budgets: list[str],
    clients: list[int] | None = None,
    reorder: str = "",
    save_to: Path | None = None,
    adapter: bool = False,
) -> dict[str, Any]:
    """Each model the run ended with, cut to each budget by its Strategy (``full``: as trained;
    ``reorder``: ``weight`` or ``activation`` salience order first, the latter measured on the
    run's clients' data), with its test figures, size and inference FLOPs per
    example (per block, for a language model) at the run's sequence length. ``save_to``: also
    write each as a folder transformers loads, ``save_to/MODEL-BUDGET`` (``models/hf_export.py``;
    ``adapter``: LoRA apart, as a peft adapter)."""
    sc = run.scenario
    wb, strategy = sc.workbench, sc.strategy
    seq_len = run.cfg.data.block_length if run.cfg.task == "lm" else run.cfg.data.max_length
    rows = []
    for name, private, client in run.models(clients):
        for budget in budgets:
            module, info = strategy.export(wb, run.ckpt.state, private, budget, reorder, client, sc.clients)
            params = sum(p.numel() for p in module.parameters())
            if save_to is not None:
                facts = {"run": str(run.run_dir), "round": run.ckpt.round, "model": name, "budget": budget}
                folder = save_to / f"{name}-{budget}"
                info = {**info, **strategy.save_pretrained(module, wb.tokenizer, folder, adapter, facts)}
            rows.append(
                {
                    "model": name,
                    "budget": budget,
                    **info,
                    "params": params,
                    "size_mb": params * 4 / 1e6,  # fp32 weights
                    "flops_per_example": count_flops(module, seq_len, train=False),
                    # the task's figures on the test set (accuracy; or log-perplexity, perplexity
                    # and token accuracy), without the per-domain breakdown
                    **{k: v for k, v in sc.task.evaluate(module, sc.test, wb.device).items() if "/" not in k},
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


def generate(
    run: TrainedRun, prompt: str, max_new_tokens: int, client: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """A seeded continuation of ``prompt`` by a model the run ended with (``client``'s own, or
    the first the run lists: the global model, or client 0's)."""
    name, private, owner = run.models([client] if client is not None else None)[0]
    sc = run.scenario
    model = sc.strategy.model_for(sc.workbench, run.ckpt.state, private, owner)
    text = sc.task.generate(model, sc.workbench.tokenizer, prompt, max_new_tokens, seed)
    return {"run": str(run.run_dir), "model": name, "prompt": prompt, "continuation": text, "seed": seed}


def expert_breakdown(run: TrainedRun) -> dict[str, Any]:
    """The Strategy's per-client breakdown of a mixture of experts, from the checkpoint."""
    if not run.ckpt.private and run.ckpt.private_on_nodes:
        raise EdgefmError(
            f"{str(run.run_dir)!r}: the clients' experts stayed on the Flower nodes; expected an in-process run"
        )
    sc = run.scenario
    out = sc.strategy.expert_breakdown(run.ckpt.state, sc.workbench, sc.clients, run.ckpt.private)
    return {"run": str(run.run_dir), "round": run.ckpt.round, **out}

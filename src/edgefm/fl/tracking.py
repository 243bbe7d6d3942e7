"""Experiment tracking on the engine's callbacks: MLflow, TensorBoard and Weights & Biases.

``tracking=mlflow`` (or ``tensorboard``, ``wandb``, several comma-separated) sends a run to the
trackers researchers already use, from the same :class:`~edgefm.fl.events.Callbacks` the
progress bars use, so it works for every method and both engines:

- the resolved config as parameters (dotted keys, ``model.lora.r``);
- every round's metrics row (accuracy or perplexity, loss, bytes, FLOPs, simulated seconds,
  joules, dollars, ...) at step = round;
- per-client ledger summaries at the end (each client's rounds, accepted updates and bytes);
- the run folder's files as artifacts: config, metrics, ledger, summary and the report.

MLflow goes through its own ``MlflowClient`` (no global active run): to ``$MLFLOW_TRACKING_URI``
when set, as MLflow itself does, else to the local backend MLflow 3 recommends (its file store is
frozen), a SQLite database ``mlflow.db`` beside the run folder with artifacts in
``mlartifacts/`` (``runs/mlflow.db`` for ``--out runs/x``), one MLflow run per edgefm run; a resumed run goes on
logging into the MLflow run it started (its id is kept in ``tracking.json``). TensorBoard writes
event files into ``RUN/tensorboard`` (``torch.utils.tensorboard``); W&B runs in offline mode
into ``RUN/wandb`` unless ``WANDB_MODE`` says otherwise. Each is an optional extra:
``pip install -c constraints.txt -e ".[tracking]"``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from edgefm import EdgefmError, config
from edgefm.fl.events import Callbacks

ARTIFACTS = ("config.yaml", "metrics.jsonl", "clients.jsonl", "evals.jsonl", "summary.json", "report.html")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric fields of a metrics row (trackers take no NaN, strings or None)."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and k != "round"
    }


def client_summaries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per client from the ledger: rounds asked, updates accepted, bytes, FLOPs."""
    by: dict[int, dict[str, Any]] = {}
    for r in rows:
        c = by.setdefault(
            r["client"], {"client": r["client"], "tier": r.get("tier", ""), "rounds": 0, "ok": 0, "bytes_up": 0}
        )
        c["rounds"] += 1
        c["ok"] += r["status"] == "ok"
        c["bytes_up"] += int(r.get("bytes_up") or 0)
        c["flops"] = c.get("flops", 0.0) + float(r.get("flops") or 0.0)
    return [by[k] for k in sorted(by)]


class _MLflow:
    def __init__(self, run_dir: Path, params: dict[str, Any], state: dict[str, Any]):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        home = run_dir.resolve().parent
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        if state.get("mlflow_run_id"):  # a resumed run logs on into the run it began
            self.run_id = state["mlflow_run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name("edgefm")
        # a server keeps its own artifact store; the local database keeps them beside itself
        where = None if os.environ.get("MLFLOW_TRACKING_URI") else (home / "mlartifacts").as_uri()
        exp_id = exp.experiment_id if exp else self.client.create_experiment("edgefm", artifact_location=where)
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
        state["mlflow_run_id"], state["mlflow_uri"] = self.run_id, uri
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def round(self, rnd: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, rnd) for k, v in values.items()])

    def close(self, run_dir: Path, clients: list[dict[str, Any]]) -> None:
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        self.client.log_dict(self.run_id, clients, "clients_summary.json")
        self.client.set_terminated(self.run_id)


class _TensorBoard:
    def __init__(self, run_dir: Path, params: dict[str, Any], state: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))

    def round(self, rnd: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, rnd)
        self.writer.flush()

    def close(self, run_dir: Path, clients: list[dict[str, Any]]) -> None:
        for c in clients:
            self.writer.add_scalar("client/accepted_updates", c["ok"], c["client"])
            self.writer.add_scalar("client/bytes_up", c["bytes_up"], c["client"])
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, params: dict[str, Any], state: dict[str, Any]):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")  # no account or network needed
        self.wandb = wandb
        self.run = wandb.init(
            project="edgefm",
            name=run_dir.name,
            dir=str(run_dir),
            config=params,
            id=state.get("wandb_run_id"),
            resume="allow",
        )
        state["wandb_run_id"] = self.run.id

    def round(self, rnd: int, values: dict[str, float]) -> None:
        self.run.log(values, step=rnd)

    def close(self, run_dir: Path, clients: list[dict[str, Any]]) -> None:
        if clients:
            cols = list(clients[0])
            self.run.log({"clients": self.wandb.Table(columns=cols, data=[[c[k] for k in cols] for c in clients])})
        self.run.finish()


BACKENDS = {"mlflow": _MLflow, "tensorboard": _TensorBoard, "wandb": _WandB}


class Tracker(Callbacks):
    """Forwards a run's config, rounds, ledger and files to the chosen trackers; ``inner`` (the
    caller's own callbacks, e.g. progress bars) sees every event too."""

    def __init__(self, cfg: config.RunConfig, run_dir: Path, inner: Callbacks | None = None):
        self.run_dir, self.inner = run_dir, inner or Callbacks()
        names = [b.strip() for b in cfg.tracking.split(",") if b.strip() != "none"]
        state_file = run_dir / "tracking.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        params = _flat(config.to_dict(cfg))
        self.backends = []
        for name in names:
            try:
                self.backends.append(BACKENDS[name](run_dir, params, state))
            except ImportError:
                raise EdgefmError(
                    f"tracking: {name} is not installed; pip install -c constraints.txt -e '.[tracking]'"
                ) from None
        state_file.write_text(json.dumps(state))

    def on_run_start(self, rounds: int, start_round: int) -> None:
        self.inner.on_run_start(rounds, start_round)

    def on_round_start(self, rnd: int, clients: list[int]) -> None:
        self.inner.on_round_start(rnd, clients)

    def on_client_end(self, rnd: int, client_id: int, row: dict[str, Any]) -> None:
        self.inner.on_client_end(rnd, client_id, row)

    def on_round_end(self, summary: dict[str, Any]) -> None:
        values = _numbers(summary)
        for b in self.backends:
            b.round(int(summary["round"]), values)
        self.inner.on_round_end(summary)

    def should_stop(self, summary: dict[str, Any]) -> bool:
        return self.inner.should_stop(summary)

    def close(self) -> None:
        """After the run folder is complete (summary and report written): artifacts, and end."""
        path = self.run_dir / "clients.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        clients = client_summaries(rows)
        for b in self.backends:
            b.close(self.run_dir, clients)


def attach(cfg: config.RunConfig, run_dir: Path, inner: Callbacks | None) -> Tracker | None:
    """A :class:`Tracker` when ``cfg.tracking`` names a tracker, else None."""
    if all(b.strip() == "none" for b in cfg.tracking.split(",")):
        return None
    return Tracker(cfg, run_dir, inner)

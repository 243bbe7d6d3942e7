"""Experiment tracking (fl/tracking.py): what a run sends to MLflow and TensorBoard is read back
through each tool's own reader, and a resumed run goes on logging into the MLflow run it began."""

from __future__ import annotations

import json

import pytest

from edgefm import EdgefmError, api, config

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

TINY = [
    "model.name=tiny_bert",
    "data.max_train=120",
    "data.max_test=40",
    "data.max_length=16",
    "clients=3",
    "train.max_steps=2",
]


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_mlflow_and_tensorboard_hold_every_round_and_a_resumed_run_continues(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "a"
    api.train("configs/tiny.yaml", [*TINY, "rounds=1", "tracking=mlflow,tensorboard"], out=run_dir)
    api.train(None, ["rounds=2"], resume=run_dir)  # extended by a round: the same MLflow run
    metrics = rows(run_dir / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")  # beside the run folder
    exp = client.get_experiment_by_name("edgefm")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "a" and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    for key in ("accuracy", "bytes_up", "flops", "sim_round_s"):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [(h.step, h.value) for h in history] == [(m["round"], pytest.approx(m[key])) for m in metrics], key
    assert runs[0].data.params["model.name"] == "tiny_bert" and runs[0].data.params["clients"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"summary.json", "report.html", "metrics.jsonl", "clients.jsonl", "clients_summary.json"} <= artifacts

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    acc = [(e.step, e.value) for e in events.Scalars("accuracy")]
    assert [s for s, _ in acc] == [1, 2]
    assert [v for _, v in acc] == pytest.approx([m["accuracy"] for m in metrics], abs=1e-6)
    assert [e.step for e in events.Scalars("client/bytes_up")][-3:] == [0, 1, 2]


def test_tracking_names_are_checked_and_none_tracks_nothing(tmp_path):
    with pytest.raises(config.ConfigError, match="tracking: 'mlfow'"):
        config.load(None, ["tracking=mlfow"])
    run_dir = tmp_path / "b"
    api.train("configs/tiny.yaml", [*TINY, "rounds=1"], out=run_dir)
    assert not (run_dir / "tracking.json").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (run_dir / "tensorboard").exists()
    assert issubclass(config.ConfigError, EdgefmError)


def test_wandb_offline_run_holds_every_round(tmp_path, monkeypatch):
    """W&B in offline mode (no account, no network): its run log holds each round's metrics.
    W&B ships no reader for offline logs, so the test finds the values in the log's records."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "w"
    api.train("configs/tiny.yaml", [*TINY, "rounds=2", "tracking=wandb"], out=run_dir)
    logs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    blob = logs[0].read_bytes()
    state = json.loads((run_dir / "tracking.json").read_text())
    assert state["wandb_run_id"].encode() in blob
    for m in rows(run_dir / "metrics.jsonl"):
        assert json.dumps(m["accuracy"]).encode() in blob and b"%d" % m["bytes_up"] in blob
    assert b"tiny_bert" in blob  # the config

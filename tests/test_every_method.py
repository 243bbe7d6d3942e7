"""Every registered method, end to end through the CLI as a user types it: train 2 rounds on the
tiny config, then ``robust --run`` and ``export`` on the run folder. The final figures are pinned
(torchtune-style golden numbers), so a silent change in any method's numerics fails here, and a
method registered later is covered the day it is registered: it fails until its figures are
pinned below."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefm import registry
from edgefm.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {
    "fedms": ["algorithm.stage1_rounds=1"],  # reach stage 2 (private experts) within 2 rounds
    "fedprox": ["algorithm.mu=0.1"],  # a proximal term large enough to tell FedProx from FedAvg
    # a step budget that low-end phones miss (forced onto the smallest subnetwork) and flagships
    # meet only in part, so subnetwork sizing, slicing and aggregation all run
    "raffm": ["algorithm.step_budget_s=0.001", "algorithm.unfit=force"],
}

# configs/tiny.yaml (tiny BERT, 4 clients, SST-2 slice, seed 0), 2 rounds, on this 2-core CPU.
# accuracy / client_acc_mean: the last round's; train_loss: the mean over round-2 clients;
# bytes and FLOPs: totals over both rounds; robust_*: accuracy on the first 40 examples of the
# suite (averaged over the clients' own models where the run ends with per-client models).
GOLDEN = {
    "centralized": dict(
        accuracy=0.435,
        client_acc_mean=0.5375,
        train_loss=0.6862735271453857,
        bytes_up=17882,
        bytes_down=0,
        flops=2014203904.0,
        robust_sst2=0.475,
        robust_advglue=0.55,
    ),
    "fedavg": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6569659761077311,
        bytes_up=67648,
        bytes_down=67648,
        flops=1981361536.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
    "fedms": dict(
        accuracy=0.49,
        client_acc_mean=0.628052503052503,
        train_loss=1.0259914686857619,
        bytes_up=46880,
        bytes_down=80704,
        flops=2727718656.0,
        robust_sst2=0.5125,
        robust_advglue=0.43125,
    ),
    "fedprox": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6554466355755153,
        bytes_up=67648,
        bytes_down=67648,
        flops=1981361536.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
    "local": dict(
        accuracy=0.51,
        client_acc_mean=0.7219169719169719,
        train_loss=0.5825528256159513,
        bytes_up=0,
        bytes_down=0,
        flops=1981361536.0,
        robust_sst2=0.525,
        robust_advglue=0.5125,
    ),
    "raffm": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6575712345936433,
        bytes_up=61504,
        bytes_down=320704,
        flops=1600865696.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("name", registry.names("algorithm"))
def test_train_then_robust_and_export(tmp_path, name):
    assert name in GOLDEN, f"algorithm {name!r} is registered: pin its tiny-config figures in GOLDEN"
    runner, run = CliRunner(), tmp_path / "run"
    sets = ["--set", f"algorithm.name={name}", *EXTRA.get(name, [])]
    result = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(run), *sets])
    assert result.exit_code == 0, result.output

    rounds, clients = lines(run / "metrics.jsonl"), lines(run / "clients.jsonl")
    last = rounds[-1]
    losses = [c["client_train_loss"] for c in clients if c["round"] == 2 and c["status"] == "ok"]
    got = {
        "accuracy": last["accuracy"],
        "client_acc_mean": last["client_acc_mean"],
        "train_loss": sum(losses) / len(losses),
        "bytes_up": sum(r["bytes_up"] for r in rounds),
        "bytes_down": sum(r["bytes_down"] for r in rounds),
        "flops": sum(r["flops"] for r in rounds),
    }
    want = GOLDEN[name]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["client_acc_mean"] == pytest.approx(want["client_acc_mean"], abs=1e-9)
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    assert (got["bytes_up"], got["bytes_down"]) == (want["bytes_up"], want["bytes_down"])
    assert got["flops"] == pytest.approx(want["flops"], rel=1e-9)

    # export: the models the run ended with, through the Strategy
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "export.json")])
    assert result.exit_code == 0, result.output
    exported = json.loads((tmp_path / "export.json").read_text())
    models = exported["models"]
    assert exported["algorithm"] == name and exported["round"] == 2
    assert all(m["budget"] == "full" and m["params"] > 0 and m["flops_per_example"] > 0 for m in models)
    if [m["model"] for m in models] == ["global"]:  # one global model: the engine's last evaluation of it
        assert models[0]["accuracy"] == pytest.approx(last["accuracy"], abs=1e-12)
    else:  # per-client models, one per client
        assert [m["model"] for m in models] == [f"client{k}" for k in range(4)]

    # robust --run judges those same models
    result = runner.invoke(app, ["robust", "--run", str(run), "--suite", "sst2,advglue-sst2", "--limit", "40"])
    assert result.exit_code == 0, result.output
    judged = json.loads((run / "robustness.json").read_text())["results"]
    assert [r["suite"] for r in judged] == ["sst2", "advglue-sst2"]
    for r, key in zip(judged, ("robust_sst2", "robust_advglue"), strict=True):
        assert r["n"] == 40 and r["accuracy"] == pytest.approx(want[key], abs=1e-9) and math.isfinite(r["macro_f1"])
        assert r.get("models_averaged", 1) == len(models)

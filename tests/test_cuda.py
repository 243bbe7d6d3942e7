"""Every method trains on a GPU when one is present (``device=cuda``), and the commands that read
a run back (export, robust) work on its folder. Skipped on machines without CUDA, which is where
CI runs; run on a lent GPU machine (``benchmarks/gpu.py`` measures the speed-up there). Bugs this
caught on an H200: a FLOP-counting batch built on the CPU (FedMS), RaFFM's slicing indices on the
CPU, FedJETS's routers on the CPU, clients' updates left on the GPU, salience statistics combined
across devices at export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgefm import registry
from edgefm.cli import app

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
ROOT = Path(__file__).resolve().parents[1]
TINY = [str(ROOT / "configs" / "tiny.yaml"), "rounds=2", "data.max_train=200", "device=cuda"]
CLASSIFY = {
    "fedavg": [],
    "fedprox": ["algorithm.mu=0.1"],
    "local": [],
    "centralized": [],
    "fedms": ["algorithm.stage1_rounds=1"],
    "splitfed": ["algorithm.cut=1"],
    "raffm": ["algorithm.salience=activation", "algorithm.step_budget_s=0.001", "algorithm.unfit=force"],
}
LM = {
    "fedjets": str(ROOT / "configs" / "fedjets_bbcnews.yaml"),
    "deepfusion": str(ROOT / "configs" / "deepfusion_bbcnews.yaml"),
}
LM_SMALL = ["rounds=1", "data.max_train=200", "data.max_test=50", "device=cuda"]


def _train(args: list[str], out: Path) -> dict:
    res = CliRunner().invoke(app, ["train", *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text())


def test_every_method_is_covered() -> None:
    assert set(CLASSIFY) | set(LM) == set(registry.names("algorithm"))


@pytest.mark.parametrize("name", sorted(CLASSIFY))
def test_classifier_trains_on_cuda(name: str, tmp_path: Path) -> None:
    s = _train([*TINY, f"algorithm.name={name}", *CLASSIFY[name]], tmp_path / name)
    assert 0.0 <= s["final_accuracy"] <= 1.0 and s["dropped_updates"] == 0
    if name in ("raffm", "fedms"):
        cut = ["--budget", "50%", "--spp", "activation"] if name == "raffm" else []
        res = CliRunner().invoke(app, ["export", str(tmp_path / name), *cut])
        assert res.exit_code == 0, res.output
    if name == "fedavg":
        res = CliRunner().invoke(app, ["robust", "--run", str(tmp_path / name), "--suite", "sst2", "--limit", "40"])
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize("name", sorted(LM))
def test_language_model_trains_on_cuda(name: str, tmp_path: Path) -> None:
    extra = ["algorithm.local_steps=5", "algorithm.distill_steps=5", "algorithm.merge_steps=5"]
    s = _train([LM[name], *LM_SMALL, *(extra if name == "deepfusion" else [])], tmp_path / name)
    assert s["final_log_ppl"] > 0.0 and s["dropped_updates"] == 0

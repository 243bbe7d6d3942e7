"""The Python API (edgefm/api.py): a few lines from a script train, resume and judge a run,
writing exactly what the CLI writes; the examples run on tiny settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgefm
from edgefm import EdgefmError, config
from edgefm.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
SMALL = ["rounds=2", "clients=3", "data.max_train=90", "data.max_test=30"]


def test_train_from_python_writes_what_the_cli_writes(tmp_path):
    run = edgefm.train(TINY, overrides=SMALL, out=tmp_path / "api")
    cli = CliRunner().invoke(app, ["train", str(TINY), "--out", str(tmp_path / "cli"), *[f"--set={s}" for s in SMALL]])
    assert cli.exit_code == 0, cli.output
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(run.dir) == files(tmp_path / "cli") and "summary.json" in files(run.dir)
    strip = lambda df: df.drop(columns=["wall_s"])  # noqa: E731
    assert strip(run.metrics).equals(strip(edgefm.open_run(tmp_path / "cli").metrics))
    assert list(run.metrics["round"]) == [1, 2] and len(run.clients) == 2 * 3
    assert run.summary["final_accuracy"] == run.metrics["accuracy"].iloc[-1]
    assert run.config == config.load(TINY, SMALL) and run.report.is_file()
    assert set(run.state()) and all(v.ndim >= 1 for v in run.state().values())


def test_configs_as_objects_and_dicts_and_errors(tmp_path):
    cfg = config.load(TINY, SMALL)
    a = edgefm.train(cfg, overrides=["rounds=1"], out=tmp_path / "a")
    b = edgefm.train({**config.to_dict(cfg), "rounds": 1}, out=tmp_path / "b")
    assert a.metrics.drop(columns=["wall_s"]).equals(b.metrics.drop(columns=["wall_s"]))
    with pytest.raises(EdgefmError, match="already holds a run"):
        edgefm.train(cfg, out=tmp_path / "a")
    with pytest.raises(EdgefmError, match="rounds: 0 is out of range"):
        edgefm.train(TINY, overrides=["rounds=0"], out=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    longer = edgefm.train(resume=a.dir, overrides=["rounds=2"])  # extend the run
    assert list(longer.metrics["round"]) == [1, 2]
    with pytest.raises(EdgefmError, match="no summary.json"):
        edgefm.open_run(tmp_path)


def test_python_m_edgefm_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "edgefm", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "edgefm" in out.stdout


@pytest.mark.parametrize("script", ["federated_lora.py", "fedms.py", "market.py"])
def test_examples_run_on_tiny_settings(tmp_path, script):
    args = [sys.executable, str(ROOT / "examples" / script), "--tiny"]
    if script != "market.py":
        args += ["--out", str(tmp_path / "run")]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    if script == "market.py":
        assert "PRINCE" in out.stdout and "social optimum" in out.stdout
    elif script == "fedms.py":
        assert {p.name for p in (tmp_path / "run").iterdir()} == {"fedms", "fedavg"}
        for m in ("fedms", "fedavg"):
            assert json.loads((tmp_path / "run" / m / "summary.json").read_text())["rounds"] == 2
    else:
        assert "final accuracy" in out.stdout and (tmp_path / "run" / "report.html").is_file()

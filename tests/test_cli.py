"""End-to-end runs of the ``edgefm`` command, as a user types it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgefm.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def edgefm(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "edgefm.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "edgefm 0.1.0" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "roundz=3"], "roundz: unknown key"),
        (["--set", "partition.alpha=0"], "partition.alpha: 0.0 is out of range"),
        (["--set", "algorithm.name=nope"], "unknown algorithm 'nope'"),
        (["--set", "data.name=null", "--set", "data.path=/no/such.csv"], "does not exist"),
        (["--set", "clients=100000", "--set", "partition.name=iid"], "clients: 100000 exceeds the"),
        (["--set", "partition.name=natural", "--set", "partition.column=user"], "partition.column: 'user'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, fragment):
    out = tmp_path / "run"
    result = edgefm("train", "configs/tiny.yaml", "--out", str(out), *args)
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_config_file(tmp_path):
    result = edgefm("train", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_train_tiny_end_to_end_writes_a_run_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(out), "--set", "rounds=2"])
    assert result.exit_code == 0, result.output
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "clients.jsonl",
        "summary.json",
        "report.html",
        "checkpoint.safetensors",
        "plots/accuracy_per_round.png",
        "plots/bytes_per_round.png",
    ):
        assert (out / name).is_file(), name
    rounds = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] == rounds[-1]["accuracy"]
    assert summary["bytes_up"] == sum(r["bytes_up"] for r in rounds) > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["rounds"] == 2
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Devices" in page
    # the same folder again is refused; --resume of a finished run is a no-op that keeps the numbers
    again = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(out)])
    assert again.exit_code == 2
    resumed = runner.invoke(app, ["train", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] == rounds
    # compare two runs on one page
    cmp_page = tmp_path / "cmp.html"
    report = runner.invoke(app, ["report", str(out), str(out), "--out", str(cmp_page)])
    assert report.exit_code == 0 and "Comparison of 2 runs" in cmp_page.read_text()
    # without --out, the comparison lands in a folder of its own under runs/, not the current folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    report = runner.invoke(app, ["report", str(out), str(out)])
    assert report.exit_code == 0, report.output
    assert sorted(p.name for p in Path(".").iterdir()) == ["runs"]
    (page,) = Path("runs").glob("compare-*/compare.html")
    assert (page.parent / "compare_plots").is_dir()


def test_one_set_with_several_pairs_as_in_the_readme(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(out), "--set", "rounds=1", "algorithm.name=fedprox"],
    )
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["rounds"] == 1 and saved["algorithm"]["name"] == "fedprox"
    bad = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--set", "rounds=1", "oops"])
    assert bad.exit_code == 2


def test_own_data_and_own_model_folder(tmp_path):
    import pandas as pd

    from edgefm.models.backbones import tiny_bert

    data = tmp_path / "my.csv"
    pd.DataFrame(
        {
            "review": [f"great product {i}" if i % 2 else f"awful thing {i}" for i in range(80)],
            "stars": ["good" if i % 2 else "bad" for i in range(80)],
        }
    ).to_csv(data, index=False)
    model_dir = tmp_path / "mymodel"
    bb = tiny_bert(seed=0)
    bb.encoder.save_pretrained(model_dir)
    bb.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--out",
            str(out),
            "--set",
            "rounds=1",
            "--set",
            "clients=2",
            "--set",
            f"data.path={data}",
            "--set",
            "data.name=null",
            "--set",
            "data.text_column=review",
            "--set",
            "data.label_column=stars",
            "--set",
            "model.name=path",
            "--set",
            f"model.path={model_dir}",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["path"] == str(data) and saved["model"]["path"] == str(model_dir)
    # the tiny BERT of the folder (+ a pooler and the head), not MiniLM's 22.7M parameters
    assert sum(p.numel() for p in bb.encoder.parameters()) < summary["parameters_total"] < 1.1e6
    assert summary["final_accuracy"] is not None


@pytest.mark.slow
def test_minilm_small_slice_learns(tmp_path):
    """The real backbone on a real slice of SST-2: two rounds must beat chance clearly."""
    out = tmp_path / "minilm"
    result = runner.invoke(
        app,
        [
            "train",
            "--out",
            str(out),
            "--set",
            "rounds=2",
            "--set",
            "clients=3",
            "--set",
            "data.max_train=360",
            "--set",
            "data.max_test=200",
            "--set",
            "train.lr=1e-3",
            "--set",
            "train.head_lr=1e-2",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "minilm" and summary["final_accuracy"] > 0.6
    assert summary["trainable_percent"] < 1.0  # LoRA r=8 on query/value + head


BAD_FILES = {
    "empty.csv": (b"", "cannot be read as csv"),
    "latin.csv": (b"text,label\n\xff\xfe caf\xe9,1\nok,0\n", "cannot be read as csv: 'utf-8' codec"),
    "noise.csv": (bytes(range(256)) * 2, "cannot be read as csv"),
    "noise.parquet": (b"PAR0" + bytes(range(200)), "cannot be read as parquet"),
    "broken.jsonl": (b'{"text": "a", "label": 1}\n{broken', "cannot be read as jsonl"),
    "header.csv": (b"text,label\n", "holds no rows"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_files_are_one_line_errors(tmp_path, name):
    content, fragment = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "run"
    sets = ["--set", "data.name=null", "--set", f"data.path={tmp_path / name}", "--set", "rounds=1"]
    result = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(out), *sets])
    assert result.exit_code == 2 and fragment in result.output and result.exception.__class__ is SystemExit
    assert not out.exists()


def test_out_paths_blocked_by_a_file_and_corrupt_run_files(tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        result = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(out), "--set", "rounds=1"])
        assert result.exit_code == 2 and "a file is in the way" in result.output
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"round": 1}\n{"round": 2, "acc')
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "line 2: not JSON" in result.output
    assert not (run / "report.html").exists()
    bad = runner.invoke(app, ["robust", "--zero-shot", "--limit", "-5"])
    assert bad.exit_code == 2 and "--limit: -5" in bad.output


def test_demo_is_the_defaults_with_native_bf16_and_no_backbone_dropout(tmp_path, tiny_overrides):
    """`edgefm demo` runs the built-in defaults with train.precision=auto and no dropout in the
    frozen backbone (what a user's overrides can still change), and records it in the run's config."""
    import yaml

    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--set", *tiny_overrides, "rounds=1"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["train"]["precision"] == "auto" and written["model"]["backbone_dropout"] == 0.0
    out = tmp_path / "demo32"
    result = runner.invoke(
        app, ["demo", "--out", str(out), "--set", *tiny_overrides, "rounds=1", "train.precision=fp32"]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["precision"] == "fp32"

"""Checkpoints hold data, never code: safetensors + JSON metadata; a pickle is refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgefm import EdgefmError
from edgefm.cli import app
from edgefm.fl import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_keeps_every_tensor_and_the_ledger(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    private = {2: {"local.x": torch.ones(2)}, 7: {}}
    ledger = {"clients": [{"round": 1, "loss": float("nan")}], "rounds": [], "sim_elapsed_s": 1.5}
    checkpoint.save(tmp_path, checkpoint.Checkpoint(3, state, ledger, private, [4]))
    got = checkpoint.load(tmp_path)
    assert got.round == 3 and got.private_on_nodes == [4]
    assert all(torch.equal(got.state[k], v) for k, v in state.items()) and set(got.state) == set(state)
    assert set(got.private) == {2, 7} and torch.equal(got.private[2]["local.x"], torch.ones(2)) and got.private[7] == {}
    assert got.ledger["clients"][0]["loss"] is None  # NaN is not JSON: stored as null
    assert not (tmp_path / "checkpoint.tmp").exists()
    meta = checkpoint.meta(tmp_path)  # a launcher's view: the same round, ledger and owners, no tensors
    assert (meta.round, meta.ledger, meta.private_on_nodes) == (3, got.ledger, [4])
    assert meta.state == {} and meta.private == {2: {}, 7: {}}
    with pytest.raises(EdgefmError, match="clients keep private state"):
        checkpoint.check_resumable(meta)  # Flower cannot resume state it does not hold


class Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/edgefm-pwned"),))


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((ROOT / "configs/tiny.yaml").read_text())
    return run


@pytest.mark.parametrize("command", [["train", "--resume"], ["robust", "--run"], ["export"], ["experts"]])
def test_a_crafted_pickle_is_refused_with_one_line_and_runs_nothing(tmp_path, command):
    run = _run_folder(tmp_path)
    Path("/tmp/edgefm-pwned").unlink(missing_ok=True)
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"round": 1, "state": Evil()}))
    result = CliRunner().invoke(app, [*command, str(run)])
    assert result.exit_code == 2, result.output
    assert "pickled checkpoint.pt" in result.output and "Traceback" not in result.output
    assert not Path("/tmp/edgefm-pwned").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 7, b"not a safetensors file at all", pickle.dumps({"x": 1})],
)
def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path, content):
    run = _run_folder(tmp_path)
    (run / "checkpoint.safetensors").write_bytes(content)
    for read in (checkpoint.load, checkpoint.meta):
        with pytest.raises(EdgefmError, match="not a valid edgefm checkpoint"):
            read(run)
    result = CliRunner().invoke(app, ["export", str(run)])
    assert result.exit_code == 2 and "not a valid edgefm checkpoint" in result.output
    assert "Traceback" not in result.output


def test_a_safetensors_file_without_edgefm_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file(
        {"x": torch.zeros(1)}, str(tmp_path / "checkpoint.safetensors"), metadata={"edgefm": json.dumps({"format": 99})}
    )
    with pytest.raises(EdgefmError, match="format 99"):
        checkpoint.load(tmp_path)
    with pytest.raises(EdgefmError, match="format 99"):
        checkpoint.meta(tmp_path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "checkpoint.safetensors"))
    with pytest.raises(EdgefmError, match="not a valid edgefm checkpoint"):
        checkpoint.load(tmp_path)


def test_resume_with_more_rounds_extends_a_finished_run_to_the_longer_runs_numbers(tmp_path):
    runner = CliRunner()
    tiny = str(ROOT / "configs" / "tiny.yaml")
    sets = ["--set", "clients=3", "--set", "data.max_train=90", "--set", "data.max_test=30"]
    short, full = tmp_path / "short", tmp_path / "full"
    assert runner.invoke(app, ["train", tiny, "--out", str(short), *sets, "--set", "rounds=2"]).exit_code == 0
    assert runner.invoke(app, ["train", tiny, "--out", str(full), *sets, "--set", "rounds=3"]).exit_code == 0
    res = runner.invoke(app, ["train", "--resume", str(short), "--set", "rounds=3"])
    assert res.exit_code == 0, res.output
    rows = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(x).items() if k != "wall_s"}
        for x in (d / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(rows(short)) == 3 and rows(short) == rows(full)
    assert "rounds: 3" in (short / "config.yaml").read_text()
    assert json.loads((short / "summary.json").read_text())["rounds"] == 3
    # only rounds may change, and never below what already ran
    other = runner.invoke(app, ["train", "--resume", str(short), "--set", "train.lr=0.1"])
    assert other.exit_code == 2 and "only rounds=N" in other.output
    fewer = runner.invoke(app, ["train", "--resume", str(short), "--set", "rounds=1"])
    assert fewer.exit_code == 2 and "already finished 3 rounds" in fewer.output


def test_ctrl_c_names_the_resume_command(tmp_path, monkeypatch):
    from edgefm.fl import simulation

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulation.Engine, "run", interrupted)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app, ["train", str(ROOT / "configs" / "tiny.yaml"), "--out", str(out), "--set", "rounds=1"]
    )
    assert res.exit_code == 130 and f"edgefm train --resume {out}" in res.output.replace("\n", "")

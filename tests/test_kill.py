"""A crash loses nothing (issue 22, item 2): a real ``edgefm train`` process killed with SIGKILL
at several moments (inside a round, around the metrics and checkpoint writes), then
``--resume``, ends with exactly the uninterrupted run's metrics, and no file it leaves is
corrupt or half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SETS = ["rounds=4", "clients=3", "data.max_train=240", "data.max_test=60", "train.max_steps=4", "train.batch_size=8"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def train(out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "edgefm.cli", "train", *extra, "--out", str(out)]
    return subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def fresh(out: Path) -> subprocess.Popen:
    return train(out, "configs/tiny.yaml", *[x for s in SETS for x in ("--set", s)])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def metrics(run: Path) -> list[tuple]:
    keys = ("round", "accuracy", "client_acc_mean", "bytes_up", "bytes_down", "flops")
    return [tuple(r.get(k) for k in keys) for r in lines(run / "metrics.jsonl")]


def started(run: Path, done: int) -> bool:
    return len(lines(run / "metrics.jsonl")) >= done and (run / "checkpoint.safetensors").is_file()


@pytest.mark.slow
def test_sigkill_at_several_moments_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    whole = tmp_path / "whole"
    assert fresh(whole).wait(timeout=300) == 0
    want = metrics(whole)
    assert [m[0] for m in want] == [1, 2, 3, 4]
    # (rounds finished before the kill, extra seconds after that): kills land mid-round and
    # right after a round's files are written, while the next checkpoint may be mid-write
    for k, (done, delay) in enumerate([(1, 0.0), (1, 0.4), (2, 0.05), (3, 0.0)]):
        run = tmp_path / f"killed{k}"
        proc = fresh(run)
        deadline = time.monotonic() + 300
        # (a kill before the first checkpoint leaves nothing to resume: the run starts again)
        while not started(run, done) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        # whatever the moment, the checkpoint on disk is whole (written to a temporary file, then renamed)
        saved = load_file(str(run / "checkpoint.safetensors"))
        assert saved and all(v.numel() for v in saved.values())
        resumed = train(run, "--resume", str(run))
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
        assert metrics(run) == want, k
        assert [r["round"] for r in lines(run / "clients.jsonl")] == [
            r["round"] for r in lines(whole / "clients.jsonl")
        ]
        assert json.loads((run / "summary.json").read_text())  # written whole
        assert not list(run.glob("*.tmp")), k  # nothing half-written left behind

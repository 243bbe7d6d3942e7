"""Faults injected into rounds (issue 22, item 1): devices that drop out, stragglers cut at a
deadline. The run completes and the ledger says who dropped and why."""

from __future__ import annotations

import pytest
import torch

from edgefm import config
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine

TINY = ["clients=6", "rounds=2", "data.max_train=240", "data.max_test=60", "train.max_steps=2", "train.batch_size=8"]


def run(extra=()):
    sc = build(config.load("configs/tiny.yaml", [*TINY, *extra]))
    return sc, Engine(sc).run()


def test_dropouts_are_seeded_recorded_and_the_round_merges_the_rest():
    _, out = run(["faults.dropout=0.5"])
    rows = out["ledger"].clients
    gone = [(r["round"], r["client"]) for r in rows if r["status"] == "dropped"]
    assert gone and len(gone) < len(rows)
    assert all("dropped out of round" in r["reason"] for r in rows if r["status"] == "dropped")
    assert all(r["flops"] == 0 for r in rows if r["status"] == "dropped")  # never contacted
    _, again = run(["faults.dropout=0.5"])
    assert gone == [(r["round"], r["client"]) for r in again["ledger"].clients if r["status"] == "dropped"]
    assert all(torch.equal(out["state"][k], again["state"][k]) for k in out["state"])
    _, none = run()
    assert any(not torch.equal(out["state"][k], none["state"][k]) for k in out["state"])


def test_stragglers_past_the_deadline_are_cut_and_the_round_lasts_until_it():
    _, free = run(["rounds=1"])
    seconds = sorted(r["seconds"] for r in free["ledger"].clients)
    deadline = (seconds[2] + seconds[3]) / 2  # half the devices finish in time
    _, cut = run(["rounds=1", f"faults.deadline={deadline}"])
    by = {r["client"]: r for r in free["ledger"].clients}
    for r in cut["ledger"].clients:
        late = by[r["client"]]["seconds"] > deadline
        assert (r["status"] == "dropped") == late, r
        assert ("straggler" in r["reason"]) == late
    assert cut["ledger"].rounds[0]["accepted"] == 3
    assert cut["ledger"].rounds[0]["sim_round_s"] == pytest.approx(deadline)


def test_bad_fault_settings_are_refused():
    for sets in (["faults.dropout=1"], ["faults.deadline=0"], ["faults.dropout=-0.1"]):
        with pytest.raises(config.ConfigError, match="faults"):
            config.load("configs/tiny.yaml", sets)

"""Bad input to the market commands: one line naming the value, exit 2, nothing written (the
cases an independent fuzz found mishandled, issue 22)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefm.cli import app
from edgefm.market import aeria, lmaas

runner = CliRunner()


@pytest.fixture()
def files(tmp_path):
    a = aeria.generate(6, "resnet50", np.random.default_rng(0)).to_dict()
    lm = lmaas.generate(5, 2, np.random.default_rng(0)).to_dict()
    return tmp_path, a, lm


def _run(tmp_path, kind: str, instance, *extra: str):
    path = tmp_path / f"{kind}.json"
    if isinstance(instance, bytes):
        path.write_bytes(instance)
    else:
        path.write_text(json.dumps(instance))
    out = tmp_path / "out.json"
    res = runner.invoke(app, ["market", kind, "--instance", str(path), "--out", str(out), *extra])
    return res, out


def _refused(res, out, fragment: str) -> None:
    assert res.exit_code == 2, res.output
    assert fragment in res.output and "Traceback" not in res.output
    assert not out.exists() and not out.with_suffix(".json.tmp").exists()


def test_malformed_workloads_and_bids_are_refused(files):
    tmp, a, _ = files
    cases = [
        ("layer_flops", lambda w: [str(v) for v in w], "layer_flops holds '"),
        ("layer_flops", lambda w: [-v for v in w], "layer_flops holds -"),
        ("exit_accuracy", lambda w: [math.nan] * len(w), "exit_accuracy holds nan"),
        ("exit_accuracy", lambda w: [True] * len(w), "exit_accuracy holds True"),
    ]
    for key, change, fragment in cases:
        bad = json.loads(json.dumps(a))
        bad["workload"][key] = change(bad["workload"][key])
        _refused(*_run(tmp, "aeria", json.loads(json.dumps(bad, allow_nan=True))), fragment)
    big = json.loads(json.dumps(a))
    big["users"]["bids"] = [1e308] * len(big["users"]["bids"])  # would overflow the consensus to infinity
    _refused(*_run(tmp, "aeria", big), "users.bids[0]: 1e+308")
    (tmp / "noise.csv").write_bytes(bytes(range(256)))
    path = dict(a, workload=str(tmp / "noise.csv"))
    _refused(*_run(tmp, "aeria", path), "not a JSON file")


def test_binary_instances_seeds_generate_and_out_paths(files):
    tmp, a, lm = files
    for kind in ("lmaas", "aeria", "prince"):
        _refused(*_run(tmp, kind, bytes(range(256)) * 4), "is not text")
    _refused(*_run(tmp, "aeria", a, "--seed", "-1"), "--seed -1: expected a non-negative integer")
    for kind, gen in (("lmaas", "3"), ("lmaas", "3,2,1"), ("prince", "5")):
        res = runner.invoke(app, ["market", kind, "--generate", gen, "--instance", str(tmp / "g.json")])
        assert res.exit_code == 2 and f"--generate '{gen}'" in res.output and not (tmp / "g.json").exists()
    res = runner.invoke(
        app, ["market", "prince", "--generate", "5,2", "--seed", "-3", "--instance", str(tmp / "g.json")]
    )
    assert res.exit_code == 2 and "--seed -3" in res.output and not (tmp / "g.json").exists()
    (tmp / "lm.json").write_text(json.dumps(lm))
    (tmp / "afile").write_text("x")
    for out in (tmp, tmp / "afile" / "o.json"):
        res = runner.invoke(app, ["market", "lmaas", "--instance", str(tmp / "lm.json"), "--out", str(out)])
        assert res.exit_code == 2 and "is in the way" in res.output
    assert not list(tmp.rglob("*.tmp"))

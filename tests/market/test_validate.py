"""Both markets read instances through one set of checks (market/validate.py): every malformed
field is a one-line error naming it, never a traceback and never a silent NaN."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edgefm import EdgefmError
from edgefm.market import aeria, lmaas


def _lmaas() -> dict:
    return lmaas.generate(4, 2, np.random.default_rng(0)).to_dict()


def _aeria() -> dict:
    d = aeria.generate(5, "resnet50", np.random.default_rng(0)).to_dict()
    d["users"]["values"] = list(d["users"]["bids"])
    return d


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split("/")
    node = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


CASES = [
    (lmaas.Instance, _lmaas, "customers", 5, "customers"),
    (lmaas.Instance, _lmaas, "constants", [1, 2], "constants"),
    (lmaas.Instance, _lmaas, "constants/horizon", True, "constants.horizon"),
    (lmaas.Instance, _lmaas, "constants/beta", "2", "constants.beta"),
    (lmaas.Instance, _lmaas, "customers/alpha/1", float("nan"), "alpha[1]"),
    (lmaas.Instance, _lmaas, "customers/demand/0", True, "customers.demand"),
    (lmaas.Instance, _lmaas, "customers/delta", [0.1], "delta"),
    (lmaas.Instance, _lmaas, "models/0/cost", "cheap", "models[0].cost"),
    (lmaas.Instance, _lmaas, "models/1/accuracy", 1.5, "accuracy[1]"),
    (aeria.Instance, _aeria, "users", 5, "users"),
    (aeria.Instance, _aeria, "eip", [1, 2], "eip"),
    (aeria.Instance, _aeria, "users/values/2", float("nan"), "users.values[2]"),
    (aeria.Instance, _aeria, "users/bids/0", True, "users.bids"),
    (aeria.Instance, _aeria, "users/deadline/1", -1.0, "users.deadline[1]"),
    (aeria.Instance, _aeria, "users/latency", [0.1], "users.latency"),
    (aeria.Instance, _aeria, "eip/unit_cost", float("inf"), "eip.unit_cost"),
    (aeria.Instance, _aeria, "eip/edge_flops", 0, "eip.edge_flops"),
    (aeria.Instance, _aeria, "eip/speed", 1, "eip.speed"),
    (aeria.Instance, _aeria, "base", 1.0, "base"),
]


@pytest.mark.parametrize(
    ("cls", "make", "path", "value", "named"), CASES, ids=[f"{c[0].__module__[14:]}:{c[2]}" for c in CASES]
)
def test_bad_field_is_a_one_line_error_naming_it(cls, make, path, value, named):
    with pytest.raises(EdgefmError) as err:
        cls.from_dict(_set(make(), path, value))
    message = str(err.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize("make", [_lmaas, _aeria])
def test_a_good_instance_round_trips(make):
    cls = lmaas.Instance if make is _lmaas else aeria.Instance
    d = make()
    assert cls.from_dict(d).to_dict() == d  # no field dropped or changed


@pytest.mark.parametrize("raw", [5, [], "x", None])
def test_an_instance_that_is_not_an_object(raw):
    for cls in (lmaas.Instance, aeria.Instance):
        with pytest.raises(EdgefmError, match="expected a JSON object"):
            cls.from_dict(raw)

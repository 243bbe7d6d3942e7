"""The frozen-prefix cache (models/prefix.py) and FedMS's use of it: the same training with the
cache on or off, the frozen passes charged once, the memory it holds, a device that cannot hold
it recomputing."""

import numpy as np
import pytest
import torch
from torch import nn

from edgefm import config
from edgefm.data.encode import Encoded
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
from edgefm.models.flops import FlopModel
from edgefm.models.prefix import PrefixCache

TINY = [
    "model.name=tiny_bert",
    "data.max_train=200",
    "data.max_test=60",
    "data.max_length=24",
    "clients=3",
    "train.lr=0.01",
    "train.head_lr=0.01",
    "algorithm.name=fedms",
    "partition.alpha=0.5",
    "algorithm.sal=fixed",
    "algorithm.m0=1",  # of the tiny BERT's 2 blocks: block 0 is the frozen prefix
]


def run(*extra):
    sc = build(config.load(None, [*TINY, *extra]))
    return sc, Engine(sc).run()


def client_flops(out, rnd):
    return sum(r["flops"] for r in out["ledger"].clients if r["round"] == rnd)


class Doubler(nn.Module):
    """A frozen 'prefix' whose calls are counted."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.drop = nn.Dropout(0.5)

    def forward(self, ids, mask):
        self.calls += 1
        h = self.drop(ids.float().unsqueeze(-1) * 2.0)  # eval mode: dropout off, exact
        return {"h": h}, {"sum": h.sum((1, 2))}


def flat_flops(per_example: float) -> FlopModel:
    out = object.__new__(FlopModel)
    out.coef = np.array([per_example, 0.0, 0.0])
    return out


def test_cache_computes_each_example_once_and_pads_with_zeros():
    data = Encoded([np.array([1, 2, 3]), np.array([4]), np.array([5, 6])], np.array([0, 1, 0]))
    model, flops = Doubler(), flat_flops(10.0)
    model.train()
    cache = PrefixCache(("k",), len(data), budget_bytes=1e9)
    first = cache.lookup(model, data.collate([0, 1]), model, flops, int(data.lengths.sum()))
    assert model.calls == 1 and cache.take_flops() == 20.0 and model.training  # train mode restored
    assert first[0]["h"][1, :, 0].tolist() == [8.0, 0.0, 0.0]  # example 1 has 1 token, 2 padded
    out = cache.lookup(model, data.collate([2, 1, 0]), model, flops, int(data.lengths.sum()))
    assert model.calls == 2 and cache.take_flops() == 10.0  # only example 2 was computed
    assert out[0]["h"][:, :, 0].tolist() == [[10.0, 12.0, 0.0], [8.0, 0.0, 0.0], [2.0, 4.0, 6.0]]
    assert out[1]["sum"].tolist() == [22.0, 8.0, 12.0]
    assert cache.nbytes == 4 * (3 + 1 + 2) + 4 * 3  # per-token values + one row each
    cache.lookup(model, data.collate([0, 1, 2]), model, flops, int(data.lengths.sum()))
    assert model.calls == 2 and cache.take_flops() == 0.0  # all held


def test_a_device_that_cannot_hold_the_cache_recomputes_every_batch():
    data = Encoded([np.array([1, 2, 3]), np.array([4])], np.array([0, 1]))
    model, flops = Doubler(), flat_flops(10.0)
    cache = PrefixCache(("k",), len(data), budget_bytes=4 * 4 - 1)  # needs 4 tokens + 2 rows
    for _ in range(2):
        out = cache.lookup(model, data.collate([0, 1]), model, flops, int(data.lengths.sum()))
        assert out[1]["sum"].tolist() == [12.0, 8.0]
    assert model.calls == 2 and cache.take_flops() == 40.0 and cache.nbytes == 0 and not cache.enabled


@pytest.mark.parametrize("stage", ["s1", "s2"])
def test_fedms_trains_the_same_with_the_cache_on_or_off(stage):
    extra = ["rounds=2", "algorithm.stage1_rounds=2" if stage == "s1" else "algorithm.stage1_rounds=0"]
    sc_on, on = run(*extra, "train.prefix_cache=true")
    _, off = run(*extra, "train.prefix_cache=false")
    for key in on["state"]:
        torch.testing.assert_close(on["state"][key], off["state"][key], atol=2e-5, rtol=1e-4)
    # round 1 computes every frozen pass in both; round 2 reuses them only with the cache
    assert client_flops(on, 1) == pytest.approx(client_flops(off, 1), rel=1e-9)
    assert client_flops(on, 2) < 0.9 * client_flops(off, 2)
    mb = [r["client_cache_mb"] for r in on["ledger"].clients]
    assert all(m > 0 for m in mb) and all(r["client_cache_mb"] == 0 for r in off["ledger"].clients)
    # what a client holds: the prefix's output per token (hidden 32, float32) and, in stage 2,
    # the gate's feature (32) and the global expert's two probabilities per example
    c = sc_on.clients[0]
    per_row = 0 if stage == "s1" else 4 * (32 + 2)
    expected = (4 * 32 * int(c.train.lengths.sum()) + per_row * len(c.train)) / 2**20
    row = next(r for r in on["ledger"].clients if r["client"] == c.client_id and r["round"] == 2)
    assert row["client_cache_mb"] == pytest.approx(expected)


def test_devices_without_the_memory_recompute_and_are_charged_for_it():
    _, on = run("rounds=2", "train.prefix_cache=true", "edge.memory_scale=0.001")
    _, off = run("rounds=2", "train.prefix_cache=false")
    assert all(r["client_cache_mb"] == 0 for r in on["ledger"].clients)
    assert client_flops(on, 2) == pytest.approx(client_flops(off, 2), rel=1e-9)


def test_a_reused_cache_gives_the_same_update_for_fewer_flops():
    sc = build(config.load(None, [*TINY, "train.epochs=2"]))
    s, wb = sc.strategy, sc.workbench
    state = s.initial_state(wb)
    task = s.configure(1, state, sc.devices)[0]
    up = s.client_update(task, wb, sc.clients[0], None)
    assert up.metrics["cache_mb"] > 0
    again = s.client_update(task, wb, sc.clients[0], None)  # same task: the cache is reused
    torch.testing.assert_close(again.payload, up.payload)
    # the first charged the frozen block once per example (2 epochs of training, one of it)
    frozen = up.flops - again.flops
    assert 0 < frozen < 0.5 * again.flops


def test_the_process_holds_at_most_prefix_cache_mb_of_caches():
    # the three clients' caches take 0.056, 0.094 and 0.084 MB here: room for the first alone
    _, out = run("rounds=2", "train.prefix_cache_mb=0.1")
    held = [r["client_cache_mb"] for r in out["ledger"].clients if r["round"] == 2]
    assert held[0] > 0 and held[1:] == [0, 0]
    _, off = run("rounds=2", "train.prefix_cache=false")
    assert client_flops(off, 2) > client_flops(out, 2) > 0

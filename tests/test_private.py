"""Clients' private state held in memory up to a budget and on disk beyond it (fl/private.py)."""

import pytest
import torch

from edgefm import config
from edgefm.fl.private import PrivateStore
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine


def state(value: float) -> dict[str, torch.Tensor]:
    return {"lora.a": torch.full((4, 2), value), "head.bias": torch.arange(3.0) + value, "blocks": torch.tensor([1, 2])}


SIZE = 4 * 8 + 4 * 3 + 8 * 2  # bytes of one state


def test_states_beyond_the_budget_go_to_disk_and_come_back_exact():
    store = PrivateStore(memory_bytes=SIZE)  # room for exactly one
    store[5], store[2] = state(1.0), state(2.0)
    assert store.held_bytes == SIZE and store.on_disk == 1 and len(store) == 2 and sorted(store) == [2, 5]
    for cid, v in ((5, 1.0), (2, 2.0)):
        got = store[cid]
        assert got.keys() == state(v).keys() and all(torch.equal(got[k], state(v)[k]) for k in got)
        assert got["blocks"].dtype == torch.int64
    store[2] = state(3.0)  # overwritten where it lives
    assert torch.equal(store[2]["lora.a"], torch.full((4, 2), 3.0)) and store.on_disk == 1
    del store[5]
    assert 5 not in store and store.held_bytes == 0 and store.get(5) is None
    store[7] = state(4.0)  # the freed room is used again
    assert store.on_disk == 1 and store.held_bytes == SIZE
    del store[2]
    assert list(store) == [7] and store.on_disk == 0
    with pytest.raises(KeyError):
        store[2]


def test_a_run_with_every_private_state_on_disk_gives_the_same_numbers(tiny_overrides):
    outs = {}
    for mb in (1024.0, 0.0):
        cfg = config.load(None, [*tiny_overrides, "algorithm.name=local", f"private_memory_mb={mb}"])
        engine = Engine(build(cfg))
        outs[mb] = engine.run()
        if mb == 0.0:
            assert engine.transport.private.on_disk == 4 and engine.transport.private.held_bytes == 0
        else:
            assert engine.transport.private.on_disk == 0
    mem, disk = outs[1024.0], outs[0.0]

    def figures(out):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in out["ledger"].rounds]

    assert figures(mem) == figures(disk)
    assert sorted(mem["private"]) == sorted(disk["private"]) == [0, 1, 2, 3]
    for cid in mem["private"]:
        a, b = mem["private"][cid], disk["private"][cid]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_budget_is_checked():
    with pytest.raises(config.ConfigError, match="private_memory_mb"):
        config.load(None, ["private_memory_mb=-1"])

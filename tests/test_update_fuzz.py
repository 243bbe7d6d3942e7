"""A fuzzer of client updates against the one validation path every Strategy aggregates through
(Strategy.aggregate -> fl/aggregate.validate_update / validate_count): 1,000 generated updates,
850 of them malformed in a known way; none accepted, none crashes aggregate, each rejection
logged with its reason, and the valid ones merged exactly (issue 22, item 3)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from edgefm import config, registry
from edgefm.fl.strategy import ClientTask, ClientUpdate, Strategy

STATE = {"layer.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), "head.bias": torch.zeros(2)}


def _malformed(rng: np.random.Generator, k: int):
    """(payload, num_examples, the words the rejection must contain) for mutation ``k``."""
    good = {
        key: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(k)) for key, v in STATE.items()
    }
    w = "layer.weight"
    mutations = [
        (lambda p: {**p, w: p[w].to(torch.int64)}, 10, "dtype"),
        (lambda p: {**p, w: p[w].double() * 1e300}, 10, "dtype"),
        (lambda p: {**p, w: torch.full((4, 3), complex(math.nan, 1.0))}, 10, "dtype"),
        (lambda p: {**p, w: p[w].half()}, 10, "dtype"),
        (lambda p: {**p, w: p[w].index_fill(0, torch.tensor([0]), math.nan)}, 10, "non-finite"),
        (lambda p: {**p, w: p[w].index_fill(1, torch.tensor([2]), -math.inf)}, 10, "non-finite"),
        (lambda p: {**p, w: p[w] * 1e30}, 10, "over"),
        (lambda p: {**p, "head.bias": torch.full((2,), 5e3)}, 10, "over"),
        (lambda p: {k: v for k, v in p.items() if k != w}, 10, "wrong keys"),
        (lambda p: {**p, "extra": torch.zeros(1)}, 10, "wrong keys"),
        (lambda p: {**p, 7: torch.zeros(1)}, 10, "wrong keys"),
        (lambda p: {**p, w: p[w].reshape(3, 4)}, 10, "shape"),
        (lambda p: {**p, w: p[w][:, :2]}, 10, "shape"),
        (lambda p: {**p, w: p[w].tolist()}, 10, "not a tensor"),
        (lambda p: {**p, w: p[w].numpy()}, 10, "not a tensor"),
        (lambda p: {**p, w: None}, 10, "not a tensor"),
        (lambda p: {**p, w: torch.empty(4, 3, device="meta")}, 10, "on meta"),
        (lambda p: None, 10, "payload"),
        (lambda p: list(p.values()), 10, "payload"),
        (lambda p: "weights", 10, "payload"),
        (lambda p: p, math.nan, "num_examples"),
        (lambda p: p, math.inf, "num_examples"),
        (lambda p: p, 10**18, "num_examples"),
        (lambda p: p, "10", "num_examples"),
        (lambda p: p, None, "num_examples"),
        (lambda p: p, 0, "num_examples"),
        (lambda p: p, -3, "num_examples"),
        (lambda p: p, True, "num_examples"),
        (lambda p: p, 2.5, "num_examples"),
    ]
    change, count, words = mutations[int(rng.integers(len(mutations)))]
    return change(good), count, words


class _Mean(Strategy):
    """The base Strategy's validation with a plain mean for merge (FedAvg's rule)."""

    def initial_state(self, workbench):
        return dict(STATE)

    def configure(self, rnd, state, devices):
        return {}

    def client_update(self, task, workbench, data, private):
        raise NotImplementedError

    def merge(self, rnd, state, updates, tasks):
        from edgefm.fl.aggregate import weighted_mean

        return weighted_mean([u.payload for u in updates], [u.num_examples for u in updates])


def test_one_thousand_updates_850_malformed(caplog):
    rng = np.random.default_rng(0)
    strategy = _Mean(config.load(None, []))
    kinds = rng.permutation([True] * 850 + [False] * 150)
    expected: list[tuple[int, str]] = []
    updates, valid = [], []
    for cid, bad in enumerate(kinds):
        if bad:
            payload, count, words = _malformed(rng, cid)
            expected.append((cid, words))
        else:
            payload = {
                k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(cid))
                for k, v in STATE.items()
            }
            count = int(rng.integers(1, 500))
            valid.append((payload, count))
        updates.append(ClientUpdate(cid, 1, payload, count, 0.0))
    tasks = {u.client_id: ClientTask(u.client_id, 1, STATE) for u in updates}
    with caplog.at_level(logging.WARNING, logger="edgefm.fl"):
        result = strategy.aggregate(1, dict(STATE), updates, tasks)
    assert sorted(result.rejected) == [cid for cid, _ in expected]  # every malformed one, no valid one
    for cid, words in expected:
        assert words in result.rejected[cid], (cid, result.rejected[cid])
    assert sum("rejected update" in r.message for r in caplog.records) == 850
    total = sum(c for _, c in valid)
    for key in STATE:  # exactly the valid updates' weighted mean
        want = sum(p[key].double() * c for p, c in valid) / total
        assert torch.allclose(result.state[key].double(), want) and result.state[key].dtype == STATE[key].dtype


def test_only_malformed_updates_leave_the_state_unchanged():
    rng = np.random.default_rng(1)
    strategy = _Mean(config.load(None, []))
    updates = [ClientUpdate(c, 1, *_malformed(rng, c)[:2], 0.0) for c in range(50)]
    result = strategy.aggregate(1, dict(STATE), updates, {c: ClientTask(c, 1, STATE) for c in range(50)})
    assert len(result.rejected) == 50 and all(torch.equal(result.state[k], STATE[k]) for k in STATE)


@pytest.mark.parametrize("name", registry.names("algorithm"))
def test_every_method_aggregates_through_the_validating_path(name):
    cls = registry.get("algorithm", name).strategy_class()
    assert cls.aggregate is Strategy.aggregate, f"{name} overrides aggregate and skips validation"

import json

import numpy as np
import pytest
import torch

from edgefm import EdgefmError, config
from edgefm.algorithms.fedavg import FedAvg
from edgefm.fl.aggregate import nbytes
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Callbacks, Engine, sample_clients
from edgefm.fl.strategy import ClientEval, ClientTask, ClientUpdate, combine_metrics
from edgefm.models.workbench import accuracy


def test_ledger_bytes_equal_payload_sizes(tiny_scenario_factory):
    sc = tiny_scenario_factory("rounds=1")
    size = nbytes(sc.workbench.get_state())
    out = Engine(sc).run()
    rows = out["ledger"].clients
    assert len(rows) == 4
    assert all(r["bytes_up"] == size and r["bytes_down"] == size for r in rows)
    assert all(r["flops"] > 0 and r["seconds"] > r["compute_s"] > 0 for r in rows)
    rnd = out["ledger"].rounds[0]
    assert rnd["sim_round_s"] == max(r["seconds"] for r in rows)
    assert rnd["bytes_up"] == 4 * size


def _update(cid, payload, n=10):
    return ClientUpdate(cid, 1, payload, num_examples=n, flops=1.0)


def test_bad_updates_are_rejected_with_reasons_and_never_averaged(tiny_scenario_factory):
    sc = tiny_scenario_factory()
    strategy, state = sc.strategy, sc.workbench.get_state()
    good = {k: v + 1 for k, v in state.items()}
    nan = {k: v.clone() for k, v in state.items()}
    next(iter(nan.values()))[0] = float("nan")
    key = next(iter(state))
    wrong_shape = dict(state, **{key: torch.zeros(3, 3, 3)})
    wrong_keys = {"evil": torch.zeros(1)}
    tasks = {cid: ClientTask(cid, 1, state) for cid in range(4)}
    result = strategy.aggregate(
        1, state, [_update(0, good), _update(1, nan), _update(2, wrong_shape), _update(3, wrong_keys)], tasks
    )
    assert set(result.rejected) == {1, 2, 3}
    assert "non-finite" in result.rejected[1] and "shape" in result.rejected[2] and "keys" in result.rejected[3]
    assert all(torch.equal(result.state[k], good[k]) for k in good)  # only the good one counted
    # all bad: the global state is unchanged
    result = strategy.aggregate(1, state, [_update(1, nan)], tasks)
    assert result.rejected and all(torch.equal(result.state[k], state[k]) for k in state)
    # an update from a client that was given no task is refused too
    result = strategy.aggregate(1, state, [_update(7, good)], tasks)
    assert "no task" in result.rejected[7] and all(torch.equal(result.state[k], state[k]) for k in state)


class Poisoned(FedAvg):
    def client_update(self, task, workbench, data, private):
        update = super().client_update(task, workbench, data, private)
        if task.client_id == 1:
            update.payload = {k: torch.full_like(v, float("nan")) for k, v in update.payload.items()}
        if task.client_id == 2:
            raise RuntimeError("device lost power")
        return update


def test_engine_logs_rejected_and_dropped_clients(tiny_scenario_factory, caplog):
    sc = tiny_scenario_factory("rounds=1")
    sc.strategy = Poisoned(sc.cfg)
    sc.strategy.population(sc.clients, sc.devices, sc.workbench)
    out = Engine(sc).run()
    status = {r["client"]: r["status"] for r in out["ledger"].clients}
    assert status == {0: "ok", 1: "rejected", 2: "dropped", 3: "ok"}
    assert all(torch.isfinite(v).all() for v in out["state"].values())
    assert "rejected update from client 1" in caplog.text and "client 2 dropped" in caplog.text
    assert out["ledger"].rounds[0]["rejected"] == 1 and out["ledger"].rounds[0]["dropped"] == 1


class Interrupt(Callbacks):
    def on_round_end(self, summary):
        if summary["round"] == 2:
            raise KeyboardInterrupt


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_resume_gives_the_same_numbers(tmp_path, tiny_overrides):
    cfg = config.load(None, [*tiny_overrides, "rounds=3", "fraction=0.75"])
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    cut_dir.mkdir()
    full = Engine(build(cfg)).run(full_dir)
    with pytest.raises(KeyboardInterrupt):
        Engine(build(cfg), Interrupt()).run(cut_dir)
    resumed = Engine(build(cfg)).run(cut_dir, resume=True)
    assert all(torch.equal(full["state"][k], resumed["state"][k]) for k in full["state"])
    read = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert _strip(read(full_dir)) == _strip(read(cut_dir))
    assert len(read(cut_dir)) == 3


def test_same_seed_same_numbers_other_seed_differs(tiny_overrides):
    def final(seed):
        out = Engine(build(config.load(None, [*tiny_overrides, f"seed={seed}"]))).run()
        return out["ledger"].rounds[-1]["accuracy"], out["state"]

    (a1, s1), (a2, s2), (_, s3) = final(0), final(0), final(5)
    assert a1 == a2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


def test_fedprox_with_mu_zero_is_fedavg(tiny_overrides):
    a = Engine(build(config.load(None, [*tiny_overrides, "rounds=1"]))).run()
    b = Engine(
        build(config.load(None, [*tiny_overrides, "rounds=1", "algorithm.name=fedprox", "algorithm.mu=0.0"]))
    ).run()
    c = Engine(
        build(config.load(None, [*tiny_overrides, "rounds=1", "algorithm.name=fedprox", "algorithm.mu=10.0"]))
    ).run()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert any(not torch.equal(a["state"][k], c["state"][k]) for k in a["state"])


def test_local_sends_nothing_and_keeps_small_private_state(tiny_scenario_factory):
    sc = tiny_scenario_factory("algorithm.name=local")
    size = nbytes(sc.workbench.get_state())
    out = Engine(sc).run()
    assert all(r["bytes_up"] == 0 and r["bytes_down"] == 0 for r in out["ledger"].clients)
    assert sorted(out["private"]) == [0, 1, 2, 3]
    assert all(nbytes(p) == size for p in out["private"].values())  # adapters + head, not a backbone copy
    # no global model: the run's accuracy is the mean of the clients' own models on the test set
    own = [
        accuracy(sc.strategy.model_for(sc.workbench, out["state"], p), sc.test, "cpu") for p in out["private"].values()
    ]
    assert len(set(own)) > 1 and out["ledger"].rounds[-1]["accuracy"] == pytest.approx(np.mean(own), abs=1e-12)
    local = [
        accuracy(sc.strategy.model_for(sc.workbench, out["state"], out["private"][c.client_id]), c.test, "cpu")
        for c in sc.clients
    ]
    assert out["ledger"].rounds[-1]["client_acc_mean"] == pytest.approx(np.mean(local), abs=1e-12)
    assert sc.strategy.evaluate_server(out["state"], sc.workbench, sc.test) == {}


def test_centralized_ships_raw_data_once_to_one_datacenter(tiny_scenario_factory):
    spread = tiny_scenario_factory()
    sc = tiny_scenario_factory("algorithm.name=centralized")
    assert len(sc.clients) == 1 and len(sc.devices) == 1 and sc.devices[0].tier == "datacenter"
    pooled = sc.clients[0]
    # every client's examples, in the order of the training pool
    index = np.sort(np.concatenate([c.train_index for c in spread.clients]))
    assert pooled.train_index.tolist() == index.tolist()
    assert len(pooled.train) == sum(len(c.train) for c in spread.clients)
    by_row = {int(i): x for c in spread.clients for i, x in zip(c.train_index, c.train.ids, strict=True)}
    assert all(np.array_equal(x, by_row[int(i)]) for i, x in zip(pooled.train_index, pooled.train.ids, strict=True))
    assert len(pooled.test) == sum(len(c.test) for c in spread.clients)
    assert pooled.raw_bytes == sum(c.raw_bytes for c in spread.clients) > 0
    out = Engine(sc).run()
    rows = out["ledger"].clients
    assert rows[0]["bytes_up"] == pooled.raw_bytes and rows[0]["bytes_down"] == 0
    assert rows[1]["bytes_up"] == 0


def test_round_metrics_combine_server_and_client_figures():
    clients = [
        ClientEval({"acc": 0.5}, {"accuracy": 0.2}),
        ClientEval({"acc": 0.9}, {"accuracy": 0.4}),
        ClientEval(),  # a client without a local test split
        ClientEval({"acc": float("nan")}),
    ]
    assert combine_metrics({}, clients) == pytest.approx(
        {"client_acc_mean": 0.7, "client_acc_min": 0.5, "client_acc_max": 0.9, "accuracy": 0.3}
    )
    # the server's own global figure wins over the clients' mean of theirs
    assert combine_metrics({"accuracy": 0.8}, clients)["accuracy"] == 0.8
    assert combine_metrics({"accuracy": float("nan")}, []) == {}


def test_client_sampling_is_seeded():
    assert sample_clients(0, 1, 10, 1.0) == list(range(10))
    a = sample_clients(0, 3, 10, 0.3)
    assert len(a) == 3 and a == sample_clients(0, 3, 10, 0.3)
    assert any(sample_clients(0, r, 10, 0.3) != a for r in range(4, 9))


def test_more_clients_than_examples_is_a_clear_error(tiny_overrides):
    with pytest.raises(EdgefmError, match="clients: 500 exceeds the"):
        build(config.load(None, [*tiny_overrides, "clients=500", "partition.name=iid"]))

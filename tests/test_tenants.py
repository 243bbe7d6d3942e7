"""Several tenants over one device population and one edge server (fl/tenants.py): devices are
dealt out once and never shared, the edge server's load counts every tenant's devices, targets
and deadlines are judged from each tenant's own rounds, and the CLI runs all four tenants."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from edgefm import config
from edgefm.cli import app
from edgefm.config import ConfigError
from edgefm.edge.devices import TIERS
from edgefm.fl import tenants
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Callbacks, Engine

SMALL = ["rounds=2", "train.max_steps=2", "train.batch_size=8", "data.max_train=120", "data.max_test=30"]


def write(tmp_path, entries, **top) -> str:
    for e in entries:
        e["config"] = str((config.Path("configs") / e["config"]).resolve())
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, **top, "tenants": entries}))
    return str(path)


def two(tmp_path) -> str:
    return write(
        tmp_path,
        [
            {"name": "a", "config": "tiny.yaml", "clients": 3, "target": 0.5, "deadline": 100,
             "set": ["algorithm.name=splitfed"]},
            {"name": "b", "config": "tiny.yaml", "clients": 2, "target": 0.5, "deadline": 100,
             "set": ["algorithm.name=splitfed", "algorithm.participation=[1.0,0.5]"]},
        ],
    )  # fmt: skip


def test_devices_are_dealt_once_from_one_population(tmp_path):
    chosen, population, seed = tenants.load(two(tmp_path), SMALL)
    assert [t.devices for t in chosen] == [[0, 1, 2], [3, 4]] and len(population) == 5
    mine = tenants.devices_of(chosen[1], population)
    assert [d.device_id for d in mine] == [0, 1] and mine[0].flops_per_s == population[3].flops_per_s
    assert chosen[0].cfg.clients == 5 and chosen[1].cfg.algorithm.participation == (1.0, 0.5)  # data over all 5


def test_the_edge_server_is_shared_by_every_tenants_devices(tmp_path):
    chosen, population, _ = tenants.load(two(tmp_path), [*SMALL, "rounds=1"])
    scenarios = [build(t.cfg, tenants.devices_of(t, population), owners=t.devices) for t in chosen]
    alone = Engine(build(chosen[0].cfg, tenants.devices_of(chosen[0], population), owners=chosen[0].devices)).run()
    tenants.share_edge([sc.strategy for sc in scenarios])
    shared = Engine(scenarios[0]).run()
    other = scenarios[1].strategy.edge_demand(1)
    assert 1 <= other <= 2
    for a, s in zip(alone["ledger"].clients, shared["ledger"].clients, strict=True):
        # the same edge work, served alongside the other tenant's devices: longer edge time
        assert s["server_flops"] == a["server_flops"]
        assert s["server_s"] == pytest.approx(s["server_flops"] * (3 + other) / TIERS["edge_server"].flops_per_s)
        assert s["server_s"] == pytest.approx(a["server_s"] * (3 + other) / 3)


def test_a_stopped_tenant_no_longer_loads_the_edge_server(tmp_path):
    chosen, population, _ = tenants.load(two(tmp_path), SMALL)
    scenarios = [build(t.cfg, tenants.devices_of(t, population), owners=t.devices) for t in chosen]
    last = tenants.share_edge([sc.strategy for sc in scenarios])
    a, b = scenarios[0].strategy, scenarios[1].strategy
    assert [a.edge_co_load(r) for r in (1, 2, 3)] == [b.edge_demand(r) for r in (1, 2, 3)]
    assert all(b.edge_demand(r) >= 1 for r in (1, 2, 3))  # b's first device always comes (q = 1)
    last[1] = 1  # b stopped after round 1
    assert [a.edge_co_load(r) for r in (1, 2, 3)] == [b.edge_demand(1), 0, 0]


def test_a_tenant_stops_at_its_target_or_its_deadline(tmp_path):
    chosen, population, _ = tenants.load(two(tmp_path), SMALL)
    stop = tenants.finished(chosen[0])  # target 0.5 accuracy, deadline 100 s
    assert not stop({"accuracy": 0.4, "sim_elapsed_s": 50.0})
    assert stop({"accuracy": 0.5, "sim_elapsed_s": 50.0}) and stop({"accuracy": 0.1, "sim_elapsed_s": 100.0})
    assert not stop({"sim_elapsed_s": 5.0})  # a round without evaluation
    lm = tenants.Tenant("lm", chosen[0].cfg, [0], 7.0, 100.0)
    assert tenants.finished(lm)({"log_ppl": 6.9, "sim_elapsed_s": 1.0}) and not tenants.finished(lm)(
        {"log_ppl": 7.1, "sim_elapsed_s": 1.0}
    )


def test_the_engine_ends_a_run_when_the_callers_rule_says(tmp_path):
    chosen, population, _ = tenants.load(two(tmp_path), [*SMALL, "rounds=4"])

    class After2(Callbacks):
        def should_stop(self, summary):
            return summary["round"] >= 2

    sc = build(chosen[0].cfg, tenants.devices_of(chosen[0], population), owners=chosen[0].devices)
    assert [r["round"] for r in Engine(sc, After2()).run()["ledger"].rounds] == [1, 2]
    sc = build(chosen[0].cfg, tenants.devices_of(chosen[0], population), owners=chosen[0].devices)
    assert len(Engine(sc).run()["ledger"].rounds) == 4


def test_bad_tenant_files_are_refused(tmp_path):
    base = {"name": "a", "config": "tiny.yaml", "clients": 2, "target": 0.5, "deadline": 10}
    cases = [
        ([{**base, "devices": [0, 1]}, {**base, "name": "b", "devices": [1, 2]}], "device 1 serves two tenants"),
        ([{**base, "deadline": -1}], r"tenants\[0\].deadline: -1"),
        ([{**base, "colour": 1}], r"tenants\[0\].colour: unknown key"),
        ([{k: v for k, v in base.items() if k != "target"}], r"tenants\[0\].target: missing"),
        ([base, dict(base)], "two tenants share a name"),
    ]
    for entries, message in cases:
        with pytest.raises(ConfigError, match=message):
            tenants.load(write(tmp_path, [dict(e) for e in entries]), SMALL)


def test_time_to_target_reads_the_rounds():
    rounds = [
        {"round": 1, "accuracy": 0.4, "sim_elapsed_s": 10.0},
        {"round": 2, "accuracy": 0.7, "sim_elapsed_s": 25.0},
        {"round": 3, "accuracy": 0.6, "sim_elapsed_s": 40.0},
    ]
    assert tenants.time_to_target(rounds, "accuracy", 0.65) == {"reached": True, "round": 2, "seconds": 25.0}
    lm = [{"round": 1, "log_ppl": 7.5, "sim_elapsed_s": 5.0}, {"round": 2, "log_ppl": 6.9, "sim_elapsed_s": 9.0}]
    assert tenants.time_to_target(lm, "log_ppl", 7.0)["round"] == 2
    assert not tenants.time_to_target(lm, "log_ppl", 6.0)["reached"]


@pytest.mark.slow
def test_the_cli_runs_all_four_tenants(tmp_path):
    out = tmp_path / "mt"
    sets = ["rounds=1", "train.max_steps=2", "train.batch_size=8", "data.max_test=20", "data.max_train=240"]
    sets.append("partition.name=iid")  # 24 devices share each tenant's 240 examples
    res = CliRunner().invoke(
        app, ["train", "configs/splitfed_multitenant.yaml", "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    )
    assert res.exit_code == 0, res.output
    result = json.loads((out / "tenants.json").read_text())
    names = [t["name"] for t in result["tenants"]]
    assert names == ["vit_mnist", "whisper_fsdd", "minilm_sst2", "llama_bbcnews"]
    assert [t["metric"] for t in result["tenants"]] == ["accuracy"] * 3 + ["log_ppl"]
    assert all((out / n / "summary.json").is_file() for n in names)
    devices = [d for t in result["tenants"] for d in t["devices"]]
    assert sorted(devices) == list(range(24))
    for t in result["tenants"]:
        assert t["deadline_met"] == (t["target_reached"] and t["target_seconds"] <= t["deadline"])
    page = (out / "report.html").read_text()  # one page: a panel per tenant, links to their reports
    assert all(f"href='{n}/report.html'" in page for n in names) and (out / "plots" / "tenants.png").is_file()


def test_a_tenant_trains_on_its_devices_own_data(tmp_path):
    """Data is dealt to the whole population; a tenant gets the shares of the devices serving it."""
    chosen, population, _ = tenants.load(two(tmp_path), SMALL)
    everyone = build(chosen[0].cfg)  # the same tenant alone on all 5 devices: the same deal
    mine = build(chosen[1].cfg, tenants.devices_of(chosen[1], population), owners=chosen[1].devices)
    for k, i in enumerate(chosen[1].devices):
        assert list(mine.clients[k].train_index) == list(everyone.clients[i].train_index)

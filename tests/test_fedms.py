"""FedMS on a tiny BERT: what each stage trains and uploads, the SAL schedule and its FLOP cut."""

import json

import pytest
import torch
from typer.testing import CliRunner

from edgefm import config
from edgefm.edge.devices import TIERS
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine

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
]


def run(*extra):
    sc = build(config.load(None, [*TINY, *extra]))
    return sc, Engine(sc).run()


def test_sal_schedule_known_answers():
    sc = build(config.load(None, [*TINY, "algorithm.m0=2", "algorithm.delta=5"]))
    s = sc.strategy
    flagship, phone = TIERS["edge_server"], TIERS["low_end_phone"]  # 4 TFLOP/s vs 20 GFLOP/s
    assert s.blocks(1, flagship, 6) == {4, 5}  # m0 = 2, from the output
    assert s.blocks(6, flagship, 6) == {3, 4, 5}  # + floor(5 / 5)
    assert s.blocks(30, flagship, 6) == set(range(6))  # capped by the model
    assert s.blocks(30, phone, 6) == {5}  # b_k = round(6 * 20/150) = 1
    all_ = build(config.load(None, [*TINY, "algorithm.sal=all"])).strategy
    assert all_.blocks(1, phone, 6) == set(range(6))


def test_stage1_trains_and_uploads_only_active_blocks_and_cuts_flops():
    _, sal = run("rounds=1", "algorithm.sal=fixed", "algorithm.m0=1")
    _, full = run("rounds=1", "algorithm.sal=all")
    rows = sal["ledger"].clients
    assert all(r["status"] == "ok" for r in rows)
    # one of two blocks trained: fewer bytes and fewer FLOPs than every block
    assert sum(r["bytes_up"] for r in rows) < sum(r["bytes_up"] for r in full["ledger"].clients)
    assert sum(r["flops"] for r in rows) < 0.9 * sum(r["flops"] for r in full["ledger"].clients)


def test_stage1_payload_keys():
    sc = build(config.load(None, [*TINY, "algorithm.sal=fixed", "algorithm.m0=1"]))
    state = sc.strategy.initial_state(sc.workbench)
    tasks = sc.strategy.configure(1, state, sc.devices)
    update = sc.strategy.client_update(tasks[0], sc.workbench, sc.clients[0], None)
    assert update.payload and all(".layer.1." in k or k.startswith("head.") for k in update.payload)
    assert any(".layer.1." in k and "lora_" in k for k in update.payload)  # the active block is sent
    assert not any("local" in k or "gate" in k for k in update.payload)


def test_stage2_uploads_only_the_gate_adapter_and_keeps_experts_private():
    sc, out = run("rounds=3", "algorithm.stage1_rounds=1")
    stage2 = [r for r in out["ledger"].clients if r["round"] >= 2]
    gate_bytes = sum(v.numel() * v.element_size() for k, v in out["state"].items() if k.startswith("gate_adapter."))
    assert gate_bytes > 0
    assert all(r["bytes_up"] == gate_bytes for r in stage2)
    assert all(r["bytes_down"] > r["bytes_up"] for r in stage2)  # the frozen global expert comes down
    private = out["private"][0]
    assert any(k.startswith("local.") for k in private) and any(k.startswith("local_head.") for k in private)
    assert "client_acc_mean" in out["ledger"].rounds[-1]
    # the global expert is frozen in stage 2
    sc2, out2 = run("rounds=2", "algorithm.stage1_rounds=1")
    g2 = {k: v for k, v in out2["state"].items() if not k.startswith("gate_adapter.")}
    g3 = {k: v for k, v in out["state"].items() if not k.startswith("gate_adapter.")}
    assert all(torch.equal(g2[k], g3[k]) for k in g2)


@pytest.mark.parametrize(
    ("ablation", "uploads"),
    [("algorithm.gate=fixed", False), ("algorithm.experts=local", False), ("algorithm.experts=global", True)],
)
def test_ablations_run(ablation, uploads):
    _, out = run("rounds=2", "algorithm.stage1_rounds=1", ablation)
    last = [r for r in out["ledger"].clients if r["round"] == 2]
    assert all(r["status"] == "ok" for r in last)
    assert (sum(r["bytes_up"] for r in last) > 0) == uploads


def test_deterministic_and_cli(tmp_path):
    _, a = run("rounds=2", "algorithm.stage1_rounds=1")
    _, b = run("rounds=2", "algorithm.stage1_rounds=1")
    assert a["ledger"].rounds[-1]["client_acc_mean"] == b["ledger"].rounds[-1]["client_acc_mean"]
    from edgefm.cli import app

    r = CliRunner().invoke(
        app,
        [
            "train",
            "configs/tiny.yaml",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "algorithm.name=fedms",
            "rounds=3",
            "algorithm.stage1_rounds=1",
        ],
    )
    assert r.exit_code == 0, r.output
    # the post-hoc breakdown re-evaluates the saved mixtures exactly as the run did
    r = CliRunner().invoke(app, ["experts", str(tmp_path / "r"), "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "e.json").read_text())
    last = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()][-1]
    assert d["mean"]["acc_mixture"] == pytest.approx(last["client_acc_mean"])
    for c in d["clients"]:
        assert c["oracle"] == max(c["acc_global"], c["acc_local"]) and 0 < c["gate_local"] < 1
    # the global expert of the breakdown is the run's global model, judged on each client's split
    from edgefm.fl import trained
    from edgefm.models.workbench import accuracy

    reopened = trained.open_run(tmp_path / "r")
    sc = reopened.scenario
    by_client = {c.client_id: c for c in sc.clients}
    for c in d["clients"]:
        model = sc.strategy.model_for(sc.workbench, reopened.ckpt.state)
        assert c["acc_global"] == accuracy(model, by_client[c["client"]].test, sc.workbench.device)


def test_breakdown_with_a_saturated_gate_is_the_chosen_expert():
    sc, out = run("rounds=2", "algorithm.stage1_rounds=1")
    s, c = sc.strategy, sc.clients[0]
    private = dict(out["private"][0])
    for bias, expert in ((50.0, "acc_local"), (-50.0, "acc_global")):
        private["gate_out.bias"] = torch.tensor([0.0, bias])
        b = s.expert_breakdown(out["state"], sc.workbench, [c], {0: private})["clients"][0]
        assert b["acc_mixture"] == b[expert] and b["gate_local"] == pytest.approx(float(bias > 0), abs=1e-6)
    assert b["acc_global"] != b["acc_local"]  # the two experts differ, so the check above tells them apart


def test_a_client_model_is_its_mixture_and_the_global_model_its_expert():
    from edgefm.algorithms.fedms import Mixture
    from edgefm.models.workbench import accuracy

    sc, out = run("rounds=2", "algorithm.stage1_rounds=1")
    s, c = sc.strategy, sc.clients[1]
    mix = s.model_for(sc.workbench, out["state"], out["private"][1])
    assert isinstance(mix, Mixture)
    b = s.expert_breakdown(out["state"], sc.workbench, [c], {1: out["private"][1]})["clients"][0]
    assert (
        accuracy(s.model_for(sc.workbench, out["state"], out["private"][1]), c.test, sc.workbench.device)
        == b["acc_mixture"]
    )
    glob = s.model_for(sc.workbench, out["state"])
    assert glob is sc.workbench.model and accuracy(glob, c.test, sc.workbench.device) == b["acc_global"]


def test_experts_refuses_what_is_not_a_mixture_run(tmp_path, tiny_overrides):
    from edgefm import EdgefmError
    from edgefm.cli import app
    from edgefm.fl import trained

    with pytest.raises(EdgefmError, match="no config.yaml"):
        trained.open_run(tmp_path)
    r = CliRunner().invoke(app, ["experts", str(tmp_path)])
    assert r.exit_code == 2 and "no config.yaml" in r.output and "Traceback" not in r.output
    fedavg = tmp_path / "fedavg"
    assert CliRunner().invoke(app, ["train", "--out", str(fedavg), "--set", *tiny_overrides, "rounds=1"]).exit_code == 0
    r = CliRunner().invoke(app, ["experts", str(fedavg)])
    assert r.exit_code == 2 and "no mixture of experts" in r.output and "Traceback" not in r.output


def test_stage2_flops_count_only_the_passes_a_mode_runs():
    def stage2_flops(*extra):
        _, out = run("rounds=2", "algorithm.stage1_rounds=1", *extra)
        return sum(r["flops"] for r in out["ledger"].clients if r["round"] == 2)

    mixture, fixed, local = (
        stage2_flops(),
        stage2_flops("algorithm.gate=fixed"),
        stage2_flops("algorithm.experts=local"),
    )
    assert local < fixed < mixture  # no global pass < no backbone pass for the gate < everything


def test_evaluating_less_often_changes_no_final_figure():
    # benchmarks evaluate only the last round; evaluation must not touch training state or RNG
    finals = []
    for every in (1, 3):
        _, out = run("rounds=3", "algorithm.stage1_rounds=1", f"eval_every={every}")
        last = out["ledger"].rounds[-1]
        finals.append([last[k] for k in ("accuracy", "client_acc_mean", "client_acc_min", "flops", "bytes_up")])
    assert finals[0] == finals[1]


def test_gate_holdout_keeps_the_gates_examples_from_the_local_expert():
    """With ``gate_holdout`` the local expert trains on its rows only and the gate on the others
    only: relabelling the gate's rows changes the gate's upload and leaves the local expert."""
    from edgefm.data.encode import Encoded

    extra = ["algorithm.stage1_rounds=0", "algorithm.gate_holdout=0.3"]
    n = len(build(config.load(None, [*TINY, *extra])).clients[0].train)

    def stage2(flip: bool):
        sc = build(config.load(None, [*TINY, *extra]))
        s, c = sc.strategy, sc.clients[0]
        experts, gate = s.gate_split(0, len(c.train))
        if flip:
            labels = c.train.labels.copy()
            labels[gate] = 1 - labels[gate]
            c.train = Encoded(c.train.ids, labels, c.train.pad_id)
        state = s.initial_state(sc.workbench)
        update = s.client_update(s.configure(1, state, sc.devices)[0], sc.workbench, c, None)
        return (experts, gate), update

    (experts, gate), honest = stage2(False)
    _, flipped = stage2(True)
    assert len(gate) == round(0.3 * n) and sorted([*experts, *gate]) == list(range(n))
    local = [k for k in honest.private if k.startswith(("local.", "local_head."))]
    assert local and all(torch.equal(honest.private[k], flipped.private[k]) for k in local)
    assert any(not torch.equal(honest.payload[k], flipped.payload[k]) for k in honest.payload)
    assert honest.flops > 0
    sc = build(config.load(None, TINY))
    assert sc.strategy.gate_split(0, n) is None  # off by default


def test_local_test_global_mixes_the_global_test_set_into_each_clients_test():
    base = build(config.load(None, TINY))
    mixed = build(config.load(None, [*TINY, "partition.local_test_global=0.3"]))
    for b, m in zip(base.clients, mixed.clients, strict=True):
        own = len(b.test)
        extra = len(m.test) - own
        assert extra == round(0.3 * own / 0.7) and torch.equal(
            torch.as_tensor(m.train.labels), torch.as_tensor(b.train.labels)
        )
        rows = -1 - m.test_index[own:]  # rows of the global test set
        assert (rows >= 0).all() and len(set(rows.tolist())) == extra
        assert list(m.test.labels[own:]) == list(base.test.labels[rows])
        assert list(m.test.labels[:own]) == list(b.test.labels)

"""Split federated fine-tuning (SplitFed; PRINCE, arXiv 2503.04971): the ledger's split traffic
and edge work, SFL-V1 and V2, independent participation, the CLI, and what is refused."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from edgefm import config
from edgefm.cli import app
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine

TINY = ["algorithm.name=splitfed", "data.max_train=200", "data.max_test=60", "train.max_steps=3", "train.batch_size=8"]


def run(extra=()):
    sc = build(config.load("configs/tiny.yaml", [*TINY, *extra]))
    return sc, Engine(sc).run()


def test_activation_and_gradient_bytes_are_every_steps_batch_x_length_x_width():
    sc, out = run(["rounds=1"])
    width = sc.workbench.model.encoder.config.hidden_size
    for row in out["ledger"].clients:
        cid = row["client"]
        gen = sc.strategy.client_generator(1, cid)  # the batches the device drew, in order
        batches = list(sc.clients[cid].train.batches(8, generator=gen, shuffle=True))[:3]
        want = sum(b.input_ids.numel() * width * 4 for b in batches)
        assert row["client_act_bytes_up"] == want and row["client_grad_bytes_down"] == want
        assert row["bytes_down"] > want  # plus the device part of the model
        assert row["server_flops"] > 0 and row["flops"] > 0 and row["server_s"] > 0


def test_edge_time_grows_with_the_devices_it_serves():
    sc, out = run(["rounds=1"])
    rows = {r["client"]: r for r in out["ledger"].clients}
    # 4 devices served at once: each one's edge seconds are 4 x its edge FLOPs / the edge's FLOP/s
    from edgefm.edge.devices import TIERS

    for r in rows.values():
        assert r["server_s"] == pytest.approx(r["server_flops"] * 4 / TIERS["edge_server"].flops_per_s)


def test_sfl_v1_with_every_device_trains_exactly_as_fedavg():
    """A split step has the unsplit model's gradients, and V1 averages device and edge parts
    with the data shares FedAvg uses: the same losses and model, different traffic."""
    _, split = run(["rounds=2"])
    _, fedavg = run(["rounds=2", "algorithm.name=fedavg"])
    loss = lambda out: [r["client_train_loss"] for r in out["ledger"].clients]  # noqa: E731
    assert loss(split) == pytest.approx(loss(fedavg), rel=1e-6)
    a, b = split["state"], fedavg["state"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in b)
    assert split["ledger"].rounds[-1]["bytes_up"] > 5 * fedavg["ledger"].rounds[-1]["bytes_up"]  # activations


def test_per_device_cuts_still_train_exactly_as_fedavg_and_move_less_from_weak_devices():
    """A device cutting after 1 block and one after 2 each train the whole model's gradients;
    V1 averages whole models, so mixed cuts are still FedAvg's training, with other traffic."""
    vit = ["rounds=2", "clients=4", "data.max_train=200", "data.max_test=40", "train.max_steps=2", "train.batch_size=8"]

    def run_vit(extra):  # a tiny ViT: 4 blocks, so devices can cut after 1 or 2
        return Engine(build(config.load("configs/splitfed_mnist.yaml", [*vit, *extra]))).run()

    mixed = run_vit(["algorithm.cuts=[1,2]"])
    fedavg = run_vit(["algorithm.name=fedavg"])
    one = run_vit(["algorithm.cut=1"])
    loss = lambda out: [r["client_train_loss"] for r in out["ledger"].clients]  # noqa: E731
    assert loss(mixed) == pytest.approx(loss(fedavg), rel=1e-6)
    # atol 1e-4: the ViT's key biases have a zero true gradient (softmax ignores a constant), so
    # AdamW normalises rounding noise there, which the split and unsplit sums round differently
    assert all(torch.allclose(mixed["state"][k], fedavg["state"][k], atol=1e-4) for k in fedavg["state"])
    rows = [r for r in mixed["ledger"].clients if r["round"] == 1]
    assert [r["client_cut"] for r in rows] == [1, 2, 1, 2]
    by_cut = {c: [r for r in rows if r["client_cut"] == c] for c in (1, 2)}
    ones = {r["client"]: r for r in one["ledger"].clients if r["round"] == 1}
    for r in by_cut[1]:  # the same device part and traffic as a run cut after 1 block for all
        assert r["bytes_down"] == ones[r["client"]]["bytes_down"] and r["flops"] == ones[r["client"]]["flops"]
    for r in by_cut[2]:  # a deeper device part: more weights down, more device FLOPs, less edge work
        assert r["bytes_down"] > ones[r["client"]]["bytes_down"] and r["flops"] > ones[r["client"]]["flops"]
        assert r["server_flops"] < ones[r["client"]]["server_flops"]
    with pytest.raises(config.ConfigError, match="algorithm.cuts: per-device cuts need variant v1"):
        config.load("configs/splitfed_mnist.yaml", ["algorithm.cuts=[1,2]", "algorithm.variant=v2"])


def test_with_one_device_sfl_v1_and_v2_are_the_same_training():
    a = run(["clients=1", "rounds=1", "algorithm.variant=v1"])[1]["state"]
    b = run(["clients=1", "rounds=1", "algorithm.variant=v2"])[1]["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_v1_and_v2_differ_with_several_devices_and_same_seed_same_numbers():
    v1 = run(["rounds=1"])[1]["state"]
    again = run(["rounds=1"])[1]["state"]
    v2 = run(["rounds=1", "algorithm.variant=v2"])[1]["state"]
    assert all(torch.equal(v1[k], again[k]) for k in v1)
    assert any(not torch.equal(v1[k], v2[k]) for k in v1)


def test_devices_that_sit_out_are_dropped_with_the_reason_and_weights_differ():
    extra = ["rounds=2", "algorithm.participation=[0.3, 0.9]"]
    _, unbiased = run([*extra, "algorithm.aggregation=unbiased"])
    _, naive = run([*extra, "algorithm.aggregation=naive"])
    rows = unbiased["ledger"].clients
    sat = [r for r in rows if r["status"] == "dropped"]
    assert sat and all("sat out round" in r["reason"] and r["bytes_up"] == 0 for r in sat)
    assert [r["status"] for r in rows] == [r["status"] for r in naive["ledger"].clients]  # the same draws
    a, b = unbiased["state"], naive["state"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_the_cli_trains_a_classifier_and_a_language_model(tmp_path):
    from test_lm import TINY as LM

    runner = CliRunner()
    for name, args in (
        ("cls", ["train", "configs/tiny.yaml", *[x for o in TINY for x in ("--set", o)]]),
        ("lm", ["train", *[x for o in [*LM, *TINY[:1], "rounds=1"] for x in ("--set", o)]]),
    ):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        rounds = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert rounds[-1]["server_flops"] > 0 and rounds[-1]["bytes_up"] > 0


def test_bad_settings_are_one_line_errors(tmp_path):
    for extra, fragment in (
        (["algorithm.cut=2"], "split.cut: 2; expected 1 to 1"),
        (["algorithm.cuts=[1,2]", "algorithm.variant=v2"], "algorithm.cuts: per-device cuts need variant v1"),
        (["algorithm.participation=[1.5]"], "algorithm.participation"),
    ):
        out = tmp_path / "run"
        result = CliRunner().invoke(
            app, ["train", "configs/tiny.yaml", "--out", str(out), *[x for o in [*TINY, *extra] for x in ("--set", o)]]
        )
        lines = [x for x in result.output.strip().splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (extra, result.output)
        assert not out.exists()


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_a_device_dropping_mid_step_leaves_the_round_consistent(variant):
    """Its partial step and round are discarded, the ledger says so, and the round is what it
    would have been had the device never been asked (the same merge over those that finished)."""
    sc, out = run(["rounds=1", f"algorithm.variant={variant}", "algorithm.step_drop=0.1"])
    rows = out["ledger"].clients
    gone = {r["client"] for r in rows if r["status"] == "dropped"}
    assert gone and len(gone) < len(rows)
    assert all(
        "disconnected in split step" in r["reason"] and "discarded" in r["reason"] for r in rows if r["client"] in gone
    )
    assert all(r["bytes_up"] == 0 and r["flops"] == 0 for r in rows if r["client"] in gone)
    sc2 = build(config.load("configs/tiny.yaml", [*TINY, "rounds=1", f"algorithm.variant={variant}"]))
    configure = sc2.strategy.configure

    def without_the_dropped(rnd, state, devices):
        tasks = configure(rnd, state, devices)
        for cid in gone:
            tasks[cid].declined = "left out"
        return tasks

    sc2.strategy.configure = without_the_dropped
    again = Engine(sc2).run()
    a, b = out["state"], again["state"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in b)


def test_a_round_nobody_takes_part_in_leaves_the_model_unchanged():
    """Independent participation can leave a round empty: the round passes, it is not an error."""
    _, one = run(["rounds=1", "algorithm.participation=[0.05]"])
    _, two = run(["rounds=2", "algorithm.participation=[0.05]"])
    assert [r["accepted"] for r in two["ledger"].rounds] == [1, 0]  # this seed: one device, then nobody
    assert all(r["status"] == "dropped" and "sat out round 2" in r["reason"] for r in two["ledger"].clients[4:])
    assert all(torch.equal(one["state"][k], two["state"][k]) for k in one["state"])


def test_a_node_that_keeps_nothing_between_messages_trains_exactly_as_one_process():
    """On Flower a node may answer every message of a split round in a fresh process: it keeps
    only its carry (through Flower's records), recomputes the forward pass of the step whose
    gradient arrives, and ends with the same update as the device that kept its graph."""
    pytest.importorskip("flwr")
    from edgefm.fl.flower import _from_record, _to_record

    sc, _ = run(["rounds=1", "model.backbone_dropout=0.1"])  # dropout: the draws must replay too
    node = build(config.load("configs/tiny.yaml", [*TINY, "rounds=1", "model.backbone_dropout=0.1"]))
    state = sc.strategy.initial_state(sc.workbench)
    node.strategy.initial_state(node.workbench)
    devices = sc.devices
    tasks = sc.strategy.configure(1, state, devices)
    node.strategy.configure(1, state, devices)
    cid = 0
    whole = sc.strategy.client_update(tasks[cid], sc.workbench, sc.clients[cid], None)
    carry, down, messages = None, None, 0
    while True:  # the node on its own workbench; the server's half on sc's
        step, carry = node.strategy.client_step(tasks[cid], node.workbench, node.clients[cid], None, carry, down)
        messages += 1
        if step.update is not None:
            break
        carry = _from_record(_to_record(carry))
        down = _from_record(_to_record(sc.strategy.serve(tasks[cid], sc.workbench, _from_record(_to_record(step.up)))))
    relayed = sc.strategy.finish(tasks[cid], step.update)
    assert messages == whole.metrics["steps"] + 1 == 4
    assert relayed.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], rel=1e-6)
    assert (relayed.extra_bytes_up, relayed.extra_bytes_down) == (whole.extra_bytes_up, whole.extra_bytes_down)
    assert relayed.flops == whole.flops and relayed.server_flops == whole.server_flops
    assert all(torch.allclose(relayed.payload[k], whole.payload[k], atol=1e-6) for k in whole.payload)
    assert any(not torch.equal(whole.payload[k], tasks[cid].payload[k]) for k in whole.payload)  # it trained


def test_bfloat16_tensors_cross_flower_records_exactly():
    pytest.importorskip("flwr")
    from edgefm.fl.flower import _from_record, _to_record

    t = {"acts": torch.randn(3, 5).bfloat16(), "mask": torch.ones(3, 5, dtype=torch.uint8)}
    back = _from_record(_to_record(t))
    assert back["acts"].dtype == torch.bfloat16 and torch.equal(back["acts"], t["acts"])
    assert torch.equal(back["mask"], t["mask"])

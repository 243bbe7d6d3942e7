"""RaFFM on a tiny BERT: budgets, what travels, aggregation known answers, end to end."""

import json
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgefm import EdgefmError, config
from edgefm.algorithms.raffm import candidates, choose_spec
from edgefm.cli import app
from edgefm.edge.devices import TIERS
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
from edgefm.fl.strategy import ClientTask, ClientUpdate
from edgefm.models import elastic as E

# 1 ms per step: a tiny BERT step is ~0.3 GFLOP, so low-end phones fit nothing, flagships half, servers all
TINY = [
    "model.name=tiny_bert",
    "model.finetune=full",
    "data.max_train=200",
    "data.max_test=60",
    "data.max_length=24",
    "clients=5",
    "train.lr=0.003",
    "train.head_lr=0.01",
    "algorithm.name=raffm",
    "algorithm.step_budget_s=0.001",
    "edge.tiers={high_end_phone: 1, laptop: 1, embedded_gpu: 1, edge_server: 1, low_end_phone: 1}",
    "edge.jitter=0",
]
ARCH = E.Arch(6, 384, 12, 32, 1536, 30522, 512)  # MiniLM


def scenario(*extra):
    return build(config.load(None, [*TINY, *extra]))


def test_choose_spec_known_answers_for_minilm():
    phone, flagship = TIERS["low_end_phone"], TIERS["high_end_phone"]
    spec, why = choose_spec(ARCH, flagship, "elastic", 32, 64, 3.0, None)
    assert spec == E.Spec.full(ARCH) and why == ""
    spec, why = choose_spec(ARCH, phone, "elastic", 32, 64, 3.0, None)  # 6.3 s at full width
    assert why == "" and spec.ffn == (192,) * 6 and spec.qk == (32,) * 6
    spec, why = choose_spec(ARCH, phone, "heterofl", 32, 64, 3.0, None)
    assert why == "" and spec == E.Spec.uniform(ARCH, 0.25, 0.25)
    spec, why = choose_spec(ARCH, phone, "full", 32, 64, 3.0, None)
    assert spec == E.Spec.full(ARCH) and "cannot train" in why and "low_end_phone" in why
    # LoRA needs no weight gradients: the same phone affords a wider network
    lora, _ = choose_spec(ARCH, phone, "elastic", 32, 64, 3.0, 8)
    assert E.cost(ARCH, lora, 64, 1).params > E.cost(ARCH, spec.uniform(ARCH, 0.125, 1), 64, 1).params


@settings(max_examples=40, deadline=None)
@given(
    gflops=st.floats(1, 5000),
    mem_gb=st.floats(0.05, 16),
    budget=st.floats(0.1, 10),
    space=st.sampled_from(["elastic", "heterofl", "full"]),
)
def test_chosen_spec_fits_and_is_the_largest_that_does(gflops, mem_gb, budget, space):
    device = replace(TIERS["laptop"], flops_per_s=gflops * 1e9, memory_bytes=mem_gb * 2**30)
    spec, why = choose_spec(ARCH, device, space, 32, 64, budget, None)

    def fits(s):
        c = E.cost(ARCH, s, 64, 32)
        return c.memory_bytes <= device.memory_bytes and 32 * c.flops_per_example / device.flops_per_s <= budget

    options = candidates(ARCH, space)
    if why:
        assert not any(fits(s) for s in options) and spec == options[-1]
    else:
        assert fits(spec)
        assert all(E.cost(ARCH, s, 64, 1).params <= E.cost(ARCH, spec, 64, 1).params for s in options if fits(s))


def test_configure_sizes_payloads_to_devices_and_drops_the_unfit():
    sc = scenario()
    s = sc.strategy
    state = s.initial_state(sc.workbench)
    assert not any(k.startswith("encoder.embeddings.") for k in state)  # frozen, never sent
    tasks = s.configure(1, state, sc.devices)
    by_tier = {d.tier: tasks[d.device_id] for d in sc.devices}
    assert "cannot train" in by_tier["low_end_phone"].declined and by_tier["low_end_phone"].payload == {}
    assert by_tier["high_end_phone"].declined == ""
    size = {t: sum(v.numel() for v in task.payload.values()) for t, task in by_tier.items()}
    assert size["edge_server"] == sum(v.numel() for v in state.values())
    assert size["high_end_phone"] < size["laptop"] <= size["edge_server"]
    with pytest.raises(EdgefmError, match="cannot train"):
        s.client_update(by_tier["low_end_phone"], sc.workbench, sc.clients[0], None)


def _updates(s, state, specs, values, counts):
    """Hand-made updates: client k sends its slice of ``state`` filled with ``values[k]``."""
    tasks, updates = {}, []
    for cid, (spec, v, n) in enumerate(zip(specs, values, counts, strict=True)):
        payload = E.slice_state(state, spec, s.arch)
        tasks[cid] = ClientTask(cid, 1, payload, {"spec": spec.to_list()})
        up = {k: torch.full_like(t, v) for k, t in payload.items() if k in s.trained_keys}
        updates.append(ClientUpdate(cid, 1, up, num_examples=n, flops=0.0))
    return tasks, updates


@pytest.mark.parametrize("rule", ["coverage", "participants", "official"])
def test_aggregation_known_answers_from_a_nonzero_state(rule):
    """Client 0 trains half the widths (values 1, 1 example), client 1 everything (values 3,
    3 examples); the previous global value is 10 everywhere, so each rule's treatment of the
    coordinates only client 1 trained shows."""
    sc = scenario("algorithm.salience=none", f"algorithm.aggregation={rule}")
    s = sc.strategy
    state = {k: torch.full_like(v, 10.0) for k, v in s.initial_state(sc.workbench).items()}
    half = E.Spec((32, 32), (8, 8))  # FFN 64 -> 32, Q/K 16 -> 8 per head
    tasks, updates = _updates(s, state, [half, E.Spec.full(s.arch)], [1.0, 3.0], [1, 3])
    out = s.aggregate(1, state, updates, tasks).state
    w1 = out["encoder.encoder.layer.0.intermediate.dense.weight"]
    q = out["encoder.encoder.layer.1.attention.self.query.weight"]  # head 0: rows 0-15, head 1: 16-31
    v = out["encoder.encoder.layer.0.attention.self.value.weight"]  # fixed: both clients trained it
    both, only_client1 = {
        "coverage": (2.5, 3.0),  # sample-weighted over the clients that trained a coordinate
        "participants": (2.0, 6.5),  # plain mean of full-size models: the previous 10 stands in for client 0
        "official": (2.0, 1.5),  # zeroed, then every slice added over M = 2: 3 / 2
    }[rule]
    assert torch.all(w1[:32] == both) and torch.all(w1[32:] == only_client1)
    assert torch.all(q[:8] == both) and torch.all(q[8:16] == only_client1)
    assert torch.all(q[16:24] == both) and torch.all(q[24:32] == only_client1)
    assert torch.all(v == (2.5 if rule == "coverage" else 2.0))


def test_official_rule_keeps_tensors_nobody_sends():
    """Under LoRA the frozen elastic weights travel down but never up: zeroing them would erase the model."""
    sc = scenario("model.finetune=lora", "algorithm.salience=none", "algorithm.aggregation=official")
    s = sc.strategy
    state = s.initial_state(sc.workbench)
    tasks, updates = _updates(s, state, [E.Spec.full(s.arch)] * 2, [1.0, 3.0], [1, 1])
    frozen = [
        "encoder.encoder.layer.0.attention.self.query.base_layer.weight",
        "encoder.encoder.layer.0.intermediate.dense.weight",
    ]
    assert all(k in state and k not in updates[0].payload for k in frozen)
    out = s.aggregate(1, state, updates, tasks).state
    assert all(torch.equal(out[k], state[k]) and state[k].abs().sum() > 0 for k in frozen)
    lora = next(k for k in updates[0].payload if "lora_B" in k)
    assert torch.all(out[lora] == 2.0)


def test_bad_updates_are_rejected_not_merged():
    sc = scenario("algorithm.salience=none")
    s = sc.strategy
    state = s.initial_state(sc.workbench)
    half = E.Spec((32, 32), (8, 8))
    tasks, updates = _updates(s, state, [half, half, half], [1.0, 2.0, 3.0], [1, 1, 1])
    key = "encoder.encoder.layer.0.intermediate.dense.weight"
    updates[1].payload[key] = torch.full((64, 32), 2.0)  # a full-size tensor for a half-width task
    updates[2].payload[key] = updates[2].payload[key] * float("nan")
    result = s.aggregate(1, state, updates, tasks)
    assert set(result.rejected) == {1, 2}
    assert torch.allclose(result.state[key][:32], torch.tensor(1.0))


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_rounds_charge_less_to_smaller_subnetworks(finetune):
    sc = scenario("rounds=2", f"model.finetune={finetune}", "algorithm.unfit=force")
    out = Engine(sc).run()
    rows = [r for r in out["ledger"].clients if r["round"] == 1]
    assert all(r["status"] == "ok" for r in rows)
    tier = {d.device_id: d.tier for d in sc.devices}
    by = {tier[r["client"]]: r for r in rows}
    per_ex = {t: r["flops"] / r["num_examples"] for t, r in by.items()}
    assert per_ex["low_end_phone"] < 0.8 * per_ex["edge_server"]  # forced onto the smallest subnetwork
    assert per_ex["low_end_phone"] <= per_ex["high_end_phone"] <= per_ex["edge_server"]
    assert by["low_end_phone"]["client_over_budget"] == 1 and by["edge_server"]["client_over_budget"] == 0
    if finetune == "full":
        assert by["high_end_phone"]["bytes_up"] < by["edge_server"]["bytes_up"]
    else:  # LoRA: elastic frozen weights come down, only adapters and head go up
        assert by["edge_server"]["bytes_up"] < by["edge_server"]["bytes_down"] / 4
    # the global model is still the full width, in salience order
    s = sc.strategy
    assert out["state"]["encoder.encoder.layer.0.output.dense.weight"].shape == (32, 64)
    again = E.reorder(out["state"], s.arch, lora_scaling=s.scaling)  # stable: an ordered state maps to itself
    assert all(torch.equal(again[k], v) for k, v in out["state"].items())


def test_same_seed_same_numbers_and_drop_leaves_a_ledger_row():
    a = Engine(scenario("rounds=1")).run()
    b = Engine(scenario("rounds=1")).run()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    dropped = [r for r in a["ledger"].clients if r["status"] == "dropped"]
    assert dropped and all("cannot train" in r["reason"] and r["bytes_down"] == 0 for r in dropped)


def test_cli_train_then_export(tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    sets = [a for o in [*TINY, "rounds=2"] for a in ("--set", o)]
    result = runner.invoke(app, ["train", "--out", str(run_dir), *sets])
    assert result.exit_code == 0, result.output
    out = tmp_path / "export.json"
    result = runner.invoke(app, ["export", str(run_dir), "--budget", "laptop", "--budget", "full", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["models"]
    laptop, full = rows
    assert laptop["budget"] == "laptop" and full["budget"] == "full"
    assert laptop["params"] < full["params"] and laptop["flops_per_example"] < full["flops_per_example"]
    assert laptop["ffn_width"] == [56, 56] and laptop["qk_width"] == [16, 16] and laptop["fits"]
    assert abs(full["accuracy"] - json.loads((run_dir / "summary.json").read_text())["final_accuracy"]) < 1e-9
    # the run was trained with SPP, so reordering again before cutting changes no weight (idempotent)
    from edgefm.fl import trained

    run = trained.open_run(run_dir)
    s, wb, state = run.scenario.strategy, run.scenario.workbench, run.ckpt.state
    plain = {k: v.detach().clone() for k, v in s.export(wb, state, None, "laptop")[0].state_dict().items()}
    spp = s.export(wb, state, None, "laptop", reorder="weight")[0].state_dict()
    assert plain.keys() == spp.keys() and all(torch.equal(plain[k], spp[k]) for k in plain)
    unordered = {k: v.flip(0) if E.rule(k) and E.rule(k)[2] == 0 else v for k, v in state.items()}
    cut = s.export(wb, unordered, None, "laptop")[0].state_dict()
    assert any(not torch.equal(plain[k], cut[k]) for k in plain)  # so the comparison can tell
    bad = runner.invoke(app, ["export", str(run_dir), "--budget", "toaster"])
    assert bad.exit_code == 2 and "toaster" in bad.output and "Traceback" not in bad.output

    # the laptop's subnetwork as a folder plain transformers loads: padded back with zeros into
    # the shapes its config builds (FFN 56 wide, Q/K rows zero beyond 16 of 64), the same outputs
    from safetensors.torch import load_file
    from transformers import AutoModel

    folders = tmp_path / "hf"
    result = runner.invoke(app, ["export", str(run_dir), "--budget", "laptop", "--out", str(folders)])
    assert result.exit_code == 0, result.output
    folder = folders / "global-laptop"
    meta = json.loads((folder / "edgefm.json").read_text())
    assert meta["subnetwork"]["ffn_width"] == [56, 56] and meta["subnetwork"]["qk_width"] == [16, 16]
    encoder = AutoModel.from_pretrained(folder).eval()
    assert encoder.config.intermediate_size == 56
    sub = s.export(wb, state, None, "laptop")[0].eval()
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.as_tensor(x[:16]) for x in run.scenario.test.ids[:4]], batch_first=True
    )
    mask = (ids != run.scenario.test.pad_id).long()
    head = load_file(str(folder / "classifier.safetensors"))
    with torch.no_grad():
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(pooled @ head["weight"].T + head["bias"], sub(ids, mask), atol=1e-5, rtol=1e-5)
    refused = runner.invoke(
        app, ["export", str(run_dir), "--budget", "laptop", "--adapter", "--out", str(tmp_path / "a")]
    )
    assert refused.exit_code == 2 and "--adapter: a subnetwork cut below full" in refused.output

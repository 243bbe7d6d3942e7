"""DeepFusion (arXiv 2602.14301): View-Aligned Attention, Phase I clustering, the Phase III MoE
assembly, the one-shot ledger, the CLI end to end and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgefm import config
from edgefm.algorithms.deepfusion import EMBEDDING, allocate, kmeans
from edgefm.cli import app
from edgefm.fl.scenario import build
from edgefm.fl.strategy import ClientTask, ClientUpdate
from edgefm.models import causal, distill
from edgefm.models import families as F
from edgefm.models import moe as MoE
from edgefm.models.vaa import LinearAlignment, ViewAlignedAttention, feature_loss, pool, stage_layers

# 6 devices of two families (Llama and GPT-2, size s), BBC News, a quarter of the text public;
# every phase a few steps, so the whole one-shot round runs in seconds.
TINY = [
    "task=lm",
    "model.name=llama",
    "model.families=[llama, gpt2]",
    "model.sizes=[s]",
    "model.finetune=full",
    "data.name=bbcnews",
    "data.max_train=80",
    "data.max_test=6",
    "data.tokenizer=bpe:600",
    "data.block_length=24",
    "data.public_fraction=0.25",
    "clients=6",
    "rounds=1",
    "train.batch_size=8",
    "train.lr=0.003",
    "algorithm.name=deepfusion",
    "algorithm.experts=3",
    "algorithm.local_steps=4",
    "algorithm.distill_steps=3",
    "algorithm.merge_steps=2",
    "algorithm.stages=2",
    "algorithm.patches=8",
    "algorithm.vaa_width=32",
]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# ----------------------------------------------------------------------------- VAA


def test_stage_layers_split_the_depth_evenly():
    assert stage_layers(4, 4) == [1, 2, 3, 4]
    assert stage_layers(6, 4) == [2, 3, 4, 6]
    assert stage_layers(2, 1) == [2]
    with pytest.raises(ValueError):
        stage_layers(2, 3)


def test_pool_averages_real_tokens_of_each_span():
    h = torch.arange(8.0).view(1, 8, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    got = pool(h, mask, 2)[0, :, 0]
    assert got.tolist() == [1.5, 4.5]  # (0+1+2+3)/4, (4+5)/2: the padding never counts


@pytest.mark.parametrize("kind", [ViewAlignedAttention, LinearAlignment])
def test_alignment_shapes_and_gradients_across_widths_and_depths(kind):
    """A 2-layer Llama (width 128) learns to match a 4-layer GPT-2 (width 192): the aligned
    features have the teacher's width at each stage, and the loss reaches the student and the
    alignment, never the teacher."""
    torch.manual_seed(0)
    student = causal.build(F.spec("llama", "s", 300, 64), 0, 1, seed=0)
    teacher = causal.build(F.spec("gpt2", "m", 300, 64), 0, 1, seed=1)
    assert student.lm.config.num_hidden_layers != teacher.lm.config.num_hidden_layers
    assert student.lm.config.hidden_size != teacher.lm.config.hidden_size
    ids = torch.randint(2, 300, (3, 16))
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    stages = 2
    _, s_feats = distill.forward_with_stages(student, ids, mask, stages)
    with torch.no_grad():
        _, t_feats = distill.forward_with_stages(teacher, ids, mask, stages)
    s_w, t_w = [student.lm.config.hidden_size] * stages, [teacher.lm.config.hidden_size] * stages
    align = kind(s_w, t_w, patches=8, width=32, heads=4)
    out = align(s_feats, mask)
    assert [tuple(o.shape) for o in out] == [(3, 4, t_w[0])] * stages  # P = Pq / J = 4 positions
    loss = feature_loss(out, t_feats, mask)
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in align.parameters())
    assert student.lm.model.embed_tokens.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_vaa_attends_across_stages():
    """Perturbing stage 1's features moves VAA's stage-2 output (attention mixes the stages);
    the linear ablation keeps them apart."""
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 16), torch.randn(2, 8, 16)]
    mask = torch.ones(2, 8)
    moved = [feats[0] + 1.0, feats[1]]
    vaa = ViewAlignedAttention([16, 16], [24, 24], patches=4, width=8, heads=2)
    lin = LinearAlignment([16, 16], [24, 24], patches=4)
    assert not torch.allclose(vaa(feats, mask)[1], vaa(moved, mask)[1])
    assert torch.equal(lin(feats, mask)[1], lin(moved, mask)[1])


def test_distillation_losses_known_answers():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])
    ids, mask = torch.tensor([[0, 1, 2]]), torch.ones(1, 3)
    assert distill.kl_loss(logits, logits, mask).item() == pytest.approx(0.0, abs=1e-7)
    teacher = torch.zeros_like(logits)
    p = torch.softmax(logits[0, :2], -1)
    want = (p * (p.log() - torch.log(torch.full_like(p, 1 / 3)))).sum(-1).mean()
    assert distill.kl_loss(teacher, logits, mask).item() == pytest.approx(want.item(), rel=1e-5)
    target = distill.topk_target(logits, 1)
    assert target[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert distill.target_loss(logits, target, mask).item() == pytest.approx(
        -torch.log_softmax(logits[0, :2], -1)[[0, 1], [0, 1]].mean().item(), rel=1e-6
    )
    # OFA with eps = 1: (p_t + y) - y = p_t, the plain soft cross-entropy against the teacher
    soft = -(torch.softmax(teacher[0, :2], -1) * torch.log_softmax(logits[0, :2], -1)).sum(-1).mean()
    assert distill.ofa_loss(logits, teacher, ids, mask).item() == pytest.approx(soft.item(), rel=1e-6)


# ----------------------------------------------------------------------------- Phase I


def test_allocate_shares_experts_in_proportion():
    assert allocate(4, [4, 2]) == [3, 1]
    assert allocate(2, [5, 1]) == [1, 1]  # every group at least one
    assert allocate(5, [2, 9]) == [1, 4]  # 0.9 and 4.1: largest remainder
    assert allocate(4, [2, 2]) == [2, 2]  # never more clusters than members
    assert sum(allocate(7, [3, 3, 3])) == 7


def test_kmeans_finds_separated_domains_and_is_seeded():
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, generator=rng) * 0.01 + torch.tensor([1.0, 0, 0, 0])
    b = torch.randn(5, 4, generator=rng) * 0.01 + torch.tensor([0, 1.0, 0, 0])
    x = torch.cat([a, b]).numpy()
    labels = kmeans(x, 2, seed=3)
    assert len(set(labels[:5])) == 1 and len(set(labels[5:])) == 1 and labels[0] != labels[5]
    assert kmeans(x, 2, seed=3).tolist() == labels.tolist()


@pytest.fixture(scope="module")
def scenario():
    return build(config.load(None, TINY))


@settings(max_examples=25, deadline=None)
@given(
    archs=st.lists(st.sampled_from(["llama-s", "gpt2-s", "qwen3-s"]), min_size=3, max_size=12),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_phase_one_never_puts_two_architectures_in_one_cluster(scenario, archs, k, seed):
    strategy = scenario.strategy
    n_archs = len(set(archs))
    k = max(n_archs, min(k, len(archs)))
    strategy.algo = type(strategy.algo)(**{**strategy.algo.__dict__, "experts": k})
    gen = torch.Generator().manual_seed(seed)
    updates = [ClientUpdate(i, 1, {EMBEDDING: torch.randn(384, generator=gen)}, 10, 0.0) for i in range(len(archs))]
    tasks = {i: ClientTask(i, 1, {}, arch=a) for i, a in enumerate(archs)}
    clusters = strategy.cluster(updates, tasks)
    assert len(clusters) == k
    assert sorted(c for _, members in clusters for c in members) == list(range(len(archs)))  # a partition
    for arch, members in clusters:
        assert members and {archs[c] for c in members} == {arch}


# ----------------------------------------------------------------------------- Phase III


def dense(seed: int) -> causal.CausalLM:
    return causal.build(F.spec("qwen3", "s", 300, 64), 0, 1, seed=seed)


def test_identical_students_make_a_moe_that_is_the_dense_model_whatever_the_router():
    m = dense(0).eval()
    moe = MoE.assemble([m, m, m], F.parse(F.moe_name("s", 3), 300, 64), 0, 1, seed=5).eval()
    ids = torch.randint(2, 300, (2, 20))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = m(ids, mask)
        for name in MoE.router_parameters(moe):  # any router at all
            moe.get_parameter(name).normal_(0, 3.0)
        got = moe(ids, mask)
    assert torch.allclose(got, want, atol=1e-5)


def test_expert_i_is_student_i_and_the_rest_is_their_mean():
    ms = [dense(s) for s in (0, 1, 2)]
    moe = MoE.assemble(ms, F.parse(F.moe_name("s", 3), 300, 64), 0, 1, seed=5)
    state, students = moe.state_dict(), [m.state_dict() for m in ms]
    for layer in range(F.spec("qwen3", "s", 300, 64).layers):
        p = f"lm.model.layers.{layer}.mlp."
        gate_up, down = state[p + "experts.gate_up_proj"], state[p + "experts.down_proj"]
        for i, s in enumerate(students):
            assert torch.equal(gate_up[i], torch.cat([s[p + "gate_proj.weight"], s[p + "up_proj.weight"]]))
            assert torch.equal(down[i], s[p + "down_proj.weight"])
    for name in ("lm.model.embed_tokens.weight", "lm.model.layers.1.self_attn.q_proj.weight", "lm.lm_head.weight"):
        assert torch.allclose(state[name], sum(s[name] for s in students) / 3, atol=1e-7)
    assert set(MoE.expert_parameters(moe)) and not set(MoE.expert_parameters(moe)) & set(MoE.router_parameters(moe))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("df") / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(run), *sets(TINY)])
    assert result.exit_code == 0, result.output
    return run


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_one_upload_per_device_and_nothing_downloaded(trained):
    clients, rounds = lines(trained / "clients.jsonl"), lines(trained / "metrics.jsonl")
    assert len(rounds) == 1 and rounds[0]["bytes_down"] == 0
    assert sorted(c["client"] for c in clients) == list(range(6)) and all(c["status"] == "ok" for c in clients)
    vocab = 600
    for c in clients:  # the whole device model and the 384-dimensional embedding, float32
        total, _ = F.param_counts(F.parse(c["arch"], vocab, 512))
        assert c["bytes_down"] == 0 and c["bytes_up"] == 4 * (total + 384)
    assert {c["arch"] for c in clients} == {"llama-s", "gpt2-s"}
    r = rounds[0]
    assert r["clusters"] == 3 and sum(r[f"cluster_{i}_devices"] for i in range(3)) == 6
    assert all(r[f"server_s_phase{k}"] > 0 for k in (1, 2, 3))


def test_everyone_ends_with_the_moe_and_it_generates(trained):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(trained), "--out", str(trained.parent / "e.json")])
    assert result.exit_code == 0, result.output
    (model,) = json.loads((trained.parent / "e.json").read_text())["models"]
    total, _ = F.param_counts(F.parse(F.moe_name("s", 3), 600, 512))
    assert model["params"] == total
    last = lines(trained / "metrics.jsonl")[-1]
    assert model["log_ppl"] == pytest.approx(last["log_ppl"], abs=1e-9)
    texts = [runner.invoke(app, ["generate", str(trained), "--prompt", "the", "--seed", "1"]) for _ in range(2)]
    assert texts[0].exit_code == 0 and texts[0].output == texts[1].output


def test_same_seed_same_moe(trained, tmp_path):
    again = tmp_path / "again"
    result = CliRunner().invoke(app, ["train", "--out", str(again), *sets(TINY)])
    assert result.exit_code == 0, result.output
    assert lines(again / "metrics.jsonl")[0]["log_ppl"] == lines(trained / "metrics.jsonl")[0]["log_ppl"]


@pytest.mark.parametrize("distill_kind", ["linear", "fedmkt", "ofa"])
def test_baselines_and_ablations_run_on_the_same_path(distill_kind):
    from edgefm.fl.simulation import Engine

    sc = build(config.load(None, [*TINY, f"algorithm.distill={distill_kind}"]))
    out = Engine(sc).run()
    (r,) = out["ledger"].rounds
    assert r["bytes_down"] == 0 and r["clusters"] == 3 and r["log_ppl"] > 0


def test_no_clustering_gives_one_proxy_per_architecture(scenario):
    strategy = scenario.strategy
    strategy.algo = type(strategy.algo)(**{**strategy.algo.__dict__, "clustering": "none", "experts": 3})
    updates = [ClientUpdate(i, 1, {EMBEDDING: torch.zeros(384)}, 10, 0.0) for i in range(4)]
    tasks = {i: ClientTask(i, 1, {}, arch=("llama-s" if i < 3 else "gpt2-s")) for i in range(4)}
    assert strategy.cluster(updates, tasks) == [("gpt2-s", [3]), ("llama-s", [0, 1, 2]), ("gpt2-s", [3])]


def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path):
    cases = [
        (["algorithm.experts=7"], "algorithm.experts: 7"),
        (["model.families=[llama, mamba]"], "mamba"),
        (["data.public_fraction=0"], "data.public_fraction"),
        (["rounds=2"], "rounds: 2"),
        (["model.finetune=lora"], "model.finetune"),
        (["model.sizes=[m]", "edge.memory_scale=0.02"], "device 2 fits no model"),
    ]
    for extra, fragment in cases:
        out = tmp_path / "run"
        result = CliRunner().invoke(app, ["train", "--out", str(out), *sets([*TINY, *extra])])
        lines_ = [x for x in result.output.strip().splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines_) == 1 and fragment in lines_[0], (extra, result.output)
        assert not out.exists()


@pytest.mark.slow
def test_on_flower_each_node_uploads_its_own_model_once(tmp_path):
    """The same one-shot round on Flower: every node trains and uploads once, nothing comes down,
    and the server's MoE is the in-process one."""
    pytest.importorskip("flwr")
    from edgefm.fl import flower_sim
    from edgefm.fl.simulation import Engine

    cfg = config.load(None, [*TINY, "flower.round_timeout=300"])
    inproc = Engine(build(cfg)).run()
    out = flower_sim.run_simulation(cfg, tmp_path)
    a, b = inproc["ledger"], out["ledger"]
    assert sorted((r["client"], r["arch"], r["bytes_up"], r["bytes_down"]) for r in b.clients) == sorted(
        (r["client"], r["arch"], r["bytes_up"], r["bytes_down"]) for r in a.clients
    )
    assert len(b.clients) == 6 and all(r["bytes_down"] == 0 and r["bytes_up"] > 0 for r in b.clients)
    # the same clusters; the MoE equal up to float rounding (a node trains on one thread, the
    # in-process engine on two: full-model steps and the distillation after them carry the ulps)
    assert [b.rounds[0][f"cluster_{i}_devices"] for i in range(3)] == [
        a.rounds[0][f"cluster_{i}_devices"] for i in range(3)
    ]
    assert b.rounds[0]["log_ppl"] == pytest.approx(a.rounds[0]["log_ppl"], abs=1e-4)


# ----------------------------------------------------------------------------- FedJETS baseline

JETS = [
    *[t for t in TINY if not t.startswith(("algorithm.", "model.")) and t != "rounds=1"],
    "rounds=2",
    "model.name=qwen3_moe",
    "model.experts=4",
    "model.sizes=[s]",
    "model.finetune=full",
    "algorithm.name=fedjets",
    "train.max_steps=3",
]


def test_fedjets_averages_each_expert_over_the_devices_that_trained_it():
    sc = build(config.load(None, JETS))
    strategy, state = sc.strategy, sc.strategy.initial_state(sc.workbench)
    tasks = strategy.configure(1, state, sc.devices[:2])
    assert [t.config["experts"] for t in tasks.values()] == [[0, 1], [2, 3]]  # first round: spread evenly
    assert tasks[0].arch == F.moe_name("s", 2) and tasks[0].memory_bytes > 0
    # device 0 trained experts 0 and 1 (all ones), device 1 experts 2 and 3 (all threes), 1:3 data
    updates = []
    for cid, value, n in ((0, 1.0, 10), (1, 3.0, 30)):
        payload = {k: torch.full_like(v, value) for k, v in tasks[cid].payload.items() if not k.startswith("full_")}
        payload["routing"] = torch.tensor([0.1, 0.2, 0.3, 0.4]) if cid == 0 else torch.tensor([0.5, 0.0, 0.4, 0.1])
        updates.append(ClientUpdate(cid, 1, payload, n, 0.0))
    out = strategy.merge(1, state, updates, tasks)
    up = "lm.model.layers.0.mlp.experts.gate_up_proj"
    assert torch.all(out[up][0] == 1.0) and torch.all(out[up][2] == 3.0)  # each expert: its own trainer
    assert torch.all(out["lm.model.layers.0.mlp.gate.weight"][3] == 3.0)  # and its router row
    assert torch.all(out["lm.model.embed_tokens.weight"] == 2.5)  # shared: (1 x 10 + 3 x 30) / 40
    assert strategy.round_metrics == {f"expert_{e}_devices": 1.0 for e in range(4)}
    # the next round, each device trains the experts its own text routed to most
    assert [t.config["experts"] for t in strategy.configure(2, out, sc.devices[:2]).values()] == [[2, 3], [0, 2]]


def test_fedjets_bytes_grow_with_rounds_and_the_slice_is_what_travels():
    from edgefm.fl.simulation import Engine

    sc = build(config.load(None, JETS))
    ledger = Engine(sc).run()["ledger"]
    assert [r["bytes_up"] for r in ledger.rounds] == [ledger.rounds[0]["bytes_up"]] * 2 > [0, 0]
    full, _ = F.param_counts(F.parse(F.moe_name("s", 4), 600, 512))
    sliced, _ = F.param_counts(F.parse(F.moe_name("s", 2), 600, 512))
    router = sum(v.numel() for k, v in sc.strategy.initial_state(sc.workbench).items() if k.endswith("gate.weight"))
    for c in ledger.clients:  # down: the 2-expert slice and the whole router; up: the slice and K numbers
        assert (c["bytes_down"], c["bytes_up"]) == (4 * (sliced + router), 4 * (sliced + 4))
    assert 4 * sliced < 4 * full


def test_the_centralized_upper_bound_trains_the_same_moe():
    """``model.experts`` gives centralized training (and FedJETS) the MoE DeepFusion assembles."""
    base = [t for t in TINY if not t.startswith(("algorithm.", "model."))]
    moe = [
        "model.name=qwen3_moe",
        "model.sizes=[s]",
        "model.experts=3",
        "model.finetune=full",
        "algorithm.name=centralized",
    ]
    sc = build(config.load(None, [*base, *moe]))
    assert sc.workbench.arch == F.moe_name("s", 3)
    # the datacenter holds every block of the devices' text (a document is several blocks)
    spread = build(config.load(None, [*base, *moe[:-1], "algorithm.name=fedavg"]))
    blocks = [x for c in spread.clients for x in c.train.ids]
    assert len(sc.clients) == 1 and len(sc.clients[0].train) == len(blocks) > len(sc.clients[0].train_index)
    assert sorted(map(tuple, sc.clients[0].train.ids)) == sorted(map(tuple, blocks))
    assert len(sc.clients[0].test) == sum(len(c.test) for c in spread.clients)
    total, _ = F.param_counts(F.parse(F.moe_name("s", 3), len(sc.workbench.tokenizer), 512))
    assert sum(p.numel() for p in sc.workbench.model.parameters()) == total
    with pytest.raises(config.ConfigError, match="model.experts: 3; only a qwen3_moe"):
        config.load(None, [*base, "model.name=llama", "model.experts=3", "algorithm.name=centralized"])
    with pytest.raises(config.ConfigError, match="fedjets trains one global MoE"):
        config.load(None, [*base, "model.name=llama", "algorithm.name=fedjets"])

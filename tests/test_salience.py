"""Data-aware salience (models/salience.py) and RaFFM's salience=activation: statistics by known
answer, ranking, combining clients of different widths, what travels, and export by ordering."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgefm import EdgefmError, config
from edgefm.cli import app
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
from edgefm.models import elastic as E
from edgefm.models import salience as S
from edgefm.models.backbones import TextClassifier, tiny_bert

# RaFFM on a tiny BERT where devices fit different widths (as in test_raffm.py)
TINY = [
    "model.name=tiny_bert",
    "model.finetune=full",
    "data.max_train=120",
    "data.max_test=60",
    "data.max_length=24",
    "clients=4",
    "algorithm.name=raffm",
    "algorithm.step_budget_s=0.001",
    "edge.tiers={high_end_phone: 1, laptop: 1, edge_server: 1, low_end_phone: 1}",
    "edge.jitter=0",
]


def _model():
    torch.manual_seed(0)
    return TextClassifier(tiny_bert(0).encoder, 32, 2).eval()


def _data(n=12, seq=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (n, seq), generator=g)
    lengths = torch.randint(3, seq + 1, (n,), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def test_query_and_key_statistics_by_known_answer():
    model = _model()
    ids, mask = _data()
    with torch.no_grad(), S.ActivationStats(model) as st:
        model(ids, mask)
    stats = st.means()
    with torch.no_grad():
        hidden = model.encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for i, layer in enumerate(model.encoder.encoder.layer):
        for kind in ("query", "key"):
            x = getattr(layer.attention.self, kind)(hidden[i]).abs() * mask[..., None]
            assert torch.allclose(stats[S.stat_key(i, kind)], x.sum((0, 1)) / mask.sum(), atol=1e-6)
    assert stats[S.stat_key(0, "ffn")].shape == (64,) and torch.all(stats[S.stat_key(0, "ffn")] >= 0)


def test_padding_never_counts():
    """One batch, or the same examples one at a time without padding: the same statistics."""
    model = _model()
    ids, mask = _data(6)
    with torch.no_grad(), S.ActivationStats(model) as together:
        model(ids, mask)
    with torch.no_grad(), S.ActivationStats(model) as apart:
        for row, m in zip(ids, mask, strict=True):
            n = int(m.sum())
            model(row[None, :n], m[None, :n])
    a, b = together.means(), apart.means()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert len(model._forward_hooks) == 0 and len(model._forward_pre_hooks) == 0  # hooks removed


def test_activation_order_keeps_the_function_and_ranks_by_the_data():
    model = _model()
    arch = E.Arch.of(model)
    ids, mask = _data()
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        before = model(ids, mask)
    with torch.no_grad(), S.ActivationStats(model) as st:
        model(ids, mask)
    stats = st.means()
    perms = S.activation_permutations(state, stats, arch)
    E.load_tensors(model, E.apply_permutations(state, perms))
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), before, atol=1e-5)  # a permutation: same function
    with torch.no_grad(), S.ActivationStats(model) as again:
        model(ids, mask)
    after = again.means()
    w2 = model.encoder.encoder.layer[0].output.dense.weight.abs().sum(0)
    ffn = after[S.stat_key(0, "ffn")] * w2
    assert torch.all(ffn[:-1] >= ffn[1:] - 1e-6)  # most salient on the data first
    qk = (after[S.stat_key(1, "query")] * after[S.stat_key(1, "key")]).view(arch.heads, arch.head_dim)
    assert torch.all(qk[:, :-1] >= qk[:, 1:] - 1e-6)
    # unmeasured coordinates (NaN) go last, in their order
    partial = dict(stats)
    partial[S.stat_key(0, "ffn")] = torch.cat([torch.full((32,), torch.nan), torch.arange(32.0)])
    p = S.activation_permutations(state, partial, arch)[(0, "ffn")]
    assert set(p[:32].tolist()) == set(range(32, 64)) and p[32:].tolist() == list(range(32))


def test_combining_clients_of_different_widths():
    arch = E.Arch(1, 8, 2, 4, 6, 10, 10)
    half, full = E.Spec((3,), (2,)), E.Spec.full(arch)
    a = {S.stat_key(0, "ffn"): torch.ones(3), S.stat_key(0, "query"): torch.ones(4)}
    b = {S.stat_key(0, "ffn"): torch.full((6,), 4.0), S.stat_key(0, "query"): torch.full((8,), 4.0)}
    out = S.combine([(a, half, 1.0), (b, full, 3.0)], arch)
    assert out[S.stat_key(0, "ffn")].tolist() == [3.25] * 3 + [4.0] * 3  # (1 + 12) / 4 where both measured
    assert out[S.stat_key(0, "query")].tolist() == [3.25, 3.25, 4, 4, 3.25, 3.25, 4, 4]  # per head
    out = S.combine([(a, half, 1.0)], arch)
    assert torch.isnan(out[S.stat_key(0, "ffn")][3:]).all() and not torch.isnan(out[S.stat_key(0, "ffn")][:3]).any()
    shapes = {k: v.shape for k, v in S.expected(half, arch).items()}
    assert shapes[S.stat_key(0, "ffn")] == (3,) and shapes[S.stat_key(0, "key")] == (4,)


def test_measure_counts_its_forward_flops():
    model = _model()
    sc = build(config.load(None, [*TINY, "algorithm.salience=activation", "algorithm.salience_examples=30"]))
    data = sc.clients[0].train
    from edgefm.models.flops import FlopModel

    stats, flops = S.measure(model, data, torch.device("cpu"), 30, FlopModel(model, train=False))
    assert flops > 0 and set(stats) == set(S.expected(E.Spec.full(E.Arch.of(model)), E.Arch.of(model)))
    _, none = S.measure(model, data, torch.device("cpu"), 30)
    assert none == 0.0
    small, fewer = S.measure(model, data, torch.device("cpu"), 5, FlopModel(model, train=False))
    assert 0 < fewer < flops and not all(torch.equal(small[k], stats[k]) for k in stats)


def test_raffm_with_activation_salience_sends_statistics_and_counts_them():
    runs = {}
    for salience in ("spp", "activation"):
        sc = build(config.load(None, [*TINY, "rounds=2", "algorithm.unfit=force", f"algorithm.salience={salience}"]))
        runs[salience] = (sc, Engine(sc).run())
    rows = {k: {(r["round"], r["client"]): r for r in out["ledger"].clients} for k, (_, out) in runs.items()}
    sc, out = runs["activation"]
    for key, row in rows["activation"].items():
        base = rows["spp"][key]
        assert row["status"] == "ok"
        ffn, qk = int(row["client_ffn_width"]), int(row["client_qk_width"])  # uniform over the 2 layers
        spec = E.Spec((ffn, ffn), (qk, qk))
        stat_bytes = sum(4 * v.numel() for v in S.expected(spec, sc.strategy.arch).values())
        assert row["bytes_up"] - base["bytes_up"] == stat_bytes  # the statistics, counted
        assert row["flops"] > base["flops"]  # the same shapes trained; the measuring pass on top
    assert np.isfinite(out["ledger"].rounds[-1]["accuracy"])
    # same seed, same numbers; and a different order from the weight-ordered run's
    again = Engine(build(config.load(None, [*TINY, "rounds=2", "algorithm.unfit=force",
                                            "algorithm.salience=activation"]))).run()  # fmt: skip
    assert all(torch.equal(again["state"][k], v) for k, v in out["state"].items())  # deterministic
    assert any(not torch.equal(runs["spp"][1]["state"][k], v) for k, v in out["state"].items())


def test_an_update_without_its_statistics_is_rejected():
    sc = build(config.load(None, [*TINY, "algorithm.salience=activation"]))
    s = sc.strategy
    state = s.initial_state(sc.workbench)
    spec = E.Spec.full(s.arch)
    from edgefm.fl.strategy import ClientTask, ClientUpdate

    task = ClientTask(0, 1, E.slice_state(state, spec, s.arch), {"spec": spec.to_list()})
    up = {k: v for k, v in task.payload.items() if k in s.trained_keys}
    result = s.aggregate(1, state, [ClientUpdate(0, 1, up, num_examples=3, flops=0.0)], {0: task})
    assert 0 in result.rejected
    with pytest.raises(EdgefmError, match="differential"):
        build(config.load(None, [*TINY, "algorithm.salience=activation", "privacy.noise_multiplier=1.0"]))


def test_export_by_ordering_and_width(tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    sets = [a for o in [*TINY, "rounds=1", "algorithm.salience=none"] for a in ("--set", o)]
    assert runner.invoke(app, ["train", "--out", str(run_dir), *sets]).exit_code == 0
    tables = {}
    for spp in ("", "weight", "activation"):
        out = tmp_path / f"{spp or 'none'}.json"
        args = ["export", str(run_dir), "--budget", "50%", "--budget", "full", "--out", str(out)]
        r = runner.invoke(app, args + (["--spp", spp] if spp else []))
        assert r.exit_code == 0, r.output
        tables[spp] = json.loads(out.read_text())["models"]
    for rows in tables.values():
        half, full = rows
        assert half["ffn_width"] == [32, 32] and half["qk_width"] == [8, 8] and half["params"] < full["params"]
    fulls = {round(rows[1]["accuracy"], 9) for rows in tables.values()}
    assert len(fulls) == 1  # ordering never changes the full model's function
    from edgefm.fl import trained

    run = trained.open_run(run_dir)
    s, wb, state = run.scenario.strategy, run.scenario.workbench, run.ckpt.state
    cuts = {o: s.export(wb, state, None, "50%", o, None, run.scenario.clients)[0].state_dict() for o in tables}
    key = "encoder.encoder.layer.0.intermediate.dense.weight"
    assert not torch.equal(cuts[""][key], cuts["activation"][key])
    assert not torch.equal(cuts["weight"][key], cuts["activation"][key])
    for bad, says in ((["--budget", "150%"], "150%"), (["--spp", "gradient"], "gradient")):
        r = runner.invoke(app, ["export", str(run_dir), *bad])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output

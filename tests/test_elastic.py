"""RaFFM's elastic model: SPP keeps the function, extraction really shrinks it, costs are right."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefm.config import LoraConfig
from edgefm.models import elastic as E
from edgefm.models.backbones import TextClassifier, tiny_bert
from edgefm.models.flops import count_flops
from edgefm.models.lora import add_lora


def model(lora: bool = False, seed: int = 0):
    b = tiny_bert(seed=seed, layers=2, hidden=32, heads=4)
    torch.manual_seed(seed)
    m = TextClassifier(b.encoder, 32, 3)
    if lora:
        m = add_lora(m, LoraConfig(r=4, alpha=8, target_modules=("query", "value", "dense")), ())
        with torch.no_grad():  # peft starts B at zero; make the adapters matter
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
    return m.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 5000, (4, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return ids, mask


def params(m):
    return {n: p.detach().clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("lora", [False, True])
def test_spp_preserves_outputs_and_reorders(lora):
    m, (ids, mask) = model(lora), inputs()
    with torch.no_grad():
        before = m(ids, mask)
    state = params(m)
    arch = E.Arch.of(m)
    reordered = E.reorder(state, arch, lora_scaling=2.0)
    assert sum(not torch.equal(state[k], reordered[k]) for k in state) >= 6  # it really permuted
    E.load_tensors(m, reordered)
    with torch.no_grad():
        assert torch.allclose(m(ids, mask), before, atol=1e-5)
    # every layer's FFN neurons now come in non-increasing salience, and SPP is idempotent
    for layer in range(arch.layers):
        base = f"encoder.encoder.layer.{layer}"
        w1 = _effective(reordered, f"{base}.intermediate.dense", 2.0)
        w2 = _effective(reordered, f"{base}.output.dense", 2.0)
        score = w1.abs().sum(1) + w2.abs().sum(0)
        assert torch.all(score[:-1] >= score[1:]) and score[0] > score[-1]
    again = E.reorder(reordered, arch, lora_scaling=2.0)
    assert all(torch.equal(again[k], reordered[k]) for k in state)


def _effective(state, prefix, scaling):
    """W + s * B A, written out here independently of the module under test."""
    w = state.get(f"{prefix}.weight", state.get(f"{prefix}.base_layer.weight"))
    a = [v for k, v in state.items() if k.startswith(f"{prefix}.lora_A.")]
    b = [v for k, v in state.items() if k.startswith(f"{prefix}.lora_B.")]
    return w + scaling * b[0] @ a[0] if a else w


def test_spp_orders_ffn_by_known_salience():
    arch = E.Arch(1, 2, 1, 2, 3, 10, 8)
    p = "encoder.encoder.layer.0"
    state = {
        f"{p}.attention.self.query.weight": torch.tensor([[1.0, 1.0], [5.0, 5.0]]),
        f"{p}.attention.self.key.weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
        f"{p}.intermediate.dense.weight": torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]),
        f"{p}.intermediate.dense.bias": torch.tensor([10.0, 30.0, 20.0]),
        f"{p}.output.dense.weight": torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]),
    }
    out = E.reorder(state, arch)
    # FFN scores 1, 3, 2.5 -> order 1, 2, 0; query/key scores (0.5+1, 5+1)/... -> coordinate 1 first
    assert out[f"{p}.intermediate.dense.bias"].tolist() == [30.0, 20.0, 10.0]
    assert out[f"{p}.output.dense.weight"][0].tolist() == [0.0, 0.5, 0.0]
    assert out[f"{p}.attention.self.query.weight"][0].tolist() == [5.0, 5.0]
    assert out[f"{p}.attention.self.key.weight"][0].tolist() == [0.0, 2.0]


def test_independent_qk_ranking_breaks_attention():
    m, (ids, mask) = model(), inputs()
    with torch.no_grad():
        # sharp attention (random init is near uniform), and Q/K saliences that disagree
        for layer in m.encoder.encoder.layer:
            layer.attention.self.query.weight.mul_(torch.linspace(5.0, 50.0, 32)[:, None])
            layer.attention.self.key.weight.mul_(torch.linspace(50.0, 5.0, 32)[:, None])
        before = m.pooled(ids, mask)
    joint = E.reorder(params(m), E.Arch.of(m))
    E.load_tensors(m, E.reorder(params(m), E.Arch.of(m), qk="independent"))
    with torch.no_grad():
        broken = m.pooled(ids, mask)
        E.load_tensors(m, joint)
        kept = m.pooled(ids, mask)
    assert torch.allclose(kept, before, atol=1e-4)
    assert (broken - before).abs().max() > 100 * (kept - before).abs().max() + 1e-2


@pytest.mark.parametrize("lora", [False, True])
def test_extract_full_is_identical_and_smaller_specs_shrink(lora):
    m, (ids, mask) = model(lora), inputs()
    for n, p in m.named_parameters():
        if n.startswith("encoder.embeddings."):
            p.requires_grad = False
    arch = E.Arch.of(m)
    with torch.no_grad():
        full = E.extract(m, E.Spec.full(arch), arch)(ids, mask)
        assert torch.equal(full, m(ids, mask))
    spec = E.Spec((16, 48), (2, 8))
    sub = E.extract(m, spec, arch).eval()
    shapes = {n: tuple(p.shape) for n, p in sub.named_parameters()}
    base = "" if not lora else "base_layer."
    assert shapes[f"encoder.encoder.layer.0.intermediate.dense.{base}weight"] == (16, 32)
    assert shapes[f"encoder.encoder.layer.0.output.dense.{base}weight"] == (32, 16)
    assert shapes[f"encoder.encoder.layer.0.attention.self.query.{base}weight"] == (4 * 2, 32)
    assert shapes["encoder.encoder.layer.1.attention.self.key.weight"] == (4 * 8, 32)
    assert shapes[
        "encoder.encoder.layer.1.attention.self.value.weight"
        if not lora
        else "encoder.encoder.layer.1.attention.self.value.base_layer.weight"
    ] == (32, 32)
    if lora:
        assert shapes["encoder.encoder.layer.0.attention.self.query.lora_B.default.weight"] == (8, 4)
        assert shapes["encoder.encoder.layer.0.intermediate.dense.lora_B.default.weight"] == (16, 4)
        assert shapes["encoder.encoder.layer.0.output.dense.lora_A.default.weight"] == (4, 16)
    with torch.no_grad():
        out = sub(ids, mask)
    assert out.shape == full.shape and torch.isfinite(out).all()
    # frozen embeddings are shared with the full model, never copied
    assert (
        sub.encoder.embeddings.word_embeddings.weight.data_ptr()
        == m.encoder.embeddings.word_embeddings.weight.data_ptr()
    )
    assert count_flops(sub, 16, train=False) < count_flops(m, 16, train=False)


def test_extract_matches_slice_state_and_scatter_round_trips():
    m = model()
    arch = E.Arch.of(m)
    spec = E.Spec((8, 64), (3, 8))
    state = params(m)
    sliced = E.slice_state(state, spec, arch)
    sub = E.extract(m, spec, arch)
    assert all(torch.equal(p, sliced[n]) for n, p in sub.named_parameters())
    key = "encoder.encoder.layer.0.attention.self.query.weight"
    zeros = torch.zeros_like(state[key])
    placed, mask = E.scatter(key, zeros, sliced[key], spec, arch)
    assert int(mask.sum()) == 4 * 3 * 32  # 3 of 8 coordinates in each of 4 heads
    assert torch.equal(placed[mask], state[key][mask]) and not placed[~mask].any()
    assert mask[0:3].all() and not mask[3:8].any() and mask[8:11].all()


def test_cost_counts_params_exactly_and_flops_closely():
    m = model()
    for n, p in m.named_parameters():
        if n.startswith("encoder.embeddings."):
            p.requires_grad = False
    arch = E.Arch.of(m)
    for spec in (E.Spec.full(arch), E.Spec((16, 48), (2, 8))):
        sub = E.extract(m, spec, arch)
        c = E.cost(arch, spec, seq_len=16, batch=1)
        head = sum(p.numel() for n, p in sub.named_parameters() if n.startswith("head."))
        assert c.params == sum(p.numel() for p in sub.parameters()) - head
        measured = count_flops(sub, 16, train=True)
        assert 0.8 * measured < c.flops_per_example < 1.25 * measured


@settings(max_examples=30, deadline=None)
@given(f=st.lists(st.integers(1, 64), min_size=2, max_size=2), q=st.lists(st.integers(1, 8), min_size=2, max_size=2))
def test_cost_is_monotone_in_every_width(f, q):
    arch = E.Arch(2, 32, 4, 8, 64, 100, 64)
    base = E.cost(arch, E.Spec(tuple(f), tuple(q)), 32, 8)
    for layer in range(2):  # one more FFN neuron, or one more Q/K coordinate, in any one layer
        wider = []
        if f[layer] < 64:
            g = list(f)
            g[layer] += 1
            wider.append(E.Spec(tuple(g), tuple(q)))
        if q[layer] < 8:
            r = list(q)
            r[layer] += 1
            wider.append(E.Spec(tuple(f), tuple(r)))
        for spec in wider:
            c = E.cost(arch, spec, 32, 8)
            assert c.params > base.params and c.flops_per_example > base.flops_per_example
            assert c.memory_bytes >= base.memory_bytes
    with pytest.raises(ValueError):
        E.Spec((0, 1), (1, 1)).check(arch)


@pytest.mark.parametrize("lora", [False, True])
def test_a_cut_model_padded_back_is_a_plain_bert_computing_the_same_function(lora):
    """What ``export --budget`` writes for RaFFM: zero Q/K rows and zero FFN neurons restore the
    architecture the config builds without changing a single output; the FFN is as wide as the
    widest layer."""
    from edgefm.models.hf_export import unload_lora

    m, (ids, mask) = model(lora), inputs()
    arch = E.Arch.of(m)
    spec = E.Spec((16, 48), (2, 8))
    sub = E.extract(m, spec, arch).eval()
    with torch.no_grad():
        want = sub(ids, mask)
    unload_lora(sub, merge=True)
    assert E.widths(sub) == spec
    padded = E.padded(sub).eval()
    assert type(padded.encoder) is type(m.encoder) and padded.encoder.config.intermediate_size == 48
    assert not any(isinstance(x, E.ElasticSelfAttention) for x in padded.modules())
    fresh = type(m.encoder)(padded.encoder.config, add_pooling_layer=False)  # the shapes its config builds
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in padded.encoder.state_dict().items()
    }
    q = padded.encoder.encoder.layer[0].attention.self.query.weight.view(4, 8, 32)
    assert q[:, 2:].abs().sum() == 0 and q[:, :2].abs().sum() > 0  # 2 of 8 coordinates per head kept
    with torch.no_grad():
        torch.testing.assert_close(padded(ids, mask), want)
        torch.testing.assert_close(sub(ids, mask), want)  # the cut model is untouched

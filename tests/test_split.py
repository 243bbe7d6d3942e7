"""Split learning's cut (PRINCE, arXiv 2503.04971): the device and edge parts composed are the
unsplit model, and one split step's gradients are the unsplit model's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.config import LoraConfig
from edgefm.data.encode import Batch
from edgefm.models import causal
from edgefm.models import families as F
from edgefm.models.backbones import TextClassifier, build_backbone
from edgefm.models.lora import add_lora
from edgefm.models.split import split, split_step


def classifier() -> TextClassifier:
    backbone = build_backbone("tiny_bert", seed=0)
    model = TextClassifier(backbone.encoder, backbone.hidden_size, 2, dropout=0.0)
    torch.manual_seed(1)
    model.head.reset_parameters()
    return model


def batch(vocab: int) -> Batch:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding on one row: the mask must travel with the activations
    return Batch(ids, mask, torch.tensor([0, 1, 1]))


def models():
    yield "tiny_bert", classifier(), lambda out, b: nn.functional.cross_entropy(out, b.labels)
    for family in ("llama", "qwen3"):
        lm = causal.build(F.spec(family, "m", 300, 64), 0, 1, seed=0)

        def lm_loss(out, b):
            valid = (b.attention_mask[:, 1:] > 0) & (b.attention_mask[:, :-1] > 0)
            return nn.functional.cross_entropy(out[:, :-1][valid], b.input_ids[:, 1:][valid])

        yield family, lm, lm_loss


@pytest.mark.parametrize("name", ["tiny_bert", "llama", "qwen3"])
def test_the_two_parts_composed_are_the_unsplit_model_at_every_cut(name):
    _, model, _ = next(m for m in models() if m[0] == name)
    model.eval()
    b = batch(300)
    with torch.no_grad():
        want = model(b.input_ids, b.attention_mask)
        layers = split(model, 1).layers
        for cut in range(1, layers):
            parts = split(model, cut)
            acts = parts.device(b.input_ids, b.attention_mask)
            assert acts.shape == (3, 12, parts.width)
            assert torch.allclose(parts.edge(acts, b.attention_mask), want, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_bert", "llama"])
def test_one_split_step_has_the_unsplit_models_gradients(name):
    _, model, loss_fn = next(m for m in models() if m[0] == name)
    model.train()
    b = batch(300)
    torch.manual_seed(7)  # the same dropout draws, in the same order, in both passes
    loss = loss_fn(model(b.input_ids, b.attention_mask), b)
    loss.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    got_loss, acts, grad = split_step(split(model, 1), b, loss_fn)
    assert got_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert grad.shape == acts.shape and grad.abs().sum() > 0
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6), n


def test_lora_adapters_on_both_sides_of_the_cut_train():
    lm = causal.build(F.spec("llama", "s", 300, 64), 0, 1, seed=0)
    model = add_lora(lm, LoraConfig(r=4, alpha=8, dropout=0.0), ("q_proj", "v_proj"))
    parts = split(model, 1)
    b = batch(300)
    _, _, _ = split_step(parts, b, lambda out, bb: out.float().pow(2).mean())
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert any("layers.0." in n and "lora_" in n for n in trained)  # on the device
    assert any("layers.1." in n and "lora_" in n for n in trained)  # on the edge


def test_bad_cuts_are_refused():
    lm = causal.build(F.spec("llama", "s", 300, 64), 0, 1, seed=0)
    for cut in (0, 2, 5):
        with pytest.raises(EdgefmError, match=f"split.cut: {cut}; expected 1 to 1"):
            split(lm, cut)
    with pytest.raises(EdgefmError, match="cannot cut a Linear"):
        split(nn.Linear(2, 2), 1)


def test_each_part_owns_exactly_its_own_parameters():
    """The device part registers the embedding and the blocks before the cut, the edge part the
    rest: disjoint, together every parameter (the state keys split learning sends are these)."""
    from edgefm.models.media import tiny_vit, tiny_whisper

    nets = [("tiny_bert", classifier(), "layer.")]
    for make in (tiny_vit, tiny_whisper):
        backbone = make(seed=0)
        nets.append((make.__name__, TextClassifier(backbone.encoder, backbone.hidden_size, 10, dropout=0.0), "layers."))
    nets += [(n, m, "layers.") for n, m, _ in models() if n != "tiny_bert"]
    for name, model, block in nets:
        everything = {id(p) for p in model.parameters()}
        parts = split(model, 1)
        device, edge = {id(p) for p in parts.device.parameters()}, {id(p) for p in parts.edge.parameters()}
        assert not device & edge and device | edge == everything, name
        names = {id(p): n for n, p in model.named_parameters()}
        blocks = {names[i].split(block)[1].split(".")[0] for i in device if block in names[i]}
        assert blocks == {"0"}, (name, blocks)  # one block on the device at cut 1

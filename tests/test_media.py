"""Images and audio (models/media.py, data/media.py): MNIST and spoken digits load as the tasks
expect, a ViT and a Whisper encoder cut in two are the unsplit model (outputs and gradients,
LoRA on both sides), the ledger counts their activations, and each trains through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgefm import EdgefmError, config
from edgefm.cli import app
from edgefm.config import LoraConfig
from edgefm.data import media
from edgefm.data.encode import Batch, Encoded
from edgefm.data.sources import data_dir, load_data
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
from edgefm.models.backbones import TextClassifier, build_backbone
from edgefm.models.lora import add_lora
from edgefm.models.split import split, split_step

SHAPES = {"tiny_vit": (784, 17), "tiny_whisper": (8000, 50)}  # input features, positions at the cut


def test_mnist_is_shuffled_and_held_out():
    cfg = config.load("configs/splitfed_mnist.yaml", ["data.max_train=null"]).data
    bundle = load_data(cfg, 0)
    assert bundle.modality == "image" and len(bundle.train) == 4000 and len(bundle.test) == 1000
    labels = np.array(bundle.train["label"][:200])
    assert len(set(labels)) == 10  # the package's order (sorted by label) is gone
    feats = media.image_features(build_backbone("tiny_vit").tokenizer, bundle.train["image"][:3])
    assert feats[0].shape == (784,) and feats[0].min() >= -1 and feats[0].max() <= 1
    raw = np.array(bundle.train["image"][0])
    assert np.allclose(feats[0], raw / 127.5 - 1, atol=1e-6)  # rescaled to [0, 1], then (x - 0.5) / 0.5


def test_fsdd_holds_out_takes_0_to_4_and_partitions_by_speaker():
    bundle = load_data(config.load("configs/splitfed_fsdd.yaml").data, 0)
    assert bundle.modality == "audio" and (len(bundle.train), len(bundle.test)) == (2700, 300)
    assert max(bundle.test["take"]) == 4 and min(bundle.train["take"]) == 5
    sc = build(config.load("configs/splitfed_fsdd.yaml", ["data.max_train=600", "data.max_test=30"]))
    speakers = [set(np.array(sc.bundle.train["speaker"])[c.train_index]) for c in sc.clients]
    assert all(len(s) == 1 for s in speakers) and len(set.union(*speakers)) == 6  # one speaker a device
    path = str(data_dir() / "fsdd/recordings/3_theo_10.wav")
    (feat,) = media.audio_features(build_backbone("tiny_whisper").tokenizer, [path])
    assert feat.shape == (8000,) and np.isfinite(feat).all() and feat.std() > 0.05


def test_a_text_model_on_images_is_refused():
    with pytest.raises(EdgefmError, match="model.name: minilm reads text; data mnist holds image"):
        build(config.load("configs/splitfed_mnist.yaml", ["model.name=minilm", "data.max_train=50"]))


def classifier(name: str) -> TextClassifier:
    backbone = build_backbone(name, seed=0)
    model = TextClassifier(backbone.encoder, backbone.hidden_size, 10, dropout=0.0)
    return add_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0), backbone.lora_targets)


def batch(name: str) -> Batch:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, SHAPES[name][0], generator=gen)
    return Encoded(list(feats.numpy()), np.array([1, 4, 7])).collate([0, 1, 2])


@pytest.mark.parametrize("name", ["tiny_vit", "tiny_whisper"])
def test_the_cut_composes_to_the_unsplit_model_with_its_gradients(name):
    model = classifier(name)
    b = batch(name)
    assert b.input_ids.dtype == torch.float32 and b.attention_mask.shape == (3, 1)
    with torch.no_grad():
        want = model(b.input_ids, b.attention_mask)
        for cut in (1, 2, 3):
            parts = split(model, cut)
            acts = parts.device(b.input_ids, b.attention_mask)
            assert acts.shape == (3, SHAPES[name][1], 64) and parts.positions == SHAPES[name][1]
            assert torch.allclose(parts.edge(acts, b.attention_mask), want, atol=1e-5)

    def loss_fn(out, bb):
        return nn.functional.cross_entropy(out, bb.labels)

    loss_fn(model(b.input_ids, b.attention_mask), b).backward()
    wanted = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    split_step(split(model, 2), b, loss_fn)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == wanted.keys()
    assert all(torch.allclose(got[n], wanted[n], atol=1e-6) for n in wanted)
    assert any("layers.0." in n and "lora_" in n for n in got)  # adapters on the device side
    assert any("layers.3." in n and "lora_" in n for n in got)  # and on the edge side


TINY = ["rounds=1", "train.max_steps=2", "train.batch_size=8", "data.max_test=40"]


@pytest.mark.parametrize(
    "path,extra",
    [("configs/splitfed_mnist.yaml", ["data.max_train=240"]), ("configs/splitfed_fsdd.yaml", ["data.max_train=240"])],
)
def test_activation_bytes_are_batch_x_positions_x_width(path, extra):
    sc = build(config.load(path, [*TINY, *extra]))
    out = Engine(sc).run()
    positions = 17 if "mnist" in path else 50
    for row in out["ledger"].clients:
        gen = sc.strategy.client_generator(1, row["client"])
        batches = list(sc.clients[row["client"]].train.batches(8, generator=gen, shuffle=True))[:2]
        want = sum(len(b.labels) * positions * 64 * 4 for b in batches)
        assert row["client_act_bytes_up"] == want and row["client_grad_bytes_down"] == want
        assert row["flops"] > 0 and row["server_flops"] > 0


GOLDEN = {"splitfed_mnist": 0.21, "splitfed_fsdd": 0.17}


@pytest.mark.parametrize("name", ["splitfed_mnist", "splitfed_fsdd"])
def test_each_media_tenant_trains_through_the_cli(tmp_path, name):
    sets = ["rounds=3", "train.max_steps=10", "data.max_train=600", "data.max_test=100", "train.lr=0.003"]
    sets.append("train.head_lr=0.003")
    args = ["train", f"configs/{name}.yaml", "--out", str(tmp_path / name)]
    res = CliRunner().invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["final_accuracy"] == pytest.approx(GOLDEN[name], abs=1e-9)
    assert summary["final_accuracy"] > 0.15  # above chance (0.1)

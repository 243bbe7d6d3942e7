"""Multi-exit heads on a transformer encoder, and the per-layer profile an edge market needs.

An exit after layer l mean-pools that layer's hidden states and applies a linear classifier
(the early-exit design of DeeBERT, Xin et al. ACL 2020, with MiniLM's mean pooling). Heads are
trained on frozen features, so one forward pass per example gives every exit's training data.
The profile (per-layer FLOPs counted by ``torch.utils.flop_counter`` at a fixed sequence length,
activation bytes, measured accuracy per exit) is written as JSON for ``market/workloads.py``:

    python -m edgefm.models.exits --out src/edgefm/market/data/minilm_sst2.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgefm.config import DataConfig
from edgefm.data.encode import Encoded, encode
from edgefm.data.sources import load_data
from edgefm.models.backbones import Backbone, minilm


@torch.no_grad()
def exit_features(backbone: Backbone, data: Encoded, batch_size: int = 64) -> list[torch.Tensor]:
    """Mean-pooled hidden states after every layer: a list (one per layer) of [N, hidden]."""
    enc = backbone.encoder.eval()
    per_layer: list[list[torch.Tensor]] = []
    order = []
    for batch, idx in _ordered_batches(data, batch_size):
        out = enc(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        mask = batch.attention_mask.unsqueeze(-1).float()
        pooled = [(h * mask).sum(1) / mask.sum(1).clamp_min(1.0) for h in out.hidden_states[1:]]
        if not per_layer:
            per_layer = [[] for _ in pooled]
        for k, p in enumerate(pooled):
            per_layer[k].append(p)
        order.append(torch.as_tensor(idx))
    inverse = torch.argsort(torch.cat(order))
    return [torch.cat(chunks)[inverse] for chunks in per_layer]


def _ordered_batches(data: Encoded, batch_size: int):
    idx = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(data), batch_size):
        chunk = idx[start : start + batch_size]
        yield data.collate(chunk), chunk


def train_head(x: torch.Tensor, y: torch.Tensor, classes: int, seed: int, epochs: int = 200) -> nn.Linear:
    """A linear exit head: full-batch AdamW on frozen features (standardised by the head's bias)."""
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def layer_flops(backbone: Backbone, seq_len: int) -> list[float]:
    """Inference FLOPs of each encoder layer for one sequence of ``seq_len`` tokens (one forward,
    read from the flop counter's per-module breakdown)."""
    enc = backbone.encoder.eval()
    ids = torch.full((1, seq_len), 100, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        enc(input_ids=ids, attention_mask=torch.ones_like(ids))
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    prefix = f"{type(enc).__name__}.encoder.layer."
    n = len(enc.encoder.layer)
    return [float(counts.get(f"{prefix}{k}", 0)) for k in range(n)]


def profile(
    seed: int = 0,
    train_examples: int = 4000,
    seq_len: int = 64,
    backbone: Backbone | None = None,
    data_name: str = "sst2",
) -> dict:
    """Train exit heads after every layer and measure accuracy, FLOPs and activation sizes."""
    backbone = backbone or minilm()
    bundle = load_data(DataConfig(name=data_name, max_train=train_examples, max_length=seq_len), seed)
    tok = backbone.tokenizer
    train = encode(bundle.train["text"], bundle.train["label"], tok, seq_len)
    test = encode(bundle.test["text"], bundle.test["label"], tok, seq_len)
    with torch.random.fork_rng(devices=[]):
        feats_train = exit_features(backbone, train)
        feats_test = exit_features(backbone, test)
    y_train, y_test = torch.as_tensor(train.labels), torch.as_tensor(test.labels)
    accuracy = []
    for k, (xt, xe) in enumerate(zip(feats_train, feats_test, strict=True)):
        head = train_head(xt, y_train, bundle.num_labels, seed + k)
        with torch.no_grad():
            accuracy.append(float((head(xe).argmax(-1) == y_test).float().mean()))
    flops = layer_flops(backbone, seq_len)
    n = len(flops)
    hidden = backbone.hidden_size
    return {
        "name": f"{backbone.name}_{data_name}",
        "layer_names": [f"layer{k}" for k in range(n)],
        "layer_flops": flops,
        "out_bytes": [1.0 * seq_len * hidden] * n,  # hidden states quantised to int8, as for the CNNs
        "input_bytes": 4.0 * seq_len,  # int32 token ids
        "exit_after": list(range(n)),
        "exit_accuracy": accuracy,
        "exit_flops": [2.0 * seq_len * hidden + 2.0 * hidden * bundle.num_labels] * n,  # pooling + linear
        "source": f"measured by edgefm.models.exits: {data_name} test accuracy per exit, seq_len={seq_len}, "
        f"{len(train)} training examples, seed {seed}",
    }


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-examples", type=int, default=4000)
    ap.add_argument("--seq-len", type=int, default=64)
    args = ap.parse_args()
    result = profile(args.seed, args.train_examples, args.seq_len)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("name", "exit_accuracy")}, indent=1))


if __name__ == "__main__":
    main()

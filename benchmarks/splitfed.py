"""Split federated fine-tuning evidence (issue 17): writes benchmarks/results/splitfed.{json,md}.

For each tenant (tiny ViT on MNIST, tiny Whisper encoder on spoken digits, MiniLM + LoRA on
SST-2, a tiny Llama on BBC News):
1. split training (SFL-V1, every device) against on-device FedAvg of the same model and the
   same fine-tuning mode: the task metric, the simulated seconds, the device's FLOPs and bytes
   per round, and the device's training memory (weights, gradients and AdamW state of what it
   trains plus the activations autograd keeps for one batch, measured with saved_tensors_hooks);
2. SFL-V2 (one edge part, device after device) at the same settings;
3. skewed participation: q_n = 0.9 for devices whose most common label is in the first half of
   the labels and 0.2 for the others, merged with Horvitz-Thompson weights (unbiased) or over
   whoever came (naive), over 3 seeds.

    python -m benchmarks.splitfed [--seeds 0 1 2] [--rounds 6] [--tenants vit_mnist ...]

``--tenants``: re-run only those; the others keep their rows from the last run.

Run folders are cached under benchmarks/results/runs/splitfed (``train_run``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from benchmarks._common import RESULTS, table, train_run, write
from edgefm import config
from edgefm.fl.scenario import build
from edgefm.models.split import split

RUNS = RESULTS / "runs" / "splitfed"
SKEW = RESULTS / "splitfed_skew.json"  # the skewed-participation table's rows
TENANTS = {
    "vit_mnist": ("configs/splitfed_mnist.yaml", ["data.max_train=3000", "algorithm.cut=2"], "accuracy"),
    "whisper_fsdd": ("configs/splitfed_fsdd.yaml", ["algorithm.cut=2"], "accuracy"),
    "minilm_sst2": (
        "configs/demo.yaml",
        ["algorithm.name=splitfed", "algorithm.cut=3", "clients=6", "data.max_train=2000", "data.max_test=500"],
        "accuracy",
    ),
    "llama_bbcnews": (
        "configs/lm_bbcnews.yaml",
        ["algorithm.name=splitfed", "algorithm.cut=1", "clients=6", "model.sizes=[s]", "data.max_test=80"],
        "log_ppl",
    ),
}


def memory(name: str, cut: int) -> dict:
    """Training memory of the device's part and of the whole model on one batch of 32."""
    path, base, _ = TENANTS[name]
    sc = build(config.load(path, [*base, "data.max_train=200", "data.max_test=20", "clients=2"]))
    model = sc.workbench.model.train()
    batch = sc.clients[0].train.collate(np.arange(min(32, len(sc.clients[0].train))))
    parts = split(model, cut)

    def measured(forward, module) -> float:
        params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        kept: dict[int, int] = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            forward()
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        return (16 * trainable + 4 * frozen + sum(kept.values())) / 2**20

    whole = measured(lambda: model(batch.input_ids, batch.attention_mask), model)
    device = measured(lambda: parts.device(batch.input_ids, batch.attention_mask), parts.device)
    return {"device_mib": device, "whole_mib": whole}


def per_round(summary: dict) -> dict:
    rounds = summary["rounds"]
    return {
        "sim s/round": summary["sim_seconds_per_round"],
        "device GFLOPs/round": summary["flops_per_round"] / 1e9,
        "MB up/round": summary["bytes_up"] / rounds / 1e6,
        "MB down/round": summary["bytes_down"] / rounds / 1e6,
    }


def metric(summary: dict, kind: str) -> float:
    return summary["final_accuracy"] if kind == "accuracy" else summary["final_log_ppl"]


def skewed_q(name: str) -> list[float]:
    """q_n = 0.9 where the device's most common label is in the first half of the labels, else 0.2."""
    path, base, _ = TENANTS[name]
    sc = build(config.load(path, [*base, "data.max_test=20"]))
    labels = len(sc.bundle.label_names)
    q = []
    for c in sc.clients:
        counts = np.bincount(np.asarray(c.train.labels), minlength=labels)
        q.append(0.9 if int(np.argmax(counts)) < labels / 2 else 0.2)
    return q


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tenants", nargs="+", default=list(TENANTS))
    args = ap.parse_args()
    # tenants not re-run keep their rows from the last run (e.g. after a fix that touches some)
    old = json.loads((RESULTS / "splitfed.json").read_text()) if (RESULTS / "splitfed.json").is_file() else {}
    old_skew = json.loads(SKEW.read_text()) if SKEW.is_file() else {}
    rows: list[dict] = []
    skew: list[dict] = []
    for name in TENANTS:
        if name not in args.tenants:
            rows += [r for r in old.get("rows", []) if r["tenant"] == name]
            skew += [r for r in old_skew.get("rows", []) if r["tenant"] == name]
            continue
        path, base, kind = TENANTS[name]
        cut = int(next(o for o in base if o.startswith("algorithm.cut=")).split("=")[1])
        common = [f"rounds={args.rounds}", "train.max_steps=10"]
        on_device = [o for o in base if not o.startswith("algorithm.")]  # the same model, no cut
        fed = train_run([*on_device, *common, "algorithm.name=fedavg"], RUNS / f"{name}-fedavg", config=path)
        v1 = train_run([*base, *common], RUNS / f"{name}-v1", config=path)
        v2 = train_run([*base, *common, "algorithm.variant=v2"], RUNS / f"{name}-v2", config=path)
        mem = memory(name, cut)
        for label, s, mib in (
            ("FedAvg (on-device)", fed, mem["whole_mib"]),
            ("split V1", v1, mem["device_mib"]),
            ("split V2", v2, mem["device_mib"]),
        ):
            rows.append(
                {
                    "tenant": name,
                    "method": label,
                    "metric": kind,
                    "value": metric(s, kind),
                    **per_round(s),
                    "sim s total": s["sim_seconds"],
                    "device train MiB": mib,
                }
            )
        q = skewed_q(name)
        qs = "[" + ",".join(str(x) for x in q) + "]"
        for agg in ("unbiased", "naive"):
            vals = []
            for seed in args.seeds:
                extra = [*common, f"seed={seed}", f"algorithm.participation={qs}", f"algorithm.aggregation={agg}"]
                vals.append(metric(train_run([*base, *extra], RUNS / f"{name}-{agg}-s{seed}", config=path), kind))
            skew.append(
                {
                    "tenant": name,
                    "aggregation": agg,
                    "metric": kind,
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals)),
                    "per seed": ", ".join(f"{v:.4f}" for v in vals),
                    "q": qs,
                }
            )
    notes = "\n".join(
        [
            "## Skewed participation (q_n = 0.9 or 0.2 by the device's majority label; SFL-V1)",
            "",
            *table(skew),
            "",
            "device train MiB: what the device holds to train: 16 bytes per trainable parameter (weight, gradient,",
            "AdamW moments), 4 per frozen one, plus the activations autograd kept for one batch of 32 (measured).",
            "Split V1 with every device trains exactly as FedAvg (tests/test_splitfed.py): the metric columns of the",
            "two agree, and the difference is where compute runs and what travels.",
        ]
    )
    SKEW.write_text(json.dumps({"rows": skew}, indent=2))
    meta = {"rounds": args.rounds, "max_steps": 10, "seeds": args.seeds}
    path = write("splitfed", "Split federated fine-tuning: four tenants", rows, meta, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()

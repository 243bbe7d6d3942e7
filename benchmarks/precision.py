"""The machine's FLOP limit and what training reaches of it, float32 against bfloat16 autocast
(issue 20, item 1). Writes benchmarks/results/precision.{json,md}.

1. Sustained matmul FLOP/s of this machine (torch, n x n matrices, this process's threads) in
   float32 and bfloat16.
2. A run (default: the demo, configs/demo.yaml: FedAvg-LoRA on MiniLM, SST-2, 10 clients, 5
   rounds) with ``train.precision`` fp32 and bf16, for each seed, side by side in this process:
   wall seconds of the whole run, final accuracy, the ledger's exact training FLOPs, and those
   per second of round wall time (training plus evaluation: a lower bound on the training
   rate), as a share of (1): the model-FLOPs utilisation.

    python -m benchmarks.precision [--config configs/demo.yaml] [--seeds 0 1 2] [--size 2048]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import write  # noqa: E402
from edgefm import api  # noqa: E402


def matmul_flops(n: int, dtype: torch.dtype, seconds: float = 3.0) -> float:
    """Sustained FLOP/s of n x n matmuls (2 n^3 each), after a warm-up, over ~``seconds``."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def one_run(config: str, seed: int, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = api.train(config, [f"seed={seed}", f"train.precision={precision}"], out=os.path.join(tmp, "run"))
        wall = time.perf_counter() - start
        m = run.metrics
    final = m.dropna(subset=["accuracy"]).iloc[-1] if "accuracy" in m else m.iloc[-1]
    flops, round_wall = float(m["flops"].sum()), float(m["wall_s"].sum())
    return {
        "precision": precision,
        "seed": seed,
        "run_s": wall,
        "round_wall_s": round_wall,
        "accuracy": float(final["accuracy"]),
        "train_flops": flops,
        "flops_per_s": flops / round_wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    peak = {name: matmul_flops(args.size, dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    runs = []
    for seed in args.seeds:  # the two precisions of a seed one after the other: side by side
        for precision in ("fp32", "bf16"):
            row = one_run(args.config, seed, precision)
            row["mfu"] = row["flops_per_s"] / peak[precision]
            runs.append(row)
            print(row, flush=True)
    by = {p: [r for r in runs if r["precision"] == p] for p in ("fp32", "bf16")}
    summary = {
        "peak_fp32_gflops": peak["fp32"] / 1e9,
        "peak_bf16_gflops": peak["bf16"] / 1e9,
        "speedup_run": float(np.mean([a["run_s"] / b["run_s"] for a, b in zip(by["fp32"], by["bf16"], strict=True)])),
        "accuracy_fp32": float(np.mean([r["accuracy"] for r in by["fp32"]])),
        "accuracy_bf16": float(np.mean([r["accuracy"] for r in by["bf16"]])),
        "accuracy_delta_points": 100
        * float(np.mean([b["accuracy"] - a["accuracy"] for a, b in zip(by["fp32"], by["bf16"], strict=True)])),
        "achieved_gflops_fp32": float(np.mean([r["flops_per_s"] for r in by["fp32"]])) / 1e9,
        "achieved_gflops_bf16": float(np.mean([r["flops_per_s"] for r in by["bf16"]])) / 1e9,
    }
    notes = (
        f"Sustained matmul ({args.size} x {args.size}, {torch.get_num_threads()} threads): "
        f"**{summary['peak_fp32_gflops']:.0f} GFLOP/s float32**, **{summary['peak_bf16_gflops']:.0f} GFLOP/s "
        f"bfloat16**. bf16 against fp32, same seeds: the whole run **{summary['speedup_run']:.2f}x** faster; "
        f"final accuracy {summary['accuracy_bf16']:.4f} against {summary['accuracy_fp32']:.4f} "
        f"(**{summary['accuracy_delta_points']:+.2f} points**). Achieved (the ledger's training FLOPs over round "
        f"wall time, evaluation included): {summary['achieved_gflops_fp32']:.0f} GFLOP/s fp32, "
        f"{summary['achieved_gflops_bf16']:.0f} GFLOP/s bf16; `mfu` divides by the matmul peak of the same "
        f"precision. Regenerate: `python -m benchmarks.precision`."
    )
    rows = [{**r, "train_gflop": r.pop("train_flops") / 1e9, "gflops_per_s": r.pop("flops_per_s") / 1e9} for r in runs]
    meta = {"config": args.config, "seeds": args.seeds, "size": args.size}
    write("precision", "Precision: the machine's FLOP limit and what training reaches of it", rows, meta, notes)


if __name__ == "__main__":
    main()

"""Model-FLOPs utilisation of each federated method (issue 20, item 1): writes
benchmarks/results/mfu.{json,md}.

The machine's sustained matmul FLOP/s in float32 and bfloat16 (``benchmarks/precision.py``'s
probe), then FedAvg-LoRA, FedMS and RaFFM on the demo's settings (MiniLM, SST-2, 10 clients, 5
rounds, ``edgefm demo``'s precision and dropout), one after another in this process, seed 0:
the ledger's exact FLOPs (what each device computed; FedMS's frozen prefix is charged once, when
computed) over the summed round wall time (training, aggregation and evaluation: a lower bound
on the training rate), as a share of the peak of the run's precision.

    python -m benchmarks.mfu [--seed 0] [--size 2048]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks._common import write  # noqa: E402
from benchmarks.precision import matmul_flops, one_run  # noqa: E402
from edgefm.config import DEMO  # noqa: E402

METHODS = {
    "fedavg-lora": ["algorithm.name=fedavg"],
    "fedms": ["algorithm.name=fedms"],
    "raffm": ["algorithm.name=raffm"],
}


def one(name: str, seed: int) -> dict:
    r = one_run(seed, name, [*DEMO, *METHODS[name]])
    return {
        "method": name,
        "seed": seed,
        "run_s": r["run_s"],
        "round_wall_s": r["round_wall_s"],
        "accuracy": r["accuracy"],
        "device_gflop": r["train_flops"] / 1e9,
        "gflops_per_s": r["flops_per_s"] / 1e9,
        "precision": r["precision"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    peak = {"fp32": matmul_flops(args.size, torch.float32), "bf16": matmul_flops(args.size, torch.bfloat16)}
    rows = [one(name, args.seed) for name in METHODS]
    for r in rows:
        r["mfu"] = r["gflops_per_s"] * 1e9 / peak[r["precision"]]
    notes = (
        f"Sustained matmul ({args.size} x {args.size}, {torch.get_num_threads()} threads): "
        f"{peak['fp32'] / 1e9:.0f} GFLOP/s float32, {peak['bf16'] / 1e9:.0f} GFLOP/s bfloat16. Each method once, "
        "side by side in one process, on the demo's settings. device_gflop: the ledger's FLOPs over all clients "
        "and rounds (FedMS computes its frozen prefix once and reuses it, so it does fewer FLOPs for the same "
        "examples); gflops_per_s: those over the summed round wall time, evaluation included; mfu: that over the "
        "peak of the run's precision. A method that skips work (a cache, a smaller subnetwork) can finish sooner "
        "with a lower mfu: compare run_s for speed and mfu for how busy the arithmetic units were. "
        "Regenerate: `python -m benchmarks.mfu`."
    )
    write(
        "mfu",
        "Model-FLOPs utilisation per method",
        rows,
        {"seed": args.seed, "size": args.size, "peak_gflops": {k: round(v / 1e9, 1) for k, v in peak.items()}},
        notes,
    )
    with open(os.path.join(os.path.dirname(__file__), "results", "mfu.md")) as f:
        print(f.read())


if __name__ == "__main__":
    main()

"""Compute only what changes: the frozen-prefix cache (issue 20, item 2). Writes
benchmarks/results/prefix_cache.{json,md}.

1. Speed, side by side in this process: MiniLM + LoRA on SST-2, every device training the top
   ``m`` of 6 blocks (Sparsely Activated LoRA, ``algorithm.sal=fixed``; FedMS's stage 1, i.e.
   FedAvg over the active blocks) with the cache on and off, against LoRA on all blocks. The
   figure is training examples per second of round wall time (one final evaluation included,
   the same for every row).
2. FedMS against FedAvg-LoRA on the FedMS benchmark's setting (SST-2, Dirichlet alpha 0.1, 10
   clients, 6 rounds, stage 1: 3): device FLOPs per round from the ledger and the final
   accuracies, FedMS over ``--seeds``; FedMS with the cache off once (the same training, more
   FLOPs and time).

    python -m benchmarks.prefix_cache [--seeds 0 1 2] [--m 2] [--skip-fedms]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from benchmarks._common import write  # noqa: E402
from edgefm import api  # noqa: E402

SPEED = ["clients=10", "data.max_train=1500", "data.max_test=200", "rounds=3", "eval_every=3", "partition.alpha=0.5"]
SAL = ["algorithm.name=fedms", "algorithm.experts=global", "algorithm.full_depth_flops=1"]  # every device: m blocks
FEDMS_SETTING = [
    "clients=10",
    "rounds=6",
    "eval_every=6",
    "data.max_train=1500",
    "data.max_test=872",
    "partition.alpha=0.1",
]


def one_run(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = api.train(None, overrides, out=os.path.join(tmp, "run"))
        wall = time.perf_counter() - start
        m, clients = run.metrics, run.clients
    ok = clients[clients["status"] == "ok"]
    last = m.iloc[-1]
    cache = ok.get("client_cache_mb")
    return {
        "run_s": wall,
        "round_wall_s": float(m["wall_s"].sum()),
        "examples": int(ok["num_examples"].sum()),
        "examples_per_s": float(ok["num_examples"].sum() / m["wall_s"].sum()),
        "device_gflops_per_round": float(m["flops"].sum()) / len(m) / 1e9,
        "accuracy": float(last["accuracy"]),
        "client_acc_mean": float(last["client_acc_mean"]),
        "cache_mb_max": float(cache.max()) if cache is not None and len(cache) else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--m", type=int, default=2)
    ap.add_argument("--skip-fedms", action="store_true", help="only the speed comparison (1)")
    args = ap.parse_args()
    rows = []

    def add(part: str, name: str, seed: int, overrides: list[str]) -> dict:
        row = {"part": part, "method": name, "seed": seed, **one_run([f"seed={seed}", *overrides])}
        print(row, flush=True)
        rows.append(row)
        return row

    m = args.m
    sal = [*SAL, "algorithm.sal=fixed", f"algorithm.m0={m}"]
    all_blocks = add("speed", "LoRA, all 6 blocks", 0, [*SPEED, *SAL, "algorithm.sal=all"])
    off = add("speed", f"SAL top {m}, cache off", 0, [*SPEED, *sal, "train.prefix_cache=false"])
    on = add("speed", f"SAL top {m}, cache on", 0, [*SPEED, *sal, "train.prefix_cache=true"])
    summary = {
        "sal_cache_on_vs_all_blocks": on["examples_per_s"] / all_blocks["examples_per_s"],
        "sal_cache_off_vs_all_blocks": off["examples_per_s"] / all_blocks["examples_per_s"],
        "cache_on_vs_off": on["examples_per_s"] / off["examples_per_s"],
    }
    notes = (
        f"Speed (MiniLM, SST-2, 10 clients x 3 rounds, seed 0, side by side): training the top {m} of 6 blocks "
        f"with the cache runs **{summary['sal_cache_on_vs_all_blocks']:.2f}x** the examples per second of LoRA on "
        f"all blocks ({summary['sal_cache_off_vs_all_blocks']:.2f}x without the cache; the cache alone "
        f"{summary['cache_on_vs_off']:.2f}x)."
    )
    if not args.skip_fedms:
        fedavg = add("fedms", "FedAvg-LoRA", args.seeds[0], [*FEDMS_SETTING, "algorithm.name=fedavg"])
        fedms = [
            add("fedms", "FedMS", s, [*FEDMS_SETTING, "algorithm.name=fedms", "algorithm.stage1_rounds=3"])
            for s in args.seeds
        ]
        fedms_off = add(
            "fedms",
            "FedMS, cache off",
            args.seeds[0],
            [*FEDMS_SETTING, "algorithm.name=fedms", "algorithm.stage1_rounds=3", "train.prefix_cache=false"],
        )
        same_seed = fedms[0]
        summary.update(
            {
                "fedms_flops_vs_fedavg": same_seed["device_gflops_per_round"] / fedavg["device_gflops_per_round"],
                "fedms_off_flops_vs_fedavg": fedms_off["device_gflops_per_round"] / fedavg["device_gflops_per_round"],
                "fedms_client_acc_mean": float(np.mean([r["client_acc_mean"] for r in fedms])),
                "fedms_client_acc_std": float(np.std([r["client_acc_mean"] for r in fedms])),
                "fedms_on_off_acc_delta": same_seed["client_acc_mean"] - fedms_off["client_acc_mean"],
                "fedms_on_vs_off_speed": fedms_off["round_wall_s"] / same_seed["round_wall_s"],
            }
        )
        notes += (
            f" FedMS (SST-2, alpha 0.1, 10 clients, 6 rounds, stage 1: 3; seed {args.seeds[0]}): device FLOPs per "
            f"round **{summary['fedms_flops_vs_fedavg']:.2f}x** FedAvg-LoRA's (cache off: "
            f"{summary['fedms_off_flops_vs_fedavg']:.2f}x), the run {summary['fedms_on_vs_off_speed']:.2f}x faster "
            f"than with the cache off, client accuracy {summary['fedms_on_off_acc_delta']:+.4f} against it; over "
            f"seeds {args.seeds}: mean client accuracy {summary['fedms_client_acc_mean']:.4f} "
            f"± {summary['fedms_client_acc_std']:.4f}."
        )
    notes += " Regenerate: `python -m benchmarks.prefix_cache`."
    meta = {"m": m, "seeds": args.seeds, "speed": SPEED, "fedms_setting": FEDMS_SETTING, **summary}
    write("prefix_cache", "Compute only what changes: the frozen-prefix cache", rows, meta, notes)


if __name__ == "__main__":
    main()

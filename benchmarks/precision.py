"""The machine's FLOP limit and what training reaches of it, float32 against bfloat16 autocast
(issue 20, item 1). Writes benchmarks/results/precision.{json,md} and precision_profile.{json,md}.

1. Sustained matmul FLOP/s of this machine (torch, n x n matrices, this process's threads) in
   float32 and bfloat16.
2. A run (default: the demo, configs/demo.yaml: FedAvg-LoRA on MiniLM, SST-2, 10 clients, 5
   rounds) with ``train.precision`` fp32 and bf16, for each seed, side by side in this process:
   wall seconds of the whole run, final accuracy, the ledger's exact training FLOPs, and those
   per second of round wall time (training plus evaluation: a lower bound on the training
   rate), as a share of (1): the model-FLOPs utilisation.

3. Where a round's time goes: training against evaluation, and inside one client's training
   the share of time by kind of op (torch.profiler).

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


CATEGORIES = (  # aten op name fragments -> where the time goes
    ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "linear")),
    ("attention", ("attention", "sdpa", "softmax")),
    ("optimizer", ("_foreach", "adamw", "lerp", "addcdiv", "addcmul")),
    ("norm + activation", ("layer_norm", "gelu", "dropout", "native_dropout")),
    ("embedding + copies", ("embedding", "copy_", "to_copy", "cat", "index", "contiguous", "clone", "fill_")),
)


def profile(config: str, precision: str, seed: int = 0) -> dict:
    """Where one round's wall time goes: every client's local training against the evaluation
    (server test set and each client's local test split), and, inside one client's training,
    the share of CPU time by kind of op (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from edgefm import config as C
    from edgefm.fl.scenario import build

    sc = build(C.load(config, [f"seed={seed}", f"train.precision={precision}"]))
    s, wb = sc.strategy, sc.workbench
    state = s.initial_state(wb)
    tasks = s.configure(1, state, sc.devices)
    start = time.perf_counter()
    for cid, task in tasks.items():
        s.client_update(task, wb, sc.clients[cid], None)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    s.evaluate_server(state, wb, sc.test)
    for c in sc.clients:
        s.evaluate_client(state, wb, c, None, sc.test)
    eval_s = time.perf_counter() - start
    cid = max(tasks, key=lambda k: len(sc.clients[k].train))
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        s.client_update(tasks[cid], wb, sc.clients[cid], None)
    wall = time.perf_counter() - start
    shares = dict.fromkeys([name for name, _ in CATEGORIES] + ["other ops"], 0.0)
    for ev in prof.key_averages():
        name = ev.key.lower()
        kind = next((k for k, frags in CATEGORIES if any(f in name for f in frags)), "other ops")
        shares[kind] += ev.self_cpu_time_total / 1e6
    ops = sum(shares.values())
    out = {f"share_{k.replace(' ', '_').replace('+', 'and')}": v / wall for k, v in shares.items()}
    out["share_outside_ops"] = max(0.0, 1 - ops / wall)  # Python, the data loader, the profiler itself
    return {"precision": precision, "round_train_s": train_s, "round_eval_s": eval_s, **out}


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
    prof = [profile(args.config, p) for p in ("fp32", "bf16")]
    for p in prof:
        print(p, flush=True)
    top = {k: v for k, v in prof[1].items() if k.startswith("share_")}
    notes += (
        " Where a round goes (seed 0, one round of the demo's 10 clients, profiled in this process): training "
        + ", ".join(
            f"{p['round_train_s']:.1f} s and evaluation {p['round_eval_s']:.1f} s in {p['precision']}" for p in prof
        )
        + "; inside one client's bf16 training, share of wall time by kind of op: "
        + ", ".join(f"{k[6:].replace('_', ' ')} {v:.0%}" for k, v in sorted(top.items(), key=lambda kv: -kv[1]))
        + "."
    )
    rows = [{**r, "train_gflop": r.pop("train_flops") / 1e9, "gflops_per_s": r.pop("flops_per_s") / 1e9} for r in runs]
    meta = {"config": args.config, "seeds": args.seeds, "size": args.size}
    write("precision_profile", "Where a round of the demo goes", prof, {"config": args.config, "seed": 0})
    write("precision", "Precision: the machine's FLOP limit and what training reaches of it", rows, meta, notes)


if __name__ == "__main__":
    main()

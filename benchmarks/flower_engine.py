"""Flower engine evidence (issue 4): writes benchmarks/results/flower_engine.{json,md}.

1. Agreement: FedAvg-LoRA on MiniLM/SST-2, same seed and config, in-process vs the Flower
   simulation engine: final accuracy (goal: within 0.5 points) and ledger bytes.
2. Overhead: 8 clients x 3 rounds, Flower simulation wall time / in-process wall time (goal:
   at most 1.5x), and peak memory of the whole process tree (driver + Ray workers).

    python -m benchmarks.flower_engine
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from benchmarks._common import RESULTS, machine, table

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of the process tree of one ``edgefm train`` run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefm.cli", "train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                # Ray's raylet/GCS start as their own sessions: count ray processes of this user too
                rss += sum(
                    p.memory_info().rss
                    for p in psutil.process_iter(["name"])
                    if p.info["name"]
                    and p.info["name"].startswith(("raylet", "gcs_server", "ray::"))
                    and p.pid not in {q.pid for q in procs}
                )
                peak[0] = max(peak[0], rss / 2**20)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            time.sleep(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    code = proc.wait()
    stop.set()
    t.join()
    if code != 0:
        raise SystemExit(f"edgefm train {' '.join(args)} failed with exit code {code}")
    return time.perf_counter() - start, peak[0]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    out = ROOT / "runs" / "bench-flower"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    rows = []
    # 1. agreement on the demo scenario (10 clients, 5 rounds)
    agree = {}
    for engine in ("inprocess", "flower"):
        d = out / f"demo-{engine}"
        secs, peak = run_cli(["configs/demo.yaml", "--out", str(d), "--set", f"engine={engine}"])
        s = summary(d)
        agree[engine] = {
            "engine": engine,
            "final_accuracy": s["final_accuracy"],
            "bytes_up": s["bytes_up"],
            "bytes_down": s["bytes_down"],
            "wall_s": secs,
            "peak_rss_mb": peak,
        }
    gap = 100 * abs(agree["flower"]["final_accuracy"] - agree["inprocess"]["final_accuracy"])
    # 2. overhead: 8 clients x 3 rounds
    common = ["configs/demo.yaml", "--set", "clients=8", "--set", "rounds=3", "--set", "data.max_train=1600"]
    for engine in ("inprocess", "flower"):
        d = out / f"small-{engine}"
        secs, peak = run_cli([*common, "--out", str(d), "--set", f"engine={engine}"])
        rows.append(
            {
                "engine": engine,
                "clients": 8,
                "rounds": 3,
                "wall_s": secs,
                "peak_rss_mb": peak,
                "final_accuracy": summary(d)["final_accuracy"],
            }
        )
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(),
        "agreement": list(agree.values()),
        "accuracy_gap_points": gap,
        "overhead": rows,
        "time_ratio": ratio,
    }
    (RESULTS / "flower_engine.json").write_text(json.dumps(payload, indent=2))

    m = payload["machine"]
    lines = [
        "# The Flower engine vs the in-process engine",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, flwr 1.41.0, {m['date']}. "
        "Regenerate: `python -m benchmarks.flower_engine`. Wall time includes process start-up "
        "(model load; Ray start for Flower). Flower runs one client per core, one thread each.",
        "",
        "## Agreement: FedAvg-LoRA, MiniLM, SST-2, demo config (10 clients, 5 rounds, seed 0)",
        "",
        *table(list(agree.values())),
        "",
        f"Accuracy gap: {gap:.3f} points (goal: <= 0.5). Ledger bytes: "
        f"{'identical' if agree['flower']['bytes_up'] == agree['inprocess']['bytes_up'] else 'DIFFER'}.",
        "",
        "## Overhead: 8 clients x 3 rounds (1,600 training examples)",
        "",
        *table(rows),
        "",
        f"Flower / in-process wall time: {ratio:.2f}x (goal: <= 1.5x).",
        "",
    ]
    (RESULTS / "flower_engine.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

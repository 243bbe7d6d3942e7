"""Client memory: peak RSS of simulating 1, 10, 100 and 1,000 MiniLM + LoRA clients that each
hold the same number of examples (so the data grows with the clients, as in a real population),
1 round of FedAvg and of local-only training, each count in a fresh process. What it measures:
whether per-client state stays small (the memory rule: one shared backbone, per-client adapters
and head only). Also reported: the bytes of private state each client keeps.

    python -m benchmarks.client_memory [--counts 1,10,100,1000] [--per-client 32] [--settings "fedavg;local"]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks._common import RESULTS, write

CHILD = """
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(2)
from edgefm import config
from edgefm.fl.aggregate import nbytes
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
n, per_client, algo, private_mb, trim, mmap_kb = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
cfg = config.load(None, [f"clients={n}", "rounds=1", f"data.max_train={n * per_client}", "data.max_test=100",
                         "partition.name=iid", "partition.local_test_fraction=0.2", f"algorithm.name={algo}",
                         f"private_memory_mb={private_mb}", f"trim_memory={trim}", f"mmap_threshold_kb={mmap_kb}"])
sc = build(cfg)
engine = Engine(sc)
start = time.perf_counter()
out = engine.run()
run_s = time.perf_counter() - start
private = [nbytes(p) for p in out["private"].values()]
print(json.dumps({"run_s": run_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_examples": sum(len(c.train) for c in sc.clients),
                  "private_states": len(private),
                  "private_on_disk": engine.transport.private.on_disk,
                  "private_kb_per_client": (sum(private) / len(private) / 1024) if private else 0.0}))
"""

SETTINGS = {  # name -> (algorithm, private_memory_mb, trim_memory, mmap_threshold_kb)
    "fedavg": ("fedavg", 1024.0, False, 0),
    "local": ("local", 1024.0, False, 0),  # every private state in memory
    "local (private on disk)": ("local", 0.0, False, 0),  # every private state in its own file
    "local (private on disk, heap trimmed)": ("local", 0.0, True, 0),  # and freed heap returned after each client
    # instead of trimming: blocks of 128 KiB and more in maps of their own, unmapped when freed
    "local (private on disk, large blocks mapped)": ("local", 0.0, False, 128),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,10,100,1000")
    ap.add_argument("--per-client", type=int, default=32, help="examples per client (80%% train, 20%% local test)")
    ap.add_argument("--settings", default=";".join(SETTINGS), help="names joined by ';'")
    ap.add_argument("--render", action="store_true", help="rewrite the report from the saved JSON, run nothing")
    args = ap.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "client_memory.json").read_text())
        return report(saved["rows"], saved["meta"])
    chosen = args.settings.split(";")
    unknown = [c for c in chosen if c not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; expected names from {list(SETTINGS)} joined by ';'")
    # settings not rerun keep their rows from the last results (same columns; run_s only where measured)
    old = RESULTS / "client_memory.json"
    rows = [r for r in json.loads(old.read_text())["rows"] if r["setting"] not in chosen] if old.exists() else []
    for name, (algo, private_mb, trim, mmap_kb) in SETTINGS.items():
        if name not in chosen:
            continue
        base = None
        for n in [int(x) for x in args.counts.split(",")]:
            res = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(n),
                    str(args.per_client),
                    algo,
                    str(private_mb),
                    str(trim),
                    str(mmap_kb),
                ],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ,
            )
            got = json.loads(res.stdout.strip().splitlines()[-1])
            base = base or got["peak_rss_mb"]
            rows.append(
                {
                    "setting": name,
                    "clients": n,
                    "train_examples": got["train_examples"],
                    "peak_rss_mb": got["peak_rss_mb"],
                    "ratio_to_1": got["peak_rss_mb"] / base,
                    "private_states": got["private_states"],
                    "private_on_disk": got["private_on_disk"],
                    "private_kb_per_client": got["private_kb_per_client"],
                    "run_s": got["run_s"],
                }
            )
    for r in rows:
        r.setdefault("run_s", None)
    report(rows, vars(args))


def report(rows: list[dict], meta: dict) -> None:
    def ratio(setting: str) -> str:
        got = {r["clients"]: r for r in rows if r["setting"] == setting}
        return f"{got[1000]['ratio_to_1']:.2f}x" if 1000 in got else "not measured"

    def minutes(setting: str) -> str:
        got = {r["clients"]: r for r in rows if r["setting"] == setting}
        return f"{got[1000]['run_s'] / 60:.0f} min" if 1000 in got and got[1000]["run_s"] else "not timed"

    trimmed, disk = "local (private on disk, heap trimmed)", "local (private on disk)"
    mapped = "local (private on disk, large blocks mapped)"
    at = {(r["setting"], r["clients"]): r for r in rows}

    def slower(setting: str) -> str:  # the round's time against the untrimmed, unmapped one, same run
        a, b = at.get((setting, 1000)), at.get((disk, 1000))
        ok = a and b and a.get("run_s") and b.get("run_s")
        return f"{a['run_s'] / b['run_s']:.2f}x the time of {disk}" if ok else "time not compared"

    absolute = "not measured"
    if (mapped, 1000) in at and (disk, 1) in at:
        absolute = (
            f"{at[(mapped, 1000)]['peak_rss_mb']:.0f} MB against {at[(disk, 1)]['peak_rss_mb']:.0f} MB for one client "
            "without it: the setting also lowers one client's peak"
        )
    notes = (
        "Each count runs in a fresh process: peak RSS of building the scenario (data, MiniLM, partitions) and one "
        "round of training and evaluation. Clients share one frozen backbone; local-only clients each keep their "
        "LoRA adapters + head as private state (private_kb_per_client): in memory up to private_memory_mb, "
        "else one file per client (private_on_disk). The data grows with the clients (per_client examples each; "
        "a few MB at 1,000 clients). At 1,000 clients against 1: FedAvg "
        f"{ratio('fedavg')}, local-only {ratio('local')}, its private states on disk {ratio(disk)}, with the "
        f"heap trimmed after each client (trim_memory) {ratio(trimmed)} ({minutes(trimmed)} for the round), and "
        f"with blocks of 128 KiB and more in memory maps of their own (mmap_threshold_kb=128) {ratio(mapped)} "
        f"({absolute}; {minutes(mapped)} for the round, {slower(mapped)}). "
        "What grew was not live objects (tracemalloc saw a few hundred KB): glibc kept the heap each finished "
        "client freed, and as batch shapes vary from client to client it fragmented, 4-7 MB per client. glibc "
        "maps a large block on its own only below a threshold that by default rises to the largest mapped block "
        "freed (up to 32 MB), so after a few batches a transformer's activations come from the heap; fixing the "
        "threshold keeps them out of it. Both cost time: every page of a block handed back is faulted in again "
        "(trimming measured by a side-by-side probe, 30 local-only clients of 26 examples: 13-16 s of training "
        "untrimmed, 16-18 s trimmed); both are off by default. FedAvg "
        "also holds every client's update until it aggregates them (about 0.3 GB at 1,000 clients; streaming "
        "aggregation would remove it, not done). Regenerate: `python -m benchmarks.client_memory` (--settings "
        "reruns only the named ones; --render rewrites this file from the JSON)."
    )
    path = write(
        "client_memory",
        "Peak memory of simulated clients (MiniLM + LoRA), the same examples per client",
        rows,
        meta,
        notes,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()

"""Client memory: peak RSS simulating 1, 10 and 100 MiniLM+LoRA clients (same data, 1 round of
FedAvg and of local-only training, each in a fresh process). Goal: 100 clients cost at most
1.3x the memory of 1.

    python -m benchmarks.client_memory [--counts 1,10,100] [--examples 800]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks._common import write

CHILD = """
import json, os, resource, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
torch.set_num_threads(2)
from edgefm import config
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
n, examples, algo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = config.load(None, [f"clients={n}", "rounds=1", f"data.max_train={examples}", "data.max_test=100",
                         "partition.name=iid", "partition.local_test_fraction=0.1", f"algorithm.name={algo}"])
out = Engine(build(cfg)).run()
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "private_states": len(out["private"])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,10,100")
    ap.add_argument("--examples", type=int, default=800)
    args = ap.parse_args()
    rows = []
    for algo in ("fedavg", "local"):
        base = None
        for n in [int(x) for x in args.counts.split(",")]:
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), str(args.examples), algo],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ,
            )
            peak = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            base = base or peak
            rows.append(
                {
                    "algorithm": algo,
                    "clients": n,
                    "peak_rss_mb": peak,
                    "ratio_to_1": peak / base,
                    "goal": "<= 1.3 at 100",
                    "met": n != 100 or peak / base <= 1.3,
                }
            )
    path = write(
        "client_memory",
        "Peak memory of simulated clients (MiniLM + LoRA)",
        rows,
        vars(args),
        "Clients share one frozen backbone; each keeps only its adapters + head (local) or sends them (fedavg).",
    )
    print(path.read_text())


if __name__ == "__main__":
    main()

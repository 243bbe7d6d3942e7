"""FedMS: a global and a local expert per client with a gate, against FedAvg, from Python.

    python examples/fedms.py [--tiny] [--out runs/example-fedms]

``--tiny`` trains a tiny random BERT for two rounds (seconds; what CI runs).
"""

import argparse
from pathlib import Path

import edgefm

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ap = argparse.ArgumentParser()
ap.add_argument("--tiny", action="store_true")
ap.add_argument("--out", default="runs/example-fedms")
args = ap.parse_args()

config = CONFIGS / ("tiny.yaml" if args.tiny else "fedms_sst2.yaml")
small = ["rounds=2", "clients=4", "data.max_train=200", "data.max_test=60"] if args.tiny else []
fedms = ["algorithm.name=fedms", "algorithm.stage1_rounds=1"] if args.tiny else []

rows = {}
for method, extra in {"fedms": fedms, "fedavg": ["algorithm.name=fedavg"]}.items():
    run = edgefm.train(config, overrides=[*small, *extra], out=Path(args.out) / method)
    s = run.summary
    rows[method] = (s["final_accuracy"], s["client_acc_mean"], s["client_acc_min"], s["bytes_up"] / 1e6)
print(f"{'method':8} {'global':>8} {'client mean':>12} {'client worst':>13} {'MB up':>8}")
for method, (g, mean, worst, mb) in rows.items():
    print(f"{method:8} {g:8.3f} {mean:12.3f} {worst:13.3f} {mb:8.2f}")

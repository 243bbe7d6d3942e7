"""Federated LoRA fine-tuning of MiniLM on SST-2 over heterogeneous devices, from Python.

    python examples/federated_lora.py [--tiny] [--out runs/example-lora]

``--tiny`` trains a tiny random BERT for two rounds (seconds; what CI runs).
"""

import argparse
from pathlib import Path

import edgefm

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ap = argparse.ArgumentParser()
ap.add_argument("--tiny", action="store_true")
ap.add_argument("--out", default="runs/example-lora")
args = ap.parse_args()

config = CONFIGS / ("tiny.yaml" if args.tiny else "demo.yaml")
overrides = ["rounds=2", "clients=4", "data.max_train=200", "data.max_test=60"] if args.tiny else []

run = edgefm.train(config, overrides=overrides, out=args.out)  # writes what `edgefm train` writes
print(run.metrics[["round", "accuracy", "bytes_up", "sim_round_s"]].to_string(index=False))
ledger = run.clients  # one row per device per round: its tier, bytes, FLOPs, seconds, joules
print(ledger.groupby("tier")[["bytes_up", "seconds", "joules"]].mean().to_string())
print(f"final accuracy {run.summary['final_accuracy']:.3f}; report: {run.report}")

"""Measure the PRINCE tenants' per-round work with real split fine-tuning, for the market.

Runs one round of ``splitfed`` (every device, SFL-V1) for each tenant that edgefm can build and
averages the ledger over devices: device FLOPs, edge FLOPs, bytes up and down (the device part
of the model both ways plus every step's activations up and gradients down) and the number of
split steps (two messages each). Writes ``src/edgefm/market/data/prince_tenants.json``, which
``market/prince_instance.generate`` reads (the market itself never imports torch).

alpha, beta and g2 are the convergence-bound constants and the start gradient scale: 1 until
``benchmarks/prince_pilot.py`` calibrates them from pilots of real split training, and kept as
calibrated when the work is re-measured.

    python -m benchmarks.prince_tenants
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgefm import config
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine

OUT = Path(__file__).resolve().parents[1] / "src" / "edgefm" / "market" / "data" / "prince_tenants.json"

TENANTS = {
    "vit_mnist": (
        "configs/splitfed_mnist.yaml",
        ["rounds=1", "clients=4", "train.max_steps=10", "data.max_train=800", "data.max_test=50"],
        "tiny ViT (4 layers, width 64) on MNIST, full training, cut after 2 layers, batch 32, 10 steps",
    ),
    "whisper_fsdd": (
        "configs/splitfed_fsdd.yaml",
        ["rounds=1", "clients=6", "train.max_steps=10", "data.max_test=30"],
        "tiny Whisper encoder (4 layers, width 64) on spoken digits, full training, cut after 2 layers, "
        "batch 32, 10 steps",
    ),
    "minilm_sst2": (
        "configs/demo.yaml",
        [
            "algorithm.name=splitfed",
            "algorithm.cut=3",
            "rounds=1",
            "clients=4",
            "train.max_steps=10",
            "train.batch_size=16",
            "data.max_train=800",
            "data.max_test=50",
        ],
        "all-MiniLM-L6-v2 + LoRA r=8 on SST-2, cut after 3 of 6 layers, batch 16, 64 tokens, 10 steps",
    ),
    "llama_bbcnews": (
        "configs/lm_bbcnews.yaml",
        [
            "algorithm.name=splitfed",
            "algorithm.cut=1",
            "rounds=1",
            "clients=4",
            "model.sizes=[s]",
            "train.max_steps=10",
            "data.max_test=20",
        ],
        "tiny Llama (size s, full fine-tuning) on BBC News, cut after 1 block, batch 16, 64 tokens, 10 steps",
    ),
}


def measure(path: str, overrides: list[str]) -> dict:
    out = Engine(build(config.load(path, overrides))).run()
    rows = [r for r in out["ledger"].clients if r["status"] == "ok"]
    mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    return {
        "device_flops": mean("flops"),
        "edge_flops": mean("server_flops"),
        "bytes_up": mean("bytes_up"),
        "bytes_down": mean("bytes_down"),
        "messages": 2 * mean("client_steps"),
        "devices_measured": len(rows),
    }


def main() -> None:
    # a re-measure keeps what pilots calibrated (benchmarks/prince_pilot.py): work and the bound
    # are measured apart
    before = json.loads(OUT.read_text()) if OUT.is_file() else {}
    kept = {t["name"]: t for t in before.get("tenants", [])}
    calibration = ("alpha", "beta", "g2", "calibrated", "pilot")
    tenants = []
    for name, (path, overrides, what) in TENANTS.items():
        row = {"name": name, "what": what, **measure(path, overrides), "alpha": 1.0, "beta": 1.0, "g2": 1.0}
        row["calibrated"] = False
        row.update({k: kept[name][k] for k in calibration if k in kept.get(name, {})})
        print(json.dumps(row))
        tenants.append(row)
    out = {"source": "python -m benchmarks.prince_tenants", "tenants": tenants}
    if "calibration" in before:
        out["calibration"] = before["calibration"]
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Byzantine clients against robust aggregation (issue 22, item 4): writes
benchmarks/results/reliability.{json,md}.

FedAvg-LoRA of all-MiniLM-L6-v2 on SST-2 (the demo's config at a smaller scale: 10 devices,
Dirichlet(0.5) label skew, every device every round, 3 rounds of 3 steps; a randomly initialised
tiny BERT learns nothing at a scale this grid affords), with a fixed share of malicious devices (``attack.*``: sign flip,
scaled, Gaussian-noise updates, or honest training on flipped labels; ``fl/attacks.py``)
merged by each rule of ``fl/robust.py`` (``aggregation.rule``: the mean, coordinate median,
trimmed mean, Multi-Krum, norm clipping). Final test accuracy, 3 seeds; the cost of an attack is
the drop against the same rule with no attacker (and against the plain mean without one).

    python -m benchmarks.reliability [--seeds 0 1 2] [--rules mean median ...]

Rows already in the JSON are kept (a setting is re-run only when asked for by --rules).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import RESULTS, write
from edgefm import config
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine

CONFIG = "configs/demo.yaml"
BASE = [
    "clients=10",
    "rounds=3",
    "data.max_train=1000",
    "data.max_test=300",
    "train.max_steps=3",
    "aggregation.trim=0.3",
    "aggregation.byzantine=3",
    "attack.strength=4",
]
ATTACKS = [
    ("none", 0.0),
    ("sign_flip", 0.1),
    ("sign_flip", 0.2),
    ("sign_flip", 0.3),
    ("scale", 0.2),
    ("noise", 0.2),
    ("label_flip", 0.2),
]
RULES = ["mean", "median", "trimmed", "krum", "clip"]


def accuracy(rule: str, kind: str, fraction: float, seed: int) -> float:
    sets = [*BASE, f"seed={seed}", f"aggregation.rule={rule}", f"attack.kind={kind}", f"attack.fraction={fraction}"]
    out = Engine(build(config.load(CONFIG, sets))).run()
    return float(out["ledger"].rounds[-1]["accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rules", nargs="+", default=RULES)
    args = ap.parse_args()
    path = RESULTS / "reliability.json"
    kept = [r for r in json.loads(path.read_text())["rows"] if r["rule"] not in args.rules] if path.is_file() else []
    raw = []
    for rule in args.rules:
        for kind, fraction in ATTACKS:
            accs = [accuracy(rule, kind, fraction, s) for s in args.seeds]
            raw.append({"rule": rule, "attack": kind, "fraction": fraction, "per seed": accs})
            print(rule, kind, fraction, accs, flush=True)
    rows = kept + [
        {
            "rule": r["rule"],
            "attack": r["attack"],
            "fraction": r["fraction"],
            "accuracy": float(np.mean(r["per seed"])),
            "std": float(np.std(r["per seed"])),
            "per seed": ", ".join(f"{a:.4f}" for a in r["per seed"]),
        }
        for r in raw
    ]
    clean = {r["rule"]: r["accuracy"] for r in rows if r["attack"] == "none"}
    for r in rows:
        r["drop vs same rule, no attack"] = clean.get(r["rule"], np.nan) - r["accuracy"]
        r["drop vs mean, no attack"] = clean.get("mean", np.nan) - r["accuracy"]
    rows.sort(key=lambda r: (RULES.index(r["rule"]), ATTACKS.index((r["attack"], r["fraction"]))))
    meta = {"config": CONFIG + " + " + " ".join(BASE), "seeds": args.seeds}
    notes = (
        "accuracy: final test accuracy (mean over seeds; std is the population std over seeds). "
        "drop: in points of accuracy (x100 for percent). trim 0.3: of 10 updates a coordinate's 3 "
        "largest and 3 smallest values are dropped; krum keeps the 7 of 10 updates with the best "
        "Multi-Krum scores (f = 3); clip bounds each change at 2x the round's median change norm."
    )
    print(write("reliability", "Byzantine clients against robust aggregation", rows, meta, notes).read_text())


if __name__ == "__main__":
    main()

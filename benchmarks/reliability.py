"""Byzantine clients against robust aggregation, and differential privacy (issue 22, items 4
and 5): writes benchmarks/results/reliability.{json,md}.

FedAvg-LoRA of all-MiniLM-L6-v2 on SST-2 (the demo's config at a smaller scale: 10 devices,
Dirichlet(0.5) label skew, every device every round, 3 rounds of 3 steps; a randomly initialised
tiny BERT learns nothing at a scale this grid affords), with a fixed share of malicious devices (``attack.*``: sign flip,
scaled, Gaussian-noise updates, or honest training on flipped labels; ``fl/attacks.py``)
merged by each rule of ``fl/robust.py`` (``aggregation.rule``: the mean, coordinate median,
trimmed mean, Multi-Krum, norm clipping). Final test accuracy, 3 seeds; the cost of an attack is
the drop against the same rule with no attacker (and against the plain mean without one).

Faults (``--part faults``): the same runs, no attacker, with devices dropping out of each round
at 0, 25 and 50 % (``faults.dropout``, seeded per device and round).

Stragglers (``--part stragglers``): the same runs with a round deadline in simulated seconds
(``faults.deadline``) that cuts the slowest devices' updates.

Privacy (``--part privacy``): the same runs, no attacker, under client-level DP-FedAvg
(``privacy.*``, ``fl/privacy.py``) at epsilon 1, 4 and 16 (delta 1e-5, the whole run), with the
clipping bound C = 0.5 (about the median change norm of these clients: 0.52-0.56 over the
rounds) and, to separate clipping's cost from the noise's, clipping alone (sigma 0).

    python -m benchmarks.reliability [--part byzantine|faults|stragglers|privacy|render] [--seeds 0 1 2] [--rules mean ...]

Rows already in the JSON are kept (a Byzantine setting is re-run only when asked for by --rules).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import RESULTS, machine, table
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


PRIVACY = [("no DP", []), ("clip only (sigma 0)", ["privacy.noise_multiplier=0"])] + [
    (f"epsilon {e}", [f"privacy.epsilon={e}"]) for e in (16, 4, 1)
]


def private(sets: list[str], seed: int) -> tuple[float, float | None, float | None]:
    """(final accuracy, epsilon spent, sigma) of one run without attackers."""
    extra = [*sets, "privacy.clip=0.5"] if sets else []
    out = Engine(build(config.load(CONFIG, [*BASE, f"seed={seed}", *extra]))).run()
    last = out["ledger"].rounds[-1]
    return float(last["accuracy"]), last.get("dp_epsilon"), last.get("dp_sigma")


def dropouts(seeds: list[int]) -> list[dict]:
    rows = []
    for rate in (0.0, 0.25, 0.5):
        runs = []
        for s in seeds:
            out = Engine(build(config.load(CONFIG, [*BASE, f"seed={s}", f"faults.dropout={rate}"]))).run()
            gone = sum(r["dropped"] for r in out["ledger"].rounds)
            runs.append((float(out["ledger"].rounds[-1]["accuracy"]), gone))
        rows.append({"dropout": rate, "dropped (all rounds, seed 0)": runs[0][1], **stats([a for a, _ in runs])})
        print(rate, runs, flush=True)
    return rows


def stragglers(seeds: list[int]) -> list[dict]:
    """No deadline, then deadlines at the 90th and 60th percentile of the devices' simulated round
    times in the seed's run without one (about 1 and 4 of 10 devices cut each round)."""
    rows: dict[str, dict] = {}
    for s in seeds:
        sets = [*BASE, f"seed={s}"]
        free = Engine(build(config.load(CONFIG, sets))).run()["ledger"]
        times = [c["seconds"] for c in free.clients if c["status"] == "ok"]
        runs = [("none", None, free)]
        for q in (90, 60):
            deadline = float(np.percentile(times, q))
            out = Engine(build(config.load(CONFIG, [*sets, f"faults.deadline={deadline}"]))).run()["ledger"]
            runs.append((f"p{q} of round times", deadline, out))
        for label, deadline, ledger in runs:
            row = rows.setdefault(label, {"deadline": label, "runs": []})
            row["runs"].append(
                (
                    float(ledger.rounds[-1]["accuracy"]),
                    sum(c["status"] == "dropped" and "straggler" in c["reason"] for c in ledger.clients),
                    float(ledger.rounds[-1]["sim_elapsed_s"]),
                    deadline,
                )
            )
        print(s, [(label, ledger.rounds[-1]["accuracy"]) for label, _, ledger in runs], flush=True)
    out = []
    for row in rows.values():
        runs = row.pop("runs")
        deadlines = [d for *_, d in runs if d is not None]
        out.append(
            {
                **row,
                "deadline s (mean over seeds)": float(np.mean(deadlines)) if deadlines else None,
                "stragglers cut (all rounds, mean)": float(np.mean([n for _, n, _, _ in runs])),
                "simulated s (whole run, mean)": float(np.mean([t for _, _, t, _ in runs])),
                **stats([a for a, *_ in runs]),
            }
        )
    return out


def stats(accs: list[float]) -> dict:
    return {
        "accuracy": float(np.mean(accs)),
        "std": float(np.std(accs)),
        "per seed": ", ".join(f"{a:.4f}" for a in accs),
    }


def byzantine(seeds: list[int], rules: list[str], kept: list[dict]) -> list[dict]:
    rows = [r for r in kept if r["rule"] not in rules]
    for rule in rules:
        for kind, fraction in ATTACKS:
            accs = [accuracy(rule, kind, fraction, s) for s in seeds]
            rows.append({"rule": rule, "attack": kind, "fraction": fraction, **stats(accs)})
            print(rule, kind, fraction, accs, flush=True)
    clean = {r["rule"]: r["accuracy"] for r in rows if r["attack"] == "none"}
    for r in rows:
        r["drop vs same rule, no attack"] = clean.get(r["rule"], np.nan) - r["accuracy"]
        r["drop vs mean, no attack"] = clean.get("mean", np.nan) - r["accuracy"]
    rows.sort(key=lambda r: (RULES.index(r["rule"]), ATTACKS.index((r["attack"], r["fraction"]))))
    return rows


def privacy(seeds: list[int]) -> list[dict]:
    rows = []
    for label, sets in PRIVACY:
        runs = [private(sets, s) for s in seeds]
        eps, sigma = runs[0][1], runs[0][2]
        rows.append(
            {
                "setting": label,
                "epsilon spent": eps,
                "sigma": sigma,
                **stats([a for a, _, _ in runs]),
            }
        )
        print(label, runs, flush=True)
    base = rows[0]["accuracy"]
    for r in rows:
        r["drop vs no DP"] = base - r["accuracy"]
    return rows


NOTES = """accuracy: final test accuracy (mean over seeds; std is the population std over seeds). drop: in
accuracy (x100 for points). trim 0.3: of 10 updates a coordinate's 3 largest and 3 smallest values
are dropped; krum keeps the 7 of 10 updates with the best Multi-Krum scores (f = 3); clip bounds
each change at 2x the round's median change norm. Attack strength 4: sign_flip sends -4x the
client's change, scale +4x, noise Gaussian noise of 4x the change's RMS."""

FAULT_NOTES = """Each device asked to train drops out of a round with the given chance (never contacted; the
ledger records it as dropped with the reason); the round merges the rest; 10 devices, 3 rounds."""

STRAGGLER_NOTES = """``faults.deadline``: a device whose simulated round time (download, compute, upload, from its
device profile) passes the deadline is a straggler: its update is discarded and the round lasts
until the deadline. The deadline is set per seed from that seed's run without one."""

PRIVACY_NOTES = """Client-level DP-FedAvg: each client's change clipped to L2 norm 0.5, Gaussian noise of std sigma x
0.5 on the sum, divided by the 10 expected participants; every client every round (q = 1, no
amplification by sampling); epsilon over the whole run (3 rounds) at delta 1e-5, from opacus's RDP
accountant."""


def render(data: dict) -> str:
    m = data["machine"]
    lines = [
        "# Reliability: Byzantine clients against robust aggregation, and differential privacy",
        "",
        f"Machine: {m['cpu_cores']} cores, torch {m['torch']}, {m['date']}. Config: {CONFIG} + {' '.join(BASE)} "
        "(attack and aggregation keys unused by a row's setting have no effect). Seeds: "
        + ", ".join(str(s) for s in data["seeds"]),
        "",
        "## Byzantine clients",
        "",
        *table(data["rows"]),
        "",
        NOTES,
    ]
    if data.get("faults"):
        lines += ["", "## Devices dropping out", "", *table(data["faults"]), "", FAULT_NOTES]
    if data.get("stragglers"):
        lines += ["", "## Stragglers past a round deadline", "", *table(data["stragglers"]), "", STRAGGLER_NOTES]
    if data.get("privacy"):
        lines += ["", "## Differential privacy", "", *table(data["privacy"]), "", PRIVACY_NOTES]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["byzantine", "faults", "stragglers", "privacy", "render"], default="byzantine")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rules", nargs="+", default=RULES)
    args = ap.parse_args()
    path = RESULTS / "reliability.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    data.setdefault("seeds", args.seeds)
    if args.part == "byzantine":
        data["rows"], data["seeds"] = byzantine(args.seeds, args.rules, data["rows"]), args.seeds
    elif args.part == "faults":
        data["faults"] = dropouts(args.seeds)
    elif args.part == "stragglers":
        data["stragglers"] = stragglers(args.seeds)
    elif args.part == "privacy":
        data["privacy"] = privacy(args.seeds)
    data.update(benchmark="reliability", machine=machine())
    path.write_text(json.dumps(data, indent=2))
    (RESULTS / "reliability.md").write_text(render(data))
    print(render(data))


if __name__ == "__main__":
    main()

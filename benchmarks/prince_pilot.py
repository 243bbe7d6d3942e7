"""Calibrate PRINCE's convergence bound from pilots of real split training (issue 18, part 2).

The bound (docs/prince.md) says a tenant needs ``R(q) = (alpha * S + beta) / eps`` rounds to reach
its target, with ``S = sum_n p_n**2 * G2_n / q_n`` over its devices (shares p renormalised over
them). A pilot is a real run of the tenant of ``configs/splitfed_multitenant.yaml`` on k of the
24 devices (spread over the population, each holding 1/24 of the tenant's data, as in the closed
loop) at one participation probability q for all, with unbiased (Horvitz-Thompson) merging, until
its target or a round cap (no deadline). With equal gradient scales (G2 = 1: not measured)
S = sum_n p_n**2 / q, p_n the device's share of the examples the k devices hold (the tenant's
partition deals unequal amounts; 1 / (k q) were they equal). The rounds to target are fitted by non-negative least squares,
``R = a * S + b`` (a = alpha / eps, b = beta / eps at the tenant's target), over the pilots that
reached it; pilots with equal S and different (k, q) test whether S is the right statistic.

Writes the fit into ``src/edgefm/market/data/prince_tenants.json`` (alpha = a, beta = b,
calibrated: true, with the points) and benchmarks/results/prince_pilot.{json,md}.

    python -m benchmarks.prince_pilot [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import yaml
from scipy.optimize import nnls

from benchmarks._common import RESULTS, ROOT, write

FILE = ROOT / "configs" / "splitfed_multitenant.yaml"
TENANTS_JSON = ROOT / "src" / "edgefm" / "market" / "data" / "prince_tenants.json"
RUNS = RESULTS / "runs" / "prince_pilot"
PILOTS = [(3, 1.0), (6, 1.0), (12, 1.0), (6, 0.5), (12, 0.5), (24, 0.5)]  # (k devices, q)
# the two slow tenants (seconds of wall time a round) get four: S = 1/3, 1/6, 1/12 and 1/6 again
SLOW = {
    "minilm_sst2": [(3, 1.0), (6, 1.0), (12, 1.0), (12, 0.5)],
    "llama_bbcnews": [(3, 1.0), (6, 1.0), (12, 1.0), (12, 0.5)],
}
CAP = {"vit_mnist": 200, "whisper_fsdd": 200, "minilm_sst2": 40, "llama_bbcnews": 30}  # rounds
POPULATION = 24


def train(path, out, sets: list[str] = ()) -> dict:
    """``edgefm train <tenants file>`` in a subprocess; a folder with a tenants.json is reused."""
    if not (out / "tenants.json").is_file():
        subprocess.run(["rm", "-rf", str(out)], check=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "edgefm.cli", "train", str(path), "--out", str(out)]
        cmd += [a for s in sets for a in ("--set", s)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads((out / "tenants.json").read_text())


def entry(tenant: dict, devices: list[int], sets: list[str]) -> dict:
    """A tenant of the multitenant file on ``devices`` with extra overrides, its config absolute."""
    kept = {k: v for k, v in tenant.items() if k not in ("clients", "set", "config")}
    config = str((FILE.parent / tenant["config"]).resolve())
    return {**kept, "config": config, "devices": devices, "set": [*tenant.get("set", []), *sets]}


def spread(k: int) -> list[int]:
    """k devices spread over the population (the last always in, so the population stays 24)."""
    return sorted({int(round(x)) for x in np.linspace(POPULATION - 1, 0, k)})


def pilot(raw: dict, tenant: dict, k: int, q: float, seed: int) -> dict:
    tag = f"{tenant['name']}-k{k}-q{q:g}-s{seed}"
    sets = [f"rounds={CAP[tenant['name']]}", f"algorithm.participation=[{q}]", "algorithm.aggregation=unbiased"]
    path = RUNS / f"{tag}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    # no deadline: a pilot measures rounds to target, up to its cap
    doc = {"seed": seed, "edge": raw.get("edge", {}), "tenants": [{**entry(tenant, spread(k), sets), "deadline": 1e9}]}
    path.write_text(yaml.safe_dump(doc))
    (result,) = train(path, RUNS / tag)["tenants"]
    sizes = data_sizes(RUNS / tag / tenant["name"] / "clients.jsonl")
    p = np.array(sizes) / sum(sizes)  # the devices' shares of the data they hold together
    return {
        "tenant": tenant["name"],
        "k": len(result["devices"]),
        "q": q,
        "S": float(np.sum(p**2) / q),
        "target": tenant["target"],
        "rounds to target": result["target_round"],
        "final": result["final"],
        "cap": CAP[tenant["name"]],
    }


def data_sizes(clients_jsonl) -> list[int]:
    """Each device's training examples, from the ledger of its run (the rounds it trained)."""
    sizes: dict[int, int] = {}
    for line in clients_jsonl.read_text().splitlines():
        row = json.loads(line)
        if row["status"] == "ok":
            sizes[row["client"]] = max(sizes.get(row["client"], 0), int(row["num_examples"]))
    return [sizes[c] for c in sorted(sizes)]


def fit(points: list[dict]) -> dict:
    """R = a S + b by non-negative least squares over the pilots that reached the target."""
    hit = [p for p in points if p["rounds to target"] is not None]
    if len(hit) < 2:
        return {"a": None, "b": None, "r2": None, "points_fitted": len(hit)}
    s = np.array([p["S"] for p in hit])
    r = np.array([p["rounds to target"] for p in hit], dtype=float)
    (a, b), _ = nnls(np.column_stack([s, np.ones_like(s)]), r)
    resid = r - (a * s + b)
    total = np.sum((r - r.mean()) ** 2)
    return {"a": float(a), "b": float(b), "r2": float(1 - resid @ resid / total) if total > 0 else None,
            "points_fitted": len(hit)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    raw = yaml.safe_load(FILE.read_text())
    rows, fits = [], {}
    for tenant in raw["tenants"]:
        points = [pilot(raw, tenant, k, q, args.seed) for k, q in SLOW.get(tenant["name"], PILOTS)]
        fits[tenant["name"]] = {**fit(points), "points": points}
        for p in points:
            f = fits[tenant["name"]]
            p["fit"] = None if f["a"] is None else f["a"] * p["S"] + f["b"]
            rows.append(p)
        print(json.dumps({tenant["name"]: {k: v for k, v in fits[tenant["name"]].items() if k != "points"}}))
    table = json.loads(TENANTS_JSON.read_text())
    for t in table["tenants"]:
        f = fits.get(t["name"])
        if f is not None and f["a"] is not None and f["a"] + f["b"] > 0:
            t.update(alpha=f["a"], beta=f["b"], calibrated=True, g2=1.0)
            t["pilot"] = {"r2": f["r2"], "points": [[p["k"], p["q"], p["rounds to target"]] for p in f["points"]]}
        else:
            t.update(alpha=1.0, beta=1.0, calibrated=False)
            t.pop("pilot", None)
    table["calibration"] = (
        "python -m benchmarks.prince_pilot: R = alpha S + beta rounds at the tenant's target (eps = 1)"
    )
    TENANTS_JSON.write_text(json.dumps(table, indent=1) + "\n")
    summary = "\n".join(
        f"- {name}: a = {f['a']:.4g}, b = {f['b']:.4g}, R^2 = {f['r2'] if f['r2'] is None else round(f['r2'], 3)}, "
        f"{f['points_fitted']} of {len(f['points'])} pilots reached the target"
        if f["a"] is not None
        else f"- {name}: not calibrated ({f['points_fitted']} pilots reached the target)"
        for name, f in fits.items()
    )
    notes = "\n".join(
        [
            "## Fit: rounds to target R = a S + b (S = sum p_n^2 / q over the pilot's devices)",
            "",
            summary,
            "",
            "rounds to target: the first round whose test metric met the tenant's target (None: not within",
            "the cap). fit: a S + b. Each pilot is one seed; the spread between pilots of equal S is the",
            "noise the bound does not model. G2 is taken equal (1) for every device: not measured.",
        ]
    )
    meta = {
        "seed": args.seed,
        "pilots": [list(p) for p in PILOTS],
        "slow tenants' pilots": SLOW,
        "population": POPULATION,
    }
    path = write(
        "prince_pilot", "PRINCE: the convergence bound calibrated from pilot split training", rows, meta, notes
    )
    print(path.read_text())


if __name__ == "__main__":
    main()

"""PRINCE market evidence (issue 18, part 1: the market alone): writes benchmarks/results/prince.{json,md}.

1. On random instances (20-100 devices, 1-4 tenants, the measured tenants of
   ``market/data/prince_tenants.json``): PRINCE's equilibrium quality (device regret, exact;
   tenant regret, sampled), sweeps and time; each tenant's J_m and payment under PRINCE, each
   baseline and the planner's social optimum (a reference), as the ratio to PRINCE's J_m over the tenants both serve, and how many tenants
   meet their budget and deadline.
2. Scale: N = 1,000 and 10,000 devices with M = 8 tenants, one seed.

    python -m benchmarks.prince [--instances 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import table, write
from edgefm.market import prince
from edgefm.market import prince_baselines as B
from edgefm.market.prince_instance import generate

METHODS = ("prince", "uniform", "isolated", "random", "topk", "social")


def solve(inst, name: str, rng: np.random.Generator, outs: dict) -> dict:
    if name == "social":  # the planner's reference, from every priced outcome (they honour budgets)
        return B.social(inst, [outs[k] for k in ("prince", "uniform", "isolated", "topk")])
    if name == "prince":
        return prince.equilibrium(inst)
    if name == "random":
        return B.random(inst, rng)
    return getattr(B, name)(inst)


def random_instances(n_instances: int, seed: int) -> tuple[list[dict], dict]:
    per = {
        k: {"ratio": [], "served": 0, "budget_met": 0, "deadline_met": 0, "paid": [], "seconds": []} for k in METHODS
    }
    quality = {"device_regret": [], "tenant_regret": [], "sweeps": [], "converged": 0, "tenants": 0}
    for k in range(n_instances):
        rng = np.random.default_rng([seed, k])
        inst = generate(int(rng.integers(20, 101)), int(rng.integers(1, 5)), rng)
        outs = {}
        for name in METHODS:
            start = time.perf_counter()
            outs[name] = solve(inst, name, np.random.default_rng([seed, k, 1]), outs)
            per[name]["seconds"].append(time.perf_counter() - start)
        ref = outs["prince"]
        quality["device_regret"].append(ref["device_regret"])
        quality["tenant_regret"].append(max(prince.tenant_regret(inst, ref, np.random.default_rng([seed, k, 2]), 10)))
        quality["sweeps"].append(ref["sweeps"])
        quality["converged"] += ref["converged"]
        quality["tenants"] += inst.n_tenants
        for name, out in outs.items():
            for t, r in zip(out["tenants"], ref["tenants"], strict=True):
                served = t["time"] is not None
                per[name]["served"] += served
                per[name]["budget_met"] += t["budget_met"]
                per[name]["deadline_met"] += t["deadline_met"] and t["budget_met"]
                per[name]["paid"].append(t["payment"] / t["budget"])
                if served and r["time"] is not None:
                    per[name]["ratio"].append(t["time"] / r["time"])
    rows = []
    for name in METHODS:
        p = per[name]
        ratio = np.array(p["ratio"])
        rows.append(
            {
                "method": name,
                "tenants served": f"{p['served']}/{quality['tenants']}",
                "budget met": f"{p['budget_met']}/{quality['tenants']}",
                "deadline and budget met": f"{p['deadline_met']}/{quality['tenants']}",
                "J / PRINCE J (median)": float(np.median(ratio)) if len(ratio) else float("nan"),
                "J / PRINCE J (mean)": float(np.mean(ratio)) if len(ratio) else float("nan"),
                "share of budget paid (mean)": float(np.mean(p["paid"])),
                "solve ms (median)": 1e3 * float(np.median(p["seconds"])),
            }
        )
    q = {
        "instances": n_instances,
        "converged": quality["converged"],
        "device_regret_max": float(np.max(quality["device_regret"])),
        "tenant_regret_median": float(np.median(quality["tenant_regret"])),
        "tenant_regret_p90": float(np.percentile(quality["tenant_regret"], 90)),
        "tenant_regret_max": float(np.max(quality["tenant_regret"])),
        "sweeps_median": float(np.median(quality["sweeps"])),
        "sweeps_max": int(np.max(quality["sweeps"])),
    }
    return rows, q


def scale(seed: int) -> list[dict]:
    rows = []
    for n in (1_000, 10_000):
        inst = generate(n, 8, np.random.default_rng(seed))
        start = time.perf_counter()
        out = prince.equilibrium(inst)
        rows.append(
            {
                "devices": n,
                "tenants": 8,
                "seconds": time.perf_counter() - start,
                "sweeps": out["sweeps"],
                "converged": out["converged"],
                "device_regret": out["device_regret"],
                "devices serving": int(sum(t >= 0 for t in out["tenant"])),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows, quality = random_instances(args.instances, args.seed)
    big = scale(args.seed)
    notes = "\n".join(
        [
            "## PRINCE's equilibrium quality",
            "",
            *[f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in quality.items()],
            "",
            "device regret: the largest gain any device gets from changing tenant or q (exact). tenant regret: the",
            "largest relative fall of J_m found by 10 random price perturbations per tenant (members' prices",
            "scaled by exp(0.1 z); half also offer a non-member a member's price; prices capped at the q = 1 price).",
            "J ratios are over the tenants both PRINCE and the method serve; > 1: slower than PRINCE.",
            "`random` rounds use the unbiased bound; with naive averaging real training can only need more.",
            "`social`: a reference, not a mechanism: a planner assigns devices and q to minimise the sum of J_m,",
            "paying devices their cost within every budget (local search from the priced outcomes; a local",
            "optimum, so the gap it shows is a lower bound on PRINCE's distance from the true optimum).",
            "",
            "## Scale (one seed)",
            "",
            *table(big),
        ]
    )
    meta = {"instances": args.instances, "seed": args.seed, "devices": "20-100", "tenants": "1-4"}
    path = write("prince", "PRINCE market: equilibrium, baselines, scale (part 1)", rows, {**meta}, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()

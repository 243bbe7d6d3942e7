"""PRINCE's closed loop (issue 18, part 2): the market decides who trains for whom and how often,
real split fine-tuning of the four tenants measures what that buys.

1. The market: the population and tenants of ``configs/splitfed_multitenant.yaml``; each device's
   round cost and time from its profile and the tenant's measured per-round work
   (``market/data/prince_tenants.json``); the convergence bound calibrated by pilots of real split
   training (``benchmarks/prince_pilot.py``: R = alpha S + beta rounds to the tenant's target, so
   eps = 1); each device's data share p_{n,m} is what the tenant's partition deals it over the
   24 devices (G2 = 1, except for "PRINCE (measured G2)": each device's measured start-gradient
   norm and the bound refitted with it, benchmarks/prince_g2.py); each tenant's budget 1.5 times what its default job costs
   (its 6 devices of the tenants file at q = 1, paid at cost, for the bound's rounds);
   deadlines from the tenants file.
2. Each method's outcome (PRINCE's equilibrium; PRINCE with each tenant's coverage floor, the
   least share of its data a pilot that reached the target held, below which the bound is not
   trusted; uniform prices, isolated tenants, random participation with naive averaging, top-k,
   the planner's social optimum as a reference, PRINCE priced with measured G2, and PRINCE priced
   with the bound that models data coverage, benchmarks/prince_coverage.py)
   becomes a tenants file: each tenant gets the devices that chose it, with their q as
   ``algorithm.participation`` (Horvitz-Thompson merging; naive for random).
3. ``edgefm train`` runs it: each tenant trains until its target or deadline (simulated seconds).
   From each tenant's run: rounds and simulated seconds to target, the measured mean round time,
   and what it paid (its price for every round each device actually trained).

Writes benchmarks/results/prince_loop.{json,md}; run folders are kept (reused on a re-run).

    python -m benchmarks.prince_loop [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math

import numpy as np
import yaml

from benchmarks import prince_coverage, prince_g2
from benchmarks._common import RESULTS, table, write
from benchmarks.prince_pilot import FILE, entry, spread, train
from edgefm.fl import tenants as TN
from edgefm.market import prince
from edgefm.market import prince_baselines as B
from edgefm.market.prince_instance import Instance, load_tenants, round_costs

RUNS = RESULTS / "runs" / "prince_loop"
# rounds at most (the wall time a round costs here bounds them; a tenant stopped by its cap before
# its deadline is marked in the table)
CAP = {"vit_mnist": 200, "whisper_fsdd": 200, "minilm_sst2": 50, "llama_bbcnews": 40}
TAGS = {  # method -> its run folders' name
    "PRINCE": "prince",
    "PRINCE + floor": "prince-floor",
    "uniform price": "uniform",
    "isolated": "isolated",
    "random + naive": "random",
    "top-k by data": "top-k",
    "social optimum": "social",
    "PRINCE (measured G2)": "prince-g2",
    "PRINCE + coverage bound": "prince-coverage",
}
METHODS = tuple(TAGS)
OWN_BOUND = ("PRINCE (measured G2)", "PRINCE + coverage bound")  # priced with a bound of their own


def market(chosen, population, seed: int) -> Instance:
    works = {w["name"]: w for w in load_tenants()}
    work = [works[t.name] for t in chosen]
    if not all(w.get("calibrated") for w in work):
        raise SystemExit("the tenants' bounds are not calibrated: run python -m benchmarks.prince_pilot first")
    n, m = len(population), len(chosen)
    seconds, cost, h, theta = round_costs(population, work)
    rng = np.random.default_rng([seed, 5])
    gamma = cost.mean(axis=1) * rng.uniform(0.5, 2.0, n)
    alpha, beta = np.array([w["alpha"] for w in work]), np.array([w["beta"] for w in work])
    sizes = prince_coverage.data_sizes(chosen)
    share = sizes / sizes.sum(axis=0, keepdims=True)
    budget = np.zeros(m)
    for k in range(m):  # the default job: the tenant's 6 devices of the tenants file at q = 1
        mine = np.arange(6 * k, 6 * k + 6)
        p = share[mine, k] / share[mine, k].sum()
        rounds = alpha[k] * np.sum(p**2) + beta[k]
        budget[k] = 1.5 * rounds * np.sum(cost[mine, k] + theta[k] * 6 + gamma[mine] / 2)
    return Instance(
        eps=np.ones(m), deadline=[t.deadline for t in chosen], budget=budget, theta=theta, alpha=alpha, beta=beta,
        edge_seconds=h, gamma=gamma, share=share, cost=cost, g2=np.ones((n, m)),
        seconds=seconds, names=[t.name for t in chosen],
    )  # fmt: skip


def coverage_floor(inst: Instance) -> np.ndarray:
    """Per tenant, the least share of its data any pilot that reached the target held (the bound
    is calibrated there and no lower; ``benchmarks/prince_pilot.py`` spreads its k devices)."""
    works = {w["name"]: w for w in load_tenants()}
    floors = []
    for m, name in enumerate(inst.names):
        reached = [int(k) for k, _, r in works[name]["pilot"]["points"] if r is not None]
        floors.append(min(float(inst.share[spread(k), m].sum()) for k in reached))
    return np.array(floors)


def with_g2(inst: Instance, seed: int) -> Instance:
    """The same market with each device's measured G2 and the bound refitted with it
    (``benchmarks/prince_g2.py``); the same budgets, so the same money as every other method."""
    g2, fits = prince_g2.load(seed)
    alpha = [fits[name]["alpha"] for name in inst.names]
    beta = [fits[name]["beta"] for name in inst.names]
    return dataclasses.replace(inst, g2=g2 * (inst.share > 0), alpha=alpha, beta=beta)  # validated again


def with_coverage(inst: Instance) -> Instance:
    """The same market with the bound that models data coverage (``benchmarks/prince_coverage.py``:
    alpha, beta and rho refitted on the pilots and two smaller ones); the same budgets."""
    fits = [prince_coverage.load()[name] for name in inst.names]
    return dataclasses.replace(
        inst, alpha=[f["a"] for f in fits], beta=[f["b"] for f in fits], coverage_error=[f["rho"] for f in fits]
    )


def outcomes(inst: Instance, seed: int, methods: tuple[str, ...] = METHODS) -> dict[str, tuple[dict, bool]]:
    """Each method's outcome and whether its tenants merge naively."""
    floored = copy.deepcopy(inst)
    floored.min_share = coverage_floor(inst)
    out = {
        "PRINCE": (prince.equilibrium(inst), False),
        "PRINCE + floor": (prince.equilibrium(floored), False),
        "uniform price": (B.uniform(inst), False),
        "isolated": (B.isolated(inst), False),
        "random + naive": (B.random(inst, np.random.default_rng([seed, 9])), True),
        "top-k by data": (B.topk(inst), False),
    }
    priced = [out[k][0] for k in ("PRINCE", "uniform price", "isolated", "top-k by data")]
    out["social optimum"] = (B.social(inst, priced), False)
    if "PRINCE (measured G2)" in methods:
        out["PRINCE (measured G2)"] = (prince.equilibrium(with_g2(inst, seed)), False)
    if "PRINCE + coverage bound" in methods:
        out["PRINCE + coverage bound"] = (prince.equilibrium(with_coverage(inst)), False)
    return out


def tenants_file(raw: dict, outcome: dict, naive: bool, seed: int, path) -> None:
    tenant, q = np.array(outcome["tenant"]), np.array(outcome["q"])
    entries = []
    for m, t in enumerate(raw["tenants"]):
        mine = [int(i) for i in np.flatnonzero((tenant == m) & (q > 0))]
        if mine:
            qs = "[" + ",".join(f"{max(q[i], 0.05):.4f}" for i in mine) + "]"
            sets = [f"rounds={CAP[t['name']]}", f"algorithm.participation={qs}"]
            entries.append(entry(t, mine, [*sets, f"algorithm.aggregation={'naive' if naive else 'unbiased'}"]))
    path.write_text(yaml.safe_dump({"seed": seed, "edge": raw.get("edge", {}), "tenants": entries}))


def paid(run_dir, devices: list[int], prices: list[float]) -> tuple[float, int]:
    """What the tenant paid: its price for every round each of its devices trained; and the rounds run."""
    total, rounds = 0.0, 0
    for line in (run_dir / "clients.jsonl").read_text().splitlines():
        row = json.loads(line)
        rounds = max(rounds, row["round"])
        if row["status"] == "ok":
            total += prices[devices[row["client"]]]
    return total, rounds


def run_seed(raw: dict, seed: int, methods: tuple[str, ...] = METHODS) -> list[dict]:
    chosen, population, _ = TN.load(FILE, [f"seed={seed}"])
    inst = market(chosen, population, seed)
    rows = []
    for label, (out, naive) in outcomes(inst, seed, methods).items():
        if label not in methods:
            continue
        tag = f"{TAGS[label]}-s{seed}"
        path = RUNS / f"{tag}.yaml"
        tenants_file(raw, out, naive, seed, path)
        result = {t["name"]: t for t in train(path, RUNS / tag)["tenants"]}
        for m, t in enumerate(out["tenants"]):
            r = result.get(t["name"])
            spent, ran = paid(RUNS / tag / t["name"], r["devices"], out["prices"][m]) if r else (0.0, 0)
            rows.append(
                {
                    "method": label,
                    "seed": seed,
                    "tenant": t["name"],
                    "devices": len(r["devices"]) if r else 0,
                    "mean q": float(np.mean([out["q"][i] for i in r["devices"]])) if r else 0.0,
                    "bound rounds": t["rounds"],
                    "rounds to target": None if r is None else r["target_round"],
                    "rounds run": ran,
                    "sim s/round": r["sim_seconds"] / ran if r and ran else None,
                    "time to target (sim s)": None if r is None else r["target_seconds"],
                    "deadline": chosen[m].deadline,
                    "met": bool(r and r["deadline_met"]),
                    "capped": bool(
                        r
                        and not r["target_reached"]
                        and ran >= CAP[t["name"]]
                        and r["sim_seconds"] < chosen[m].deadline
                    ),
                    "final": None if r is None else r["final"],
                    "paid": spent,
                    "budget": float(inst.budget[m]),
                }
            )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    ref = {(r["seed"], r["tenant"]): r for r in rows if r["method"] == "PRINCE"}
    out = []
    for label in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == label]
        both = [(r, ref[(r["seed"], r["tenant"])]) for r in mine]
        ratio = [a["time to target (sim s)"] / b["time to target (sim s)"] for a, b in both
                 if a["time to target (sim s)"] and b["time to target (sim s)"]]  # fmt: skip
        per_round = [r["sim s/round"] for r in mine if r["sim s/round"]]
        hit = [r["rounds to target"] for r in mine if r["rounds to target"]]
        out.append(
            {
                "method": label,
                "targets met by deadline": f"{sum(r['met'] for r in mine)}/{len(mine)}",
                "time to target / PRINCE (median, both met)": float(np.median(ratio)) if ratio else None,
                "rounds to target (median, reached)": float(np.median(hit)) if hit else None,
                "sim s/round (median)": float(np.median(per_round)) if per_round else None,
                "paid within budget": f"{sum(r['paid'] <= r['budget'] for r in mine)}/{len(mine)}",
                "paid / budget (mean)": float(np.mean([r["paid"] / r["budget"] for r in mine])),
            }
        )
    return out


def bound_check(rows: list[dict], what: str = "") -> list[str]:
    pairs = [(r["bound rounds"], r["rounds to target"]) for r in rows if r["bound rounds"] and r["rounds to target"]]
    if not pairs:
        return [f"No run{what} reached its target: the bound cannot be checked."]
    b, m = np.array(pairs, dtype=float).T
    ratio = m / b
    corr = float(np.corrcoef(np.log(b), np.log(m))[0, 1]) if len(pairs) > 2 and np.ptp(b) > 0 else math.nan
    return [
        f"Over the {len(pairs)} tenant runs{what} that reached their target: measured rounds / the bound's rounds,",
        f"median {np.median(ratio):.3g} (p10 {np.percentile(ratio, 10):.3g}, p90 {np.percentile(ratio, 90):.3g});",
        f"correlation of their logs {corr:.3g}.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help="a subset of METHODS (by label)")
    ap.add_argument(
        "--add-to-saved",
        action="store_true",
        help="run only --seeds and add them to the other seeds' rows in prince_loop_runs.json (run folders "
        "are not kept in git: a new checkout would otherwise re-run every seed, about half an hour each)",
    )
    args = ap.parse_args()
    raw = yaml.safe_load(FILE.read_text())
    RUNS.mkdir(parents=True, exist_ok=True)
    rows, reused, measured = [], [], [(s, m) for s in args.seeds for m in args.methods]
    if args.add_to_saved:  # the saved rows of every (seed, method) this run does not measure
        saved = json.loads((RESULTS / "prince_loop_runs.json").read_text())
        rows = [r for r in saved if (r["seed"], r["method"]) not in measured]
        reused = sorted({(r["seed"], r["method"]) for r in rows})
    rows += [row for seed in args.seeds for row in run_seed(raw, seed, tuple(args.methods))]
    rows.sort(key=lambda r: (r["seed"], METHODS.index(r["method"])))
    args.seeds = sorted({r["seed"] for r in rows})
    args.methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    (RESULTS / "prince_loop_runs.json").write_text(json.dumps(rows, indent=1) + "\n")
    fits = {w["name"]: (w["alpha"], w["beta"], w.get("pilot", {}).get("r2")) for w in load_tenants()}
    notes = "\n".join(
        [
            "## Every tenant run",
            "",
            *table(rows),
            "",
            "## The bound against the measured rounds",
            "",
            *bound_check([r for r in rows if r["method"] not in OWN_BOUND], " with G2 = 1"),
            "",
            *bound_check([r for r in rows if r["method"] == "PRINCE (measured G2)"], " with measured G2"),
            "",
            *bound_check([r for r in rows if r["method"] == "PRINCE + coverage bound"], " with the coverage bound"),
            "",
            "Calibration (benchmarks/results/prince_pilot.md), rounds = a S + b: "
            + "; ".join(
                f"{k}: a {a:.3g}, b {b:.3g}, R^2 {r2 if r2 is None else round(r2, 2)}" for k, (a, b, r2) in fits.items()
            ),
            "",
            "bound rounds: the market's R_m for the tenant's devices and q. rounds to target / time to target:",
            "the first round (simulated seconds) whose test metric met the tenant's target; None: not before",
            "its deadline (capped: stopped by the round cap first). sim s/round: its simulated seconds over the rounds it ran (the edge server shared",
            "with the other tenants). paid: its price for every round each device trained. The social optimum",
            "is a planner's reference, not a mechanism (docs/prince.md).",
        ]
    )
    meta = {
        "seeds": args.seeds,
        "methods": args.methods,
        "devices": 24,
        "tenants": len(raw["tenants"]),
        "round caps": CAP,
    }
    if reused:  # say what this run measured and what it took from the saved rows
        meta["measured now (seeds x methods)"] = (
            f"{sorted({s for s, _ in measured})} x {sorted({m for _, m in measured})}"
        )
        meta["the rest from the saved rows (earlier runs, same settings)"] = len(reused)
    p = write(
        "prince_loop", "PRINCE closed loop: the market decides, split training measures", summarise(rows), meta, notes
    )
    print(p.read_text())


if __name__ == "__main__":
    main()

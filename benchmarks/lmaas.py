"""LMaaS market evidence (issue 7): writes benchmarks/results/lmaas.{json,md}.

1. Customers' realised worst-case profit under RSR vs the nominal (non-robust) choice and the
   other customer baselines, across uncertainty levels delta.
2. IMP's seller profit as a fraction of the exhaustive grid optimum on 200 random instances
   with M <= 3, and the time each takes; the other seller baselines alongside.
3. Scale: IMP on 100,000 customers and 8 models (goal: under 5 s).
4. Dynamic market: warm-started vs cold IMP over 10 periods.

    python -m benchmarks.lmaas [--instances 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks._common import RESULTS, machine, table
from edgefm.market import lmaas
from edgefm.market import lmaas_baselines as B


def customers_vs_uncertainty(seed: int) -> list[dict]:
    rows = []
    for delta in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7):
        totals: dict[str, list[float]] = {}
        for k in range(10):
            inst = lmaas.generate(500, 4, np.random.default_rng([seed, k]), delta=delta)
            prices, _ = lmaas.imp(inst)
            for name, prof in B.customer_baselines(inst, prices, np.random.default_rng([seed, k, 1])).items():
                totals.setdefault(name, []).append(float(prof.sum()))
        row = {"delta": delta}
        row.update({name: float(np.mean(v)) for name, v in totals.items()})
        best_other = max(row[n] for n in totals if n != "rsr")
        row["rsr_vs_nominal_%"] = 100 * (row["rsr"] - row["nominal"]) / abs(row["nominal"]) if row["nominal"] else 0.0
        row["rsr_vs_best_baseline_%"] = 100 * (row["rsr"] - best_other) / abs(best_other) if best_other else 0.0
        rows.append(row)
    return rows


def seller_vs_optimum(n_instances: int, seed: int) -> tuple[dict, list[dict]]:
    ratios, t_imp, t_ex, per = [], 0.0, 0.0, []
    baseline = {"uniform": [], "cost_plus": [], "random": []}
    for k in range(n_instances):
        rng = np.random.default_rng([seed, 100 + k])
        inst = lmaas.generate(int(rng.integers(5, 40)), int(rng.integers(1, 4)), rng)
        fixed = inst.train_cost.sum()  # sunk: compare operating profit (revenue - operating cost)
        start = time.perf_counter()
        prices, _ = lmaas.imp(inst)
        t_imp += time.perf_counter() - start
        start = time.perf_counter()
        _, best = B.exhaustive(inst, points=40)
        t_ex += time.perf_counter() - start
        opt = best + fixed
        if opt <= 1e-12:
            continue  # nobody can be served profitably: ratio undefined
        ratios.append((lmaas.seller_profit(inst, prices) + fixed) / opt)
        baseline["uniform"].append((B.uniform_price(inst)[1] + fixed) / opt)
        baseline["cost_plus"].append((B.cost_plus(inst)[1] + fixed) / opt)
        baseline["random"].append((B.random_prices(inst, rng)[1] + fixed) / opt)
    summary = {
        "instances": len(ratios),
        "imp_min": float(np.min(ratios)),
        "imp_median": float(np.median(ratios)),
        "imp_mean": float(np.mean(ratios)),
        "imp_seconds_total": t_imp,
        "exhaustive_seconds_total": t_ex,
        "speedup": t_ex / t_imp,
    }
    for name, vals in baseline.items():
        per.append(
            {"seller": name, "min": float(np.min(vals)), "median": float(np.median(vals)), "mean": float(np.mean(vals))}
        )
    per.insert(
        0, {"seller": "IMP", "min": summary["imp_min"], "median": summary["imp_median"], "mean": summary["imp_mean"]}
    )
    return summary, per


def scale(seed: int) -> dict:
    inst = lmaas.generate(100_000, 8, np.random.default_rng(seed))
    lmaas.imp(lmaas.generate(1000, 8, np.random.default_rng(seed)))  # warm-up
    start = time.perf_counter()
    prices, history = lmaas.imp(inst)
    seconds = time.perf_counter() - start
    return {
        "customers": 100_000,
        "models": 8,
        "seconds": seconds,
        "price_moves": len(history) - 1,
        "seller_profit": lmaas.seller_profit(inst, prices),
        "goal_s": 5.0,
        "met": seconds < 5.0,
    }


def dynamic(seed: int) -> list[dict]:
    inst = lmaas.generate(2000, 4, np.random.default_rng(seed))
    warm = B.simulate_dynamic(inst, 10, np.random.default_rng([seed, 9]), warm=True)
    cold = B.simulate_dynamic(inst, 10, np.random.default_rng([seed, 9]), warm=False)
    return [
        {
            "period": w["period"],
            "customers": w["customers"],
            "warm_profit": w["seller_profit"],
            "cold_profit": c["seller_profit"],
            "warm_moves": w["iterations"],
            "cold_moves": c["iterations"],
            "warm_s": w["seconds"],
            "cold_s": c["seconds"],
        }
        for w, c in zip(warm, cold, strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cust = customers_vs_uncertainty(args.seed)
    summary, sellers = seller_vs_optimum(args.instances, args.seed)
    big = scale(args.seed)
    dyn = dynamic(args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(),
        "args": vars(args),
        "customers": cust,
        "seller_summary": summary,
        "sellers": sellers,
        "scale": big,
        "dynamic": dyn,
    }
    (RESULTS / "lmaas.json").write_text(json.dumps(payload, indent=2))
    m = payload["machine"]
    lines = [
        "# LMaaS market: RSR customers, IMP seller",
        "",
        f"Machine: {m['cpu_cores']} cores, numpy only, {m['date']}. Seed {args.seed}. "
        "Regenerate: `python -m benchmarks.lmaas`. Model: `docs/lmaas.md`.",
        "",
        "## 1. Customers: total realised worst-case profit (mean of 10 instances x 500 customers, 4 models, IMP prices)",
        "",
        *table(cust),
        "",
        "RSR is worst-case optimal per customer, so it can only gain over the nominal choice; the gain grows with "
        "the uncertainty delta (nominal customers rent too long, over-pay for rental they cannot use once the "
        "energy cap binds at the worst SNR). The paper reports up to +43.96% over the state of the art.",
        "",
        f"## 2. Seller: profit / exhaustive grid optimum ({summary['instances']} random instances, M <= 3, "
        "40-point grid per model; operating profit, training costs being sunk)",
        "",
        *table(sellers),
        "",
        f"IMP: min {summary['imp_min']:.4f}, median {summary['imp_median']:.4f} (goal: median >= 0.99, min >= 0.95). "
        f"Time: IMP {summary['imp_seconds_total']:.2f} s vs exhaustive {summary['exhaustive_seconds_total']:.1f} s "
        f"in all ({summary['speedup']:.0f}x faster). Ratios above 1 are IMP refining between grid points.",
        "",
        "## 3. Scale",
        "",
        *table([big]),
        "",
        "## 4. Dynamic market (2,000 customers, 4 models; 10% leave, 10% arrive, 5% drift per period)",
        "",
        *table(dyn),
        "",
    ]
    (RESULTS / "lmaas.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

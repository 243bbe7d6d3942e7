"""AERIA's resource-weighted auction in hourly slots (issue 21, item 3): writes
benchmarks/results/aeria_resource.{json,md}.

A day of 1,500 users arrives in 24 hourly slots of 39-112 bids (a diurnal demand curve). The
edge's rental price per GFLOP/s and its unit cost per GFLOP follow an hourly electricity price
(an illustrative two-peak shape, not market data). Each slot runs, on the same users:

- resource-weighted AERIA (``aeria_resource.py``, threshold and consensus variants) against the
  omniscient unit price F^(1), RSOP on unit prices and a posted unit margin (the best single
  margin of a calibration day, posted all day);
- per-user AERIA (``aeria.py``, both variants) against its omniscient per-user price.

Four CNN workloads and the measured MiniLM exits, days (seeds) 0-2. Then the guarantees by
black-box test on every slot of day 0: IC over budgets, IR, envy-freeness per unit.

    python -m benchmarks.aeria_resource [--days 3]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import RESULTS, machine, table
from edgefm.market import aeria, aeria_resource, properties
from edgefm.market import aeria_baselines as B

WORKLOADS = ["alexnet", "vgg16", "resnet50", "mobilenet_v2", "minilm_sst2"]
USERS, LO, HI = 1500, 39, 112
HOURS = np.arange(24)


def _bump(centre: float, width: float = 2.5) -> np.ndarray:
    return np.exp(-0.5 * ((HOURS - centre) / width) ** 2)


# electricity: a night trough, a morning and a higher evening peak (mean 1; illustrative shape)
ELECTRICITY = 1 + 0.35 * _bump(8) + 0.6 * _bump(19) - 0.3 * _bump(3)
ELECTRICITY = ELECTRICITY / ELECTRICITY.mean()


def slot_sizes() -> np.ndarray:
    """Bids per hourly slot: LO..HI along a demand curve peaking in the evening, USERS in all."""
    demand = 0.2 + _bump(12, 4) + 1.2 * _bump(20, 2.5)
    s = (demand - demand.min()) / (demand.max() - demand.min())
    lo, hi = 0.01, 100.0  # the curve's exponent: a steeper curve, fewer users
    for _ in range(100):
        g = np.sqrt(lo * hi)
        lo, hi = (g, hi) if (LO + (HI - LO) * s**g).sum() > USERS else (lo, g)
    raw = LO + (HI - LO) * s**g
    n = np.floor(raw).astype(int)
    for h in np.argsort(-(raw - n))[: USERS - n.sum()]:  # largest remainders
        n[h] += 1
    return n


def slot(workload: str, day: int, hour: int, n: int) -> aeria.Instance:
    inst = aeria.generate(int(n), workload, np.random.default_rng([day, hour, 31]))
    inst.unit_cost *= float(ELECTRICITY[hour])
    inst.rental_price *= float(ELECTRICITY[hour])
    return inst


def calibrate(workload: str, sizes: np.ndarray) -> float:
    """The posted unit margin: the best single margin over a whole calibration day (day 99)."""
    d, a = [], []
    for h, n in enumerate(sizes):
        inst = slot(workload, 99, h, n)
        plans, order, dens = aeria_resource.market(inst, h)
        d.append(dens)
        a.append(plans.demand[order])
    return B.best_unit_price(np.concatenate(d), np.concatenate(a))[0]


def day_rows(days: int) -> tuple[list[dict], list[dict]]:
    sizes = slot_sizes()
    rows, hourly = [], []
    for wl in WORKLOADS:
        margin = calibrate(wl, sizes)
        totals: dict[str, list[float]] = {}
        for day in range(days):
            day_total: dict[str, float] = {}
            for h, n in enumerate(sizes):
                inst = slot(wl, day, h, n)
                res = {f"resource {k}": v for k, v in B.resource_pricing(inst, h, margin).items()}
                net, _ = B.net_bids(inst, h)
                res["per-user omniscient"] = B.omniscient(net)
                for variant in aeria.VARIANTS:
                    o = aeria.run_auction(inst, h, variant)
                    res[f"per-user aeria_{variant}"] = {"revenue": o.revenue, "winners": len(o.winners)}
                res["edge users"] = {"revenue": float(len(aeria_resource.market(inst, h)[1])), "winners": 0}
                for k, v in res.items():
                    day_total[k] = day_total.get(k, 0.0) + v["revenue"]
                    day_total[f"{k} winners"] = day_total.get(f"{k} winners", 0.0) + v["winners"]
                if day == 0 and wl == "resnet50":
                    hourly.append(
                        {
                            "hour": h,
                            "bids": int(n),
                            "electricity": float(ELECTRICITY[h]),
                            "rental_$/GFLOP/s": inst.rental_price,
                            "edge_users": int(res["edge users"]["revenue"]),
                            "F1_unit": res["resource omniscient"]["revenue"],
                            "threshold": res["resource aeria_threshold"]["revenue"],
                            "consensus": res["resource aeria_consensus"]["revenue"],
                            "winners_consensus": res["resource aeria_consensus"]["winners"],
                            "per_user_threshold": res["per-user aeria_threshold"]["revenue"],
                        }
                    )
            for k, v in day_total.items():
                totals.setdefault(k, []).append(v)
        for k in [k for k in totals if not k.endswith("winners") and k != "edge users"]:
            own = "resource omniscient" if k.startswith("resource") else "per-user omniscient"
            rows.append(
                {
                    "workload": wl,
                    "mechanism": k,
                    "revenue_per_day": f"{np.mean(totals[k]):.4f} ± {np.std(totals[k]):.4f}",
                    "of_own_omniscient": float(np.mean(totals[k]) / np.mean(totals[own])) if totals[own][0] else 0.0,
                    "winners_per_day": float(np.mean(totals[f"{k} winners"])),
                    "edge_users_per_day": float(np.mean(totals["edge users"])),
                    "posted_margin": margin if k == "resource posted" else None,
                }
            )
    return rows, hourly


def property_rows(deviations: int) -> list[dict]:
    sizes = slot_sizes()
    rows = []
    for variant in aeria_resource.VARIANTS:
        ic = total = ir = envy = slots = 0
        for k, wl in enumerate(WORKLOADS):
            for h, n in enumerate(sizes):
                inst = slot(wl, 0, h, n)
                mech = lambda i, s, v=variant: aeria_resource.run_resource_auction(i, s, v)  # noqa: E731
                out = mech(inst, h)
                bad, _ = properties.ic_violations(mech, inst, h, np.random.default_rng([k, h]), deviations)
                ic, total = ic + bad, total + deviations
                ir += properties.ir_violations(out, inst)
                plans, order, _ = aeria_resource.market(inst, h)
                demand = np.where(np.isfinite(plans.demand), plans.demand, 0.0)
                inside = np.isin(np.arange(inst.n_users), order)
                envy += properties.envy_violations(out, inst, inst.rental_price * demand, inside, demand=demand)
                slots += 1
        rows.append(
            {
                "variant": variant,
                "slots": slots,
                "ic_deviations": total,
                "ic_violations": ic,
                "ir_violations": ir,
                "envy_violations_per_unit": envy,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--deviations", type=int, default=20, help="IC deviations per slot")
    args = ap.parse_args()
    rows, hourly = day_rows(args.days)
    props = property_rows(args.deviations)
    payload = {"machine": machine(), "args": vars(args), "sizes": slot_sizes().tolist(), "days": rows,
               "electricity": ELECTRICITY.tolist(),
               "hourly": hourly, "properties": props}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aeria_resource.json").write_text(json.dumps(payload, indent=2))
    render(payload)


def render(p: dict) -> None:
    m, sizes = p["machine"], p["sizes"]
    lines = [
        "# AERIA: the resource-weighted auction in hourly slots",
        "",
        f"Machine: {m['cpu_cores']} cores, numpy only, {m['date']}. Regenerate: "
        "`python -m benchmarks.aeria_resource`. Model: `docs/aeria.md` (the resource-weighted variant follows a "
        "third-party description of the paper, not its text).",
        "",
        f"A day of {sum(sizes):,} users in 24 hourly slots of {min(sizes)}-{max(sizes)} bids "
        "(`aeria.generate` users per slot); the rental price per GFLOP/s and the unit cost per GFLOP follow "
        f"an illustrative hourly electricity price ({min(p['electricity']):.2f}x-{max(p['electricity']):.2f}x its mean). Revenue is the ASP's, above what it "
        "pays the edge. *of_own_omniscient*: resource-weighted mechanisms against the omniscient unit price "
        "F^(1), per-user ones against the omniscient per-user price. The two pricings charge for different "
        "things (a unit of edge rate against one inference, device-only users paying only in per-user "
        "pricing), so their absolute revenues are compared with that caveat. "
        f"Days (seeds) 0-{p['args']['days'] - 1}, mean ± std of the daily total.",
        "",
        *table(p["days"]),
        "",
        "## One day, ResNet-50, hour by hour",
        "",
        *table(p["hourly"]),
        "",
        f"## Guarantees by black-box test (every slot of day 0, every workload; {p['args']['deviations']} "
        "random budget misreports per slot)",
        "",
        *table(p["properties"]),
        "",
        "The threshold variant's price never depends on the user's own budget: 0 IC violations is what it "
        "must show. The consensus variant charges one unit price to all (0 envy per unit by construction) "
        "and is truthful only where one budget cannot move the target across a grid point.",
        "",
    ]
    (RESULTS / "aeria_resource.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

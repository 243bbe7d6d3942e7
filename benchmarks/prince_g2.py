"""PRINCE's G2, measured (issue 18): each device's squared start-gradient norm for each tenant,
and the convergence bound refitted with it.

PRINCE's bound weighs device n's share of tenant m's data by G2_{n,m}, the squared norm of its
local gradient at the start, which the device reports once (docs/prince.md). Until now the
closed loop set every G2 to 1. This measures it (``fl/gradients.py``: the gradient of the mean
loss over the device's training data at the tenant's initial state, in the parameters the tenant
trains) for the 24 devices and 4 tenants of ``configs/splitfed_multitenant.yaml`` at each seed,
then refits each tenant's pilots (``benchmarks/prince_pilot.py``, seed 0) with
``S = sum_n p_n**2 * G2_n / q`` in place of ``sum_n p_n**2 / q``: the same pilots, no new
training. The closed loop's "PRINCE (measured G2)" row (``benchmarks/prince_loop.py``) prices
with these G2 and this fit.

Writes benchmarks/results/prince_g2.{json,md}.

    python -m benchmarks.prince_g2 [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import RESULTS, write
from benchmarks.prince_pilot import FILE, fit, spread
from edgefm.fl import tenants as TN
from edgefm.fl.gradients import start_gradients
from edgefm.fl.scenario import build
from edgefm.market.prince_instance import load_tenants

JSON = RESULTS / "prince_g2.json"


def measure(seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tenant names, [N, M] G2 and [N, M] training examples, at ``seed``."""
    chosen, _, _ = TN.load(FILE, [f"seed={seed}"])
    g2, sizes = [], []
    for t in chosen:
        sc = build(t.cfg)
        g2.append(start_gradients(sc))
        sizes.append([len(c.train) for c in sc.clients])
        print(seed, t.name, np.round(g2[-1], 4).tolist(), flush=True)
    return [t.name for t in chosen], np.array(g2).T, np.array(sizes, dtype=float).T


def refit(name: str, g2: np.ndarray, sizes: np.ndarray) -> dict:
    """The tenant's pilots (k devices spread over the population, one q) refitted with G2."""
    work = {w["name"]: w for w in load_tenants()}[name]
    points = []
    for k, q, rounds in work["pilot"]["points"]:
        mine = spread(int(k))
        p = sizes[mine] / sizes[mine].sum()
        points.append({"S": float(np.sum(p**2 * g2[mine]) / q), "rounds to target": rounds})
    f = fit(points)
    return {"alpha": f["a"], "beta": f["b"], "r2": f["r2"], "r2 (G2 = 1)": work["pilot"]["r2"]}


def load(seed: int) -> tuple[np.ndarray, dict[str, dict]]:
    """The saved [N, M] G2 at ``seed`` and each tenant's refitted bound (for the closed loop)."""
    saved = json.loads(JSON.read_text())
    if str(seed) not in saved["g2"]:
        raise SystemExit(f"no G2 measured at seed {seed}: run python -m benchmarks.prince_g2 --seeds {seed}")
    return np.array(saved["g2"][str(seed)]), saved["fits"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    measured = {s: measure(s) for s in args.seeds}
    names, g2_0, sizes_0 = measured[0] if 0 in measured else measure(0)  # the pilots ran at seed 0
    fits = {name: refit(name, g2_0[:, m], sizes_0[:, m]) for m, name in enumerate(names)}
    rows = []
    for seed, (_, g2, sizes) in measured.items():
        for m, name in enumerate(names):
            held = sizes[:, m] > 0
            g, share = g2[held, m], sizes[held, m] / sizes[held, m].sum()
            rows.append(
                {
                    "seed": seed,
                    "tenant": name,
                    "devices with data": int(held.sum()),
                    "G2 min": float(g.min()),
                    "G2 median": float(np.median(g)),
                    "G2 max": float(g.max()),
                    "max / min": float(g.max() / g.min()),
                    "corr(log G2, log share)": float(np.corrcoef(np.log(g), np.log(share))[0, 1]),
                }
            )

    def r2(v: float | None) -> str:
        return "undefined" if v is None else f"{v:.3f}"  # None: the pilots' rounds did not vary

    fit_lines = [
        f"- {k}: alpha {f['alpha']:.4g}, beta {f['beta']:.4g}, R^2 {r2(f['r2'])} (with G2 = 1: {r2(f['r2 (G2 = 1)'])})"
        if f["alpha"] is not None
        else f"- {k}: too few pilots reached the target to fit"
        for k, f in fits.items()
    ]
    notes = "\n".join(
        [
            "G2: squared norm of the gradient of the mean training loss over the device's data, at the",
            "tenant's initial state, in the parameters it trains (eval mode; fl/gradients.py). corr: across",
            "the devices holding data, of log G2 against the log of the device's share of the tenant's data.",
            "",
            "## The pilots refitted with measured G2 (seed 0), rounds = alpha S + beta, S = sum p^2 G2 / q",
            "",
            *fit_lines,
        ]
    )
    meta = {"seeds": sorted(measured), "devices": len(g2_0), "tenants": len(names)}
    write("prince_g2", "PRINCE: each device's start-gradient G2, measured", rows, meta, notes)
    payload = json.loads(JSON.read_text())
    payload["g2"] = {str(s): g.tolist() for s, (_, g, _) in measured.items()}
    payload["fits"] = fits
    JSON.write_text(json.dumps(payload, indent=1))
    print((RESULTS / "prince_g2.md").read_text())


if __name__ == "__main__":
    main()

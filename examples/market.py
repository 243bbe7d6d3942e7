"""PRINCE's market from Python: tenants price devices, devices pick a tenant and how often to
train; compare the equilibrium with uniform prices and the planner's social optimum.

    python examples/market.py [--tiny] [--devices 200] [--tenants 4]
"""

import argparse

import numpy as np

from edgefm.market import prince
from edgefm.market import prince_baselines as baselines
from edgefm.market.prince_instance import generate

ap = argparse.ArgumentParser()
ap.add_argument("--tiny", action="store_true")
ap.add_argument("--devices", type=int, default=200)
ap.add_argument("--tenants", type=int, default=4)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
n = 20 if args.tiny else args.devices

market = generate(n, args.tenants, np.random.default_rng(args.seed))  # JSON: market.to_dict()
ours = prince.equilibrium(market)
outcomes = {"PRINCE": ours, "uniform price": baselines.uniform(market)}
outcomes["social optimum"] = baselines.social(market, list(outcomes.values()))
print(f"{'method':15} " + " ".join(f"{t['name'][:14]:>15}" for t in ours["tenants"]) + "   (J_m: fine-tuning time, s)")
for name, out in outcomes.items():
    times = ["-" if t["time"] is None else f"{t['time']:.1f}" for t in out["tenants"]]
    print(f"{name:15} " + " ".join(f"{x:>15}" for x in times))
print(f"device regret at PRINCE's equilibrium: {ours['device_regret']:.2e}")

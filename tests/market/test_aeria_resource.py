"""AERIA's resource-weighted auction: demands, the O(n^2) routines against brute force, and the
guarantees by the same black-box checks as the per-user auction."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefm.market import aeria, properties
from edgefm.market import aeria_resource as R
from edgefm.market.aeria import generate, partition

WORKLOADS = ["alexnet", "vgg16", "resnet50", "mobilenet_v2", "minilm_sst2"]


def test_resource_plans_need_the_least_edge_rate():
    inst = generate(60, "resnet50", np.random.default_rng(0))
    plans, cheap = partition(inst, objective="resource"), partition(inst)
    assert np.array_equal(plans.feasible, cheap.feasible)  # the same plans meet the deadlines
    w = inst.workload
    for i in np.flatnonzero(plans.feasible)[:20]:
        e, c = plans.exit[i], plans.cut[i]
        whole = c == w.exit_after[e] + 1  # everything on the device
        device = (sum(w.layer_flops[:c]) + (w.exit_flops[e] if whole else 0)) * inst.complexity[i]
        up = w.input_bytes if c == 0 else w.out_bytes[c - 1]
        net = 0 if whole else inst.latency[i] + up / inst.uplink[i]
        slack = inst.deadline[i] - device / inst.device_flops[i] - net
        assert plans.demand[i] == pytest.approx(plans.edge_gflops[i] / slack if plans.edge_gflops[i] else 0.0)
        assert plans.demand[i] <= cheap.demand[i] + 1e-12  # never more than the edge-cheapest plan needs
        assert plans.demand[i] * 1e9 <= inst.edge_flops * (1 + 1e-9)  # the edge can give it
    assert np.all(np.isinf(plans.demand[~plans.feasible]))
    with pytest.raises(aeria.InstanceError, match="objective"):
        partition(inst, objective="latency")


def _brute_f2_without(d, a):
    return np.array([R.f_weighted(np.delete(d, j), np.delete(a, j)) for j in range(len(d))])


def _brute_threshold(d, a, targets):
    """Moulin's drop procedure with user j forced in, run literally."""
    t = np.full(len(d), np.inf)
    for j in range(len(d)):
        group = [k for k in range(len(d)) if k != j]
        while group:
            price = targets[j] / (a[j] + a[group].sum())
            keep = [k for k in group if d[k] >= price]
            if len(keep) == len(group):
                break
            group = keep
        if group and targets[j] > 0:
            t[j] = targets[j] / (a[j] + a[group].sum())
    return t


bids = st.lists(st.tuples(st.floats(-2, 50, allow_nan=False), st.floats(0.01, 20)), min_size=1, max_size=10)


@settings(max_examples=200, deadline=None)
@given(bids, st.floats(0.0, 200))
def test_routines_match_brute_force(pairs, target):
    pairs.sort(key=lambda p: -p[0])
    d, a = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    assert np.allclose(R.f2_without_each(d, a), _brute_f2_without(d, a))
    targets = np.full(len(d), target)
    assert np.allclose(R.thresholds_weighted(d, a, targets), _brute_threshold(d, a, targets))


def test_consensus_is_one_unit_price_that_raises_the_target():
    for seed in range(10):
        inst = generate(80, WORKLOADS[seed % 5], np.random.default_rng([seed, 1]))
        out = R.run_resource_auction(inst, seed, "consensus")
        if len(out.winners) == 0:
            continue
        units = out.unit_prices[out.winners]
        assert np.allclose(units, units[0]) and len(out.winners) >= 2
        assert out.revenue == pytest.approx(out.target)  # cost sharing recovers exactly R
        assert out.f2 / 1.2 - 1e-9 < out.target <= out.f2 + 1e-9
        plans, order, d = R.market(inst, seed)
        winners = set(out.winners.tolist())
        assert all((d[k] >= units[0] - 1e-12) == (order[k] in winners) for k in range(len(order)))


@pytest.mark.parametrize("variant", R.VARIANTS)
def test_individually_rational_and_never_sells_below_the_rental(variant):
    for seed in range(10):
        inst = generate(60, WORKLOADS[seed % 5], np.random.default_rng([seed, 2]))
        out = R.run_resource_auction(inst, seed, variant)
        assert properties.ir_violations(out, inst) == 0 and np.all(out.utilities >= -1e-12)
        demand = partition(inst, objective="resource").demand
        assert np.all(out.payments[out.winners] >= inst.rental_price * demand[out.winners] - 1e-15)
        assert out.eip_payment == pytest.approx(inst.rental_price * demand[out.winners].sum())


def test_threshold_variant_is_truthful_over_budgets():
    total = bad = 0
    for k in range(30):
        inst = generate(30, WORKLOADS[k % 5], np.random.default_rng([400, k]), capacity_share=0.5 if k % 2 else None)
        v, examples = properties.ic_violations(
            lambda i, s: R.run_resource_auction(i, s, "threshold"), inst, k, np.random.default_rng(k), 100
        )
        bad, total = bad + v, total + 100
    assert total == 3000 and bad == 0, examples


def test_consensus_variant_is_envy_free_per_unit_and_rarely_manipulable():
    bad = total = 0
    for seed in range(12):
        inst = generate(60, WORKLOADS[seed % 5], np.random.default_rng([500, seed]))
        out = R.run_resource_auction(inst, seed, "consensus")
        plans, order, _ = R.market(inst, seed)
        demand = np.where(np.isfinite(plans.demand), plans.demand, 0.0)
        inside = np.isin(np.arange(inst.n_users), order)
        assert properties.envy_violations(out, inst, inst.rental_price * demand, inside, demand=demand) == 0
        v, _ = properties.ic_violations(
            lambda i, s: R.run_resource_auction(i, s, "consensus"), inst, seed, np.random.default_rng(seed), 50
        )
        bad, total = bad + v, total + 50
    assert bad / total < 0.1


def test_deterministic_json_and_the_cli(tmp_path):
    from typer.testing import CliRunner

    from edgefm.cli import app

    inst = generate(50, "minilm_sst2", np.random.default_rng(3))
    a, b = R.run_resource_auction(inst, 7), R.run_resource_auction(inst, 7)
    assert np.array_equal(a.winners, b.winners) and a.revenue == b.revenue
    raw = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert len(raw["unit_prices"]) == inst.n_users and raw["revenue"] == pytest.approx(a.revenue)
    path, out = tmp_path / "i.json", tmp_path / "o.json"
    inst.rental_price = 2e-4
    inst.save(path)
    assert aeria.Instance.load(path).rental_price == 2e-4
    runner = CliRunner()
    r = runner.invoke(app, ["market", "aeria", "--instance", str(path), "--pricing", "resource", "--seed", "7",
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0 and "resource pricing" in r.output, r.output
    assert json.loads(out.read_text())["revenue"] == pytest.approx(R.run_resource_auction(inst, 7).revenue)
    r = runner.invoke(app, ["market", "aeria", "--instance", str(path), "--pricing", "flat"])
    assert r.exit_code == 2 and "--pricing 'flat'" in r.output
    inst.rental_price = -1.0
    with pytest.raises(aeria.InstanceError, match="rental_price"):
        aeria.Instance.from_dict(inst.to_dict())

"""LMaaS: RSR is exactly optimal (brute force), IMP is monotone and near the optimum, JSON, errors."""

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefm.market import lmaas
from edgefm.market import lmaas_baselines as B
from edgefm.market.lmaas import Instance, InstanceError, generate, imp, rsr, seller_profit


def brute_force(inst: Instance, prices: np.ndarray, grid: int = 2001, snr_points: int = 21):
    """Best (model, duration) by the worst case over a sampled SNR interval and a fine duration grid."""
    s = lmaas.nominal_snr(inst)
    best = np.zeros(inst.n_customers)
    for i in range(inst.n_customers):
        snrs = np.linspace((1 - inst.delta[i]) * s[i], s[i], snr_points)
        r = inst.bandwidth * np.log2(1 + snrs)  # [S]
        for m in range(inst.n_models):
            joules = inst.power * inst.rho[m] * inst.demand[i] / r  # per hour, per sampled SNR
            t_max = min(inst.horizon, float(np.min(inst.energy_cap[i] / joules)))  # feasible for every SNR
            ts = np.linspace(0, t_max, grid)
            u = (
                inst.alpha[i] * inst.accuracy[m] * np.log1p(inst.beta * ts)[None, :]
                - prices[m] * ts[None, :]
                - inst.kappa[i] * joules[:, None] * ts[None, :]
            )
            best[i] = max(best[i], u.min(axis=0).max())  # worst SNR, then best duration
    return best


@pytest.mark.parametrize("seed", range(12))
def test_rsr_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    inst = generate(15, int(rng.integers(1, 4)), rng)
    prices = rng.uniform(inst.p_min, inst.p_max)
    _, durations, profits = rsr(inst, prices)
    bf = brute_force(inst, prices)
    assert np.all(profits >= bf - 1e-9)  # never worse than any grid plan
    assert np.allclose(profits, bf, atol=1e-3 * (1 + np.abs(bf)))  # and the grid gets arbitrarily close
    assert np.all((durations >= 0) & (durations <= inst.horizon))


def test_rsr_hundreds_of_random_instances_against_brute_force():
    """Brute force (coarser grid) on 300 random instances."""
    for seed in range(300):
        rng = np.random.default_rng(10_000 + seed)
        inst = generate(3, int(rng.integers(1, 4)), rng)
        prices = rng.uniform(inst.p_min, inst.p_max)
        _, _, profits = rsr(inst, prices)
        bf = brute_force(inst, prices, grid=801, snr_points=5)
        assert np.all(profits >= bf - 1e-9), seed
        assert np.all(profits - bf <= 2e-2 * (1 + np.abs(bf))), seed


def test_rsr_respects_the_energy_cap_in_the_worst_case():
    rng = np.random.default_rng(1)
    inst = generate(200, 3, rng)
    prices = inst.p_min.copy()
    choices, durations, _ = rsr(inst, prices)
    r = lmaas.worst_rate(inst)
    m = np.maximum(choices, 0)
    joules = inst.power * inst.rho[m] * inst.demand / r * durations
    assert np.all(joules <= inst.energy_cap * (1 + 1e-9))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(1, 20))
def test_rsr_is_a_best_response(seed, m, n):
    """No customer does better in the worst case with another model, or with no model, at any duration."""
    rng = np.random.default_rng(seed)
    inst = generate(n, m, rng)
    prices = rng.uniform(inst.p_min, inst.p_max)
    choices, _, profits = rsr(inst, prices)
    r = lmaas.worst_rate(inst)
    _, cap = lmaas.energy_terms(inst, r)
    for frac in np.linspace(0, 1, 41):
        t = np.minimum(inst.horizon, cap) * frac
        assert np.all(profits[:, None] >= lmaas.profit(inst, prices, t, r) - 1e-9)
    assert np.all(profits >= 0) and np.all((choices >= 0) == (profits > 0))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 3))
def test_imp_profit_is_monotone_and_terminates(seed, m):
    inst = generate(25, m, np.random.default_rng(seed))
    prices, history = imp(inst)
    profits = [h["profit"] for h in history]
    assert all(b >= a for a, b in zip(profits, profits[1:], strict=False))
    assert profits[-1] == pytest.approx(seller_profit(inst, prices))
    assert np.all((prices >= inst.p_min) & (prices <= inst.p_max))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6))
def test_no_customer_gains_by_deviating_at_imp_prices(seed):
    inst = generate(20, 3, np.random.default_rng(seed))
    prices, _ = imp(inst)
    choices, durations, profits = rsr(inst, prices)
    rng = np.random.default_rng(seed)
    for _ in range(20):  # random deviations: another model (or none) at another duration
        alt = rng.integers(-1, inst.n_models, inst.n_customers)
        t = rng.uniform(0, inst.horizon, inst.n_customers)
        r = lmaas.worst_rate(inst)
        u = lmaas.profit(inst, prices, np.broadcast_to(t[:, None], (inst.n_customers, inst.n_models)), r)
        _, cap = lmaas.energy_terms(inst, r)
        rows = np.arange(inst.n_customers)
        feasible = t <= cap[rows, np.maximum(alt, 0)]
        dev = np.where(alt >= 0, u[rows, np.maximum(alt, 0)], 0.0)
        assert np.all(np.where(feasible, dev, -np.inf) <= profits + 1e-9)


def test_imp_near_exhaustive_optimum():
    ratios = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        inst = generate(20, int(rng.integers(1, 4)), rng)
        prices, _ = imp(inst)
        _, best = B.exhaustive(inst, points=25)
        k = inst.train_cost.sum()
        ratios.append((seller_profit(inst, prices) + k) / (best + k))
    assert min(ratios) >= 0.95 and np.median(ratios) >= 0.99


def test_imp_beats_seller_baselines():
    inst = generate(300, 4, np.random.default_rng(3))
    prices, _ = imp(inst)
    v = seller_profit(inst, prices)
    assert v >= B.uniform_price(inst)[1] - 1e-9
    assert v >= B.cost_plus(inst)[1]
    assert v >= B.random_prices(inst, np.random.default_rng(0))[1]


def test_spread_markets_are_spread_and_heavy_tailed():
    inst = lmaas.generate_spread(4000, 6, np.random.default_rng(1))
    assert inst.cost.max() / inst.cost.min() > 20 and inst.accuracy.max() - inst.accuracy.min() > 0.4
    assert np.all(np.diff(inst.accuracy) >= 0)  # better models cost more to run, on the whole
    alpha = np.sort(inst.alpha)
    assert alpha[0] >= 5.0 and alpha[-1] / np.median(alpha) > 50  # Pareto: a few value it far above the median
    assert alpha[-40:].sum() > 0.1 * alpha.sum()  # the top 1% hold over a tenth of all value
    again = lmaas.generate_spread(4000, 6, np.random.default_rng(1))
    assert np.array_equal(again.alpha, inst.alpha) and np.array_equal(again.cost, inst.cost)
    with pytest.raises(InstanceError, match="tail 1"):
        lmaas.generate_spread(5, 2, np.random.default_rng(0), tail=1.0)


def test_spread_markets_separate_imp_from_one_price():
    """Where costs spread over decades, one price for every model falls well short of the optimum
    while IMP stays near it; a single markup over costs sits in between."""
    gaps = []
    for seed in range(6):
        rng = np.random.default_rng([seed, 300])
        inst = lmaas.generate_spread(30, 3, rng)
        _, best = B.exhaustive(inst, points=25)
        k = inst.train_cost.sum()
        ours = seller_profit(inst, imp(inst)[0]) + k
        assert ours >= 0.98 * (best + k)
        uniform, markup = B.uniform_price(inst)[1] + k, B.best_markup(inst)[1] + k
        assert markup <= ours + 1e-9 and uniform <= ours + 1e-9
        gaps.append(uniform / (best + k))
    assert min(gaps) < 0.9


def test_best_markup_follows_costs():
    inst = lmaas.generate_spread(200, 3, np.random.default_rng(2))
    prices, value = B.best_markup(inst)
    ratio = prices / inst.cost
    assert np.allclose(ratio, ratio[0]) or np.any(np.isclose(prices, inst.p_max))  # one markup, clipped at the top
    assert value == pytest.approx(seller_profit(inst, prices))
    assert value >= B.cost_plus(inst)[1] - 1e-9  # cost-plus 50% is one of the markups searched, up to the grid


def test_robust_customers_beat_nominal_under_uncertainty():
    inst = generate(500, 3, np.random.default_rng(4), delta=0.4)
    prices, _ = imp(inst)
    out = B.customer_baselines(inst, prices, np.random.default_rng(0))
    assert out["rsr"].sum() > out["nominal"].sum()
    assert np.all(out["rsr"] >= out["nominal"] - 1e-9)  # RSR is optimal in the worst case, per customer
    none = generate(50, 3, np.random.default_rng(4), delta=0.0)
    p = none.p_min
    o = B.customer_baselines(none, p, np.random.default_rng(0))
    assert np.allclose(o["rsr"], o["nominal"])  # without uncertainty the two coincide


def test_json_round_trip(tmp_path):
    inst = generate(7, 3, np.random.default_rng(0))
    path = tmp_path / "i.json"
    inst.save(path)
    back = Instance.load(path)
    for k in lmaas.MODEL_FIELDS + lmaas.CUSTOMER_FIELDS:
        assert np.array_equal(getattr(inst, k), getattr(back, k))
    result, ref = lmaas.solve(back), lmaas.solve(inst)
    assert result["prices"] == ref["prices"] and result["choices"] == ref["choices"]
    assert result["seller_profit"] == ref["seller_profit"]
    assert json.loads(json.dumps(result))["durations"] == result["durations"]  # plain JSON, nothing lost


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda d: d["customers"].__setitem__("demand", [-1.0] + d["customers"]["demand"][1:]),
            "demand[0]: -1.0; expected >= 0",
        ),
        (lambda d: d["models"][1].__setitem__("p_min", 1e9), "p_min[1]: 1000000000.0 exceeds p_max[1]"),
        (lambda d: d["models"][0].pop("rho"), "models[0].rho: missing"),
        (lambda d: d["customers"].pop("alpha"), "customers.alpha: missing"),
        (lambda d: d.pop("models"), "models: missing"),
        (lambda d: d["customers"].__setitem__("delta", [1.5] * 4), "delta[0]: 1.5; expected in [0, 1)"),
        (lambda d: d["customers"].__setitem__("kappa", [0.1]), "kappa: 1 values; expected one per customer (4)"),
        (lambda d: d["constants"].__setitem__("speed", 1), "constants.speed: unknown key"),
    ],
)
def test_bad_instances_name_the_field(mutate, fragment):
    raw = generate(4, 2, np.random.default_rng(0)).to_dict()
    mutate(raw)
    with pytest.raises(InstanceError) as err:
        Instance.from_dict(raw)
    assert fragment in str(err.value)


def test_dynamic_market_warm_start_needs_fewer_iterations():
    inst = generate(300, 3, np.random.default_rng(0))
    warm = B.simulate_dynamic(inst, 5, np.random.default_rng(1), warm=True)
    cold = B.simulate_dynamic(inst, 5, np.random.default_rng(1), warm=False)
    assert [w["customers"] for w in warm] == [c["customers"] for c in cold]
    assert sum(w["iterations"] for w in warm[1:]) <= sum(c["iterations"] for c in cold[1:])
    assert all(w["seller_profit"] >= 0.97 * c["seller_profit"] for w, c in zip(warm, cold, strict=True))


def test_market_modules_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import edgefm.market.lmaas, edgefm.market.lmaas_baselines; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_generate_and_solve(tmp_path):
    from typer.testing import CliRunner

    from edgefm.cli import app

    runner = CliRunner()
    inst, out = tmp_path / "inst.json", tmp_path / "res.json"
    r = runner.invoke(app, ["market", "lmaas", "--generate", "50,3", "--seed", "2", "--instance", str(inst)])
    assert r.exit_code == 0 and inst.is_file() and not out.exists()
    r = runner.invoke(app, ["market", "lmaas", "--instance", str(inst), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    page = out.with_suffix(".html").read_text()  # a page per outcome, beside its JSON
    assert "seller profit" in page and "data:image/png;base64," in page
    assert "NaN" not in re.sub(r'src="data:[^"]*"', "", page)  # base64 may spell anything
    loaded = Instance.load(inst)
    assert res["seller_profit"] == pytest.approx(seller_profit(loaded, np.array(res["prices"])))
    assert set(res) >= {"prices", "choices", "durations", "worst_case_profits", "iterations", "solve_seconds"}
    bad = tmp_path / "bad.json"
    raw = json.loads(inst.read_text())
    raw["models"][0]["p_min"] = 1e9
    bad.write_text(json.dumps(raw))
    r = runner.invoke(app, ["market", "lmaas", "--instance", str(bad), "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "p_min[0]" in r.output and not (tmp_path / "x.json").exists()
    r = runner.invoke(app, ["market", "lmaas", "--generate", "x,y", "--instance", str(inst)])
    assert r.exit_code == 2
    spread = tmp_path / "spread.json"
    r = runner.invoke(app, ["market", "lmaas", "--generate", "40,3", "--family", "spread", "--instance", str(spread)])
    assert r.exit_code == 0 and "spread family" in r.output
    assert Instance.load(spread).cost.tolist() == lmaas.generate_spread(40, 3, np.random.default_rng(0)).cost.tolist()
    r = runner.invoke(app, ["market", "lmaas", "--generate", "40,3", "--family", "wide", "--instance", str(spread)])
    assert r.exit_code == 2 and "--family 'wide'" in r.output

"""Byzantine-robust aggregation (fl/robust.py) and simulated attackers (fl/attacks.py): known
answers, properties, exact Krum distances, and every method's payloads through the rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgefm import config
from edgefm.cli import app
from edgefm.fl import attacks, robust
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine


def ups(*rows):
    return [{"w": torch.tensor(r, dtype=torch.float32)} for r in rows]


PREV = {"w": torch.zeros(3)}


def test_median_and_trimmed_mean_known_answers():
    u = ups([1, 10, 0], [2, 20, 0], [3, 30, 0], [100, -50, 0], [4, 40, 0])
    med, _ = robust.combine(u, [1] * 5, PREV, "median")
    assert med["w"].tolist() == [3, 20, 0]
    trimmed, _ = robust.combine(u, [1] * 5, PREV, "trimmed", trim=0.2)  # drop 1 largest and 1 smallest
    assert trimmed["w"].tolist() == pytest.approx([3, 20, 0])
    mean, _ = robust.combine(u, [1, 1, 1, 1, 4], PREV, "clip", clip=1e9)  # no clipping: the weighted mean
    assert mean["w"].tolist() == pytest.approx([(1 + 2 + 3 + 100 + 16) / 8, (10 + 20 + 30 - 50 + 160) / 8, 0])


def test_masks_leave_uncovered_coordinates_out_and_keep_the_global_value_where_nobody_trained():
    u = ups([1, 5, 0], [3, 0, 0], [100, 0, 0])
    masks = [{"w": torch.tensor(m)} for m in ([1, 1, 0], [1, 0, 0], [0, 0, 0])]
    prev = {"w": torch.tensor([7.0, 7.0, 7.0])}
    med, _ = robust.combine(u, [1] * 3, prev, "median", masks=masks)
    assert med["w"].tolist() == [1, 5, 7]  # 100 was not trained (masked); 5 alone covers coordinate 1
    tm, _ = robust.combine(u, [1] * 3, prev, "trimmed", masks=masks, trim=0.4)
    assert tm["w"].tolist() == pytest.approx([2, 5, 7])


def test_krum_drops_the_outliers_and_clip_bounds_the_large_change():
    honest = [[1.0 + 0.01 * i, 1.0, 1.0] for i in range(6)]
    u = ups(*honest, [-40, -40, -40], [50, 50, 50])
    merged, info = robust.combine(u, [1] * 8, PREV, "krum", byzantine=2)
    assert info == {"krum_f": 2.0, "krum_kept": 6.0}
    assert merged["w"].tolist() == pytest.approx(np.mean(honest, axis=0).tolist())
    clipped, info = robust.combine(u, [1] * 8, PREV, "clip", clip=1.5)
    assert info["clipped"] == 2  # the two far changes, scaled to the median norm
    assert float(clipped["w"].abs().max()) < 1.2


def test_krum_with_too_few_updates_lowers_f_and_says_so():
    _, info = robust.combine(ups([1, 1, 1], [2, 2, 2], [3, 3, 3]), [1] * 3, PREV, "krum", byzantine=2)
    assert info == {"krum_f": 0.0, "krum_kept": 3.0}


def test_krum_distances_are_exact_on_near_identical_updates():
    """torch.cdist goes through a matrix product and loses differences of 1e-9 on values of 1;
    the exact sums rank the 30 updates as float64 numpy does."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=2000)
    vecs = [base + 1e-9 * rng.normal(size=2000) for _ in range(30)]
    scores = robust.krum_scores([torch.from_numpy(v) for v in vecs], 5)
    d = np.array([[((a - b) ** 2).sum() for b in vecs] for a in vecs])
    want = [np.sort(np.delete(d[i], i))[: 30 - 5 - 2].sum() for i in range(30)]
    assert np.argsort(scores.numpy()).tolist() == np.argsort(want).tolist()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4), min_size=3, max_size=9),
    st.sampled_from(["median", "trimmed", "krum", "clip"]),
)
def test_rules_stay_within_the_updates_range_and_ignore_their_order(rows, rule):
    u = ups(*rows)
    prev = {"w": torch.zeros(4)}
    a, _ = robust.combine(u, [1] * len(u), prev, rule, trim=0.2, byzantine=1, clip=2.0)
    b, _ = robust.combine(u[::-1], [1] * len(u), prev, rule, trim=0.2, byzantine=1, clip=2.0)
    x = torch.tensor(rows, dtype=torch.float32)
    lo, hi = torch.minimum(x.min(0).values, torch.zeros(4)), torch.maximum(x.max(0).values, torch.zeros(4))
    assert bool((a["w"] >= lo - 1e-3).all() and (a["w"] <= hi + 1e-3).all())
    if rule != "krum":  # Krum's ties may break by position
        assert torch.allclose(a["w"], b["w"], atol=1e-3)
    same, _ = robust.combine(ups(rows[0], rows[0], rows[0]), [1, 2, 3], prev, rule)
    assert torch.allclose(same["w"], torch.tensor(rows[0], dtype=torch.float32), atol=1e-3)


def test_attacks_known_answers_and_a_fixed_set_of_attackers():
    ref, honest = {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([2.0, 0.0])}
    assert attacks.corrupt(honest, ref, "sign_flip", 4.0, 0)["w"].tolist() == [-3.0, 5.0]
    assert attacks.corrupt(honest, ref, "scale", 4.0, 0)["w"].tolist() == [5.0, -3.0]
    noisy = attacks.corrupt(honest, ref, "noise", 4.0, 0)["w"]
    assert noisy.tolist() == attacks.corrupt(honest, ref, "noise", 4.0, 0)["w"].tolist() != honest["w"].tolist()
    assert attacks.corrupt(honest, ref, "label_flip", 4.0, 0) is honest
    bad = attacks.malicious(0, 10, 0.3)
    assert len(bad) == 3 and bad == attacks.malicious(0, 10, 0.3) and attacks.malicious(0, 10, 0.0) == set()
    assert attacks.flip_labels(np.array([0, 1, 1]), 2).tolist() == [1, 0, 0]


TINY = ["clients=5", "rounds=2", "data.max_train=200", "data.max_test=60", "train.max_steps=3", "train.batch_size=8"]


def run(extra):
    sc = build(config.load("configs/tiny.yaml", [*TINY, *extra]))
    return sc, Engine(sc).run()


def test_attackers_are_marked_and_a_robust_rule_keeps_their_sign_flips_out():
    attack = ["attack.kind=sign_flip", "attack.fraction=0.4", "attack.strength=50"]
    _, clean = run([])
    sc, mean = run(attack)
    _, krum = run([*attack, "aggregation.rule=krum", "aggregation.byzantine=2"])
    bad = attacks.malicious(0, 5, 0.4)
    rows = mean["ledger"].clients
    assert {r["client"] for r in rows if r.get("attacker")} == bad and all(r["status"] == "ok" for r in rows)
    assert krum["ledger"].rounds[-1]["krum_kept"] == 3
    dist = lambda out: sum(float((out["state"][k] - clean["state"][k]).norm()) for k in clean["state"])  # noqa: E731
    assert dist(krum) < dist(mean) / 5  # Krum's model stays near the clean one; the mean's is pulled away


@pytest.mark.parametrize(
    "extra",
    [
        ["algorithm.name=raffm", "aggregation.rule=median"],  # subnetworks of different widths (masks)
        ["algorithm.name=splitfed", "aggregation.rule=trimmed"],  # split devices' whole models
        ["algorithm.name=fedms", "algorithm.stage1_rounds=1", "aggregation.rule=clip"],  # experts, then gates
        ["algorithm.name=fedprox", "aggregation.rule=krum"],
    ],
)
def test_every_methods_payloads_go_through_the_rules(extra):
    _, mean = run([*extra[:-1], "attack.kind=noise", "attack.fraction=0.2"])
    _, rule = run([*extra, "attack.kind=noise", "attack.fraction=0.2"])
    assert all(r["status"] == "ok" for r in rule["ledger"].clients)
    assert any(not torch.equal(mean["state"][k], rule["state"][k]) for k in mean["state"])


def test_bad_settings_are_one_line_errors(tmp_path):
    for extra, fragment in (
        (["aggregation.rule=average"], "aggregation.rule"),
        (["attack.fraction=0.6"], "attack.fraction"),
        (["attack.kind=bogus"], "attack.kind"),
        (["aggregation.trim=0.5"], "aggregation.trim"),
        (["algorithm.name=local", "aggregation.rule=median"], "aggregation.rule: median"),
    ):
        out = tmp_path / "run"
        args = ["train", "configs/tiny.yaml", "--out", str(out), *[x for o in [*TINY, *extra] for x in ("--set", o)]]
        result = CliRunner().invoke(app, args)
        lines = [x for x in result.output.strip().splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], (extra, result.output)
        assert not out.exists()


def test_label_flipping_needs_labels():
    from test_lm import TINY as LM

    with pytest.raises(config.ConfigError, match="attack.kind: label_flip"):
        config.load(None, [*LM, "attack.kind=label_flip", "attack.fraction=0.2"])


# ----------------------------------------------------------------------------- differential privacy


def test_dp_mean_clips_each_change_and_divides_by_the_expected_participants():
    from edgefm.fl import privacy

    prev = {"w": torch.zeros(4)}
    u = [{"w": torch.tensor([3.0, 4.0, 0, 0])}, {"w": torch.tensor([0.3, 0.4, 0, 0])}]
    gen = torch.Generator().manual_seed(0)
    merged, info = privacy.dp_mean(u, prev, clip=1.0, sigma=0.0, denominator=4.0, generator=gen)
    # the first change (norm 5) scaled to norm 1, the second (norm 0.5) kept; the sum over 4
    assert merged["w"].tolist() == pytest.approx([(0.6 + 0.3) / 4, (0.8 + 0.4) / 4, 0, 0])
    assert info["dp_clipped"] == 1
    zeros = [{"w": torch.zeros(20000)}] * 3
    noisy, _ = privacy.dp_mean(zeros, {"w": torch.zeros(20000)}, 0.5, 2.0, 10.0, torch.Generator().manual_seed(1))
    assert float(noisy["w"].std()) == pytest.approx(2.0 * 0.5 / 10.0, rel=0.03)  # sigma C / (q N)


def test_the_accountant_spends_the_target_epsilon_over_the_run():
    from edgefm.fl import privacy

    sigma = privacy.noise_multiplier(4.0, 1e-5, 0.5, 10)
    assert privacy.spent(sigma, 0.5, 10, 1e-5) == pytest.approx(4.0, rel=0.02)
    assert privacy.spent(sigma, 0.5, 5, 1e-5) < privacy.spent(sigma, 0.5, 10, 1e-5)
    assert privacy.noise_multiplier(1.0, 1e-5, 0.5, 10) > sigma  # less privacy loss, more noise


def test_a_private_run_reports_its_epsilon_every_round_and_noise_changes_the_model():
    _, plain = run(["rounds=3"])
    _, private = run(["rounds=3", "privacy.epsilon=8", "privacy.clip=0.5"])
    eps = [r["dp_epsilon"] for r in private["ledger"].rounds]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(8.0, rel=0.02)
    assert all("dp_epsilon" not in r for r in plain["ledger"].rounds)
    assert any(not torch.allclose(plain["state"][k], private["state"][k]) for k in plain["state"])
    _, again = run(["rounds=3", "privacy.epsilon=8", "privacy.clip=0.5"])
    assert all(torch.equal(again["state"][k], private["state"][k]) for k in private["state"])  # seeded noise


def test_bad_privacy_settings_are_one_line_errors():
    for sets, fragment in (
        (["privacy.epsilon=0"], "privacy.epsilon"),
        (["privacy.epsilon=1", "privacy.noise_multiplier=1"], "not both"),
        (["privacy.epsilon=1", "aggregation.rule=median"], "expected aggregation.rule mean"),
        (["privacy.delta=1"], "privacy.delta"),
    ):
        with pytest.raises(config.ConfigError, match=fragment):
            config.load("configs/tiny.yaml", sets)

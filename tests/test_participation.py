"""Independent participation: the Horvitz-Thompson aggregate is unbiased (Monte Carlo), the
naive one is not when participation correlates with the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefm.fl.participation import MIN_Q, naive, participants, unbiased


def test_draws_are_seeded_independent_and_clamped():
    q = [0.5] * 1000
    a, b = participants(0, 1, q), participants(0, 1, q)
    assert a.tolist() == b.tolist() and participants(0, 2, q).tolist() != a.tolist()
    assert 0.45 < a.mean() < 0.55
    assert participants(0, 1, [0.0] * 20000).mean() == pytest.approx(MIN_Q, abs=0.006)  # q clamped to 0.05


def test_full_participation_known_answer():
    g = {"w": torch.zeros(2)}
    ups = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 3.0])}]
    assert unbiased(g, ups, [0.25, 0.75], [1.0, 1.0])["w"].tolist() == [0.25, 2.25]
    assert naive(g, ups, [0.25, 0.75])["w"].tolist() == [0.25, 2.25]
    # one of them came, with q = 0.5: its delta scaled by p / q
    assert unbiased(g, ups[:1], [0.25], [0.5])["w"].tolist() == [0.5, 0.0]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=1, max_size=6))
def test_every_device_present_with_q_one_is_the_p_weighted_mean(ps):
    p = np.asarray(ps) / sum(ps)
    g = {"w": torch.randn(3, dtype=torch.float64)}
    ups = [{"w": torch.randn(3, dtype=torch.float64)} for _ in p]
    want = sum(float(pi) * u["w"] for pi, u in zip(p, ups, strict=True))
    assert torch.allclose(unbiased(g, ups, p, [1.0] * len(p))["w"], want)
    assert torch.allclose(naive(g, ups, p)["w"], want)


def test_monte_carlo_unbiased_equals_full_participation_and_naive_is_biased():
    """20,000 rounds of 6 devices whose updates point at their own label mix; the devices that
    hold label 1 come rarely (q 0.1), the others often (q 0.9)."""
    p = np.array([0.2, 0.2, 0.2, 0.1, 0.15, 0.15])
    q = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    label_one = np.array([0.0, 0.1, 0.0, 1.0, 0.9, 1.0])  # each device's share of label 1
    g = {"w": torch.zeros(2, dtype=torch.float64)}
    xs = [{"w": torch.tensor([1 - s, s], dtype=torch.float64)} for s in label_one]
    full = sum(float(pi) * x["w"] for pi, x in zip(p, xs, strict=True))
    draws = 20_000
    hts, naives = [], []
    for r in range(draws):
        came = participants(3, r, q)
        idx = np.flatnonzero(came)
        hts.append(unbiased(g, [xs[i] for i in idx], p[idx], q[idx])["w"].numpy())
        if len(idx):
            naives.append(naive(g, [xs[i] for i in idx], p[idx])["w"].numpy())
    hts, naives = np.array(hts), np.array(naives)
    se = hts.std(0, ddof=1) / np.sqrt(draws)
    assert np.all(np.abs(hts.mean(0) - full.numpy()) < 3 * se)
    naive_se = naives.std(0, ddof=1) / np.sqrt(len(naives))
    assert np.all(np.abs(naives.mean(0) - full.numpy()) > 10 * naive_se)  # biased toward the frequent devices
    assert naives.mean(0)[1] < full.numpy()[1]  # label 1, held by the rare devices, is under-weighted

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefm.fl import aggregate as agg


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_weighted_mean_known_answer():
    a, b = {"w": t(1.0, 2.0), "b": t(0.0)}, {"w": t(3.0, 6.0), "b": t(4.0)}
    out = agg.weighted_mean([a, b], [1, 3])
    assert torch.allclose(out["w"], t(2.5, 5.0)) and torch.allclose(out["b"], t(3.0))


def test_weighted_mean_rejects_bad_weights():
    with pytest.raises(ValueError):
        agg.weighted_mean([{"w": t(1.0)}], [0])
    with pytest.raises(ValueError):
        agg.weighted_mean([], [])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=6), st.integers(1, 50))
def test_weighted_mean_of_identical_updates_is_identity(values, weight):
    u = {"w": torch.tensor(values, dtype=torch.float64)}
    out = agg.weighted_mean([u, u, u], [weight, 1, 2])
    assert torch.allclose(out["w"], u["w"])


def test_coverage_mean_averages_only_over_covering_clients():
    prev = {"w": t(9.0, 9.0, 9.0)}
    u1, m1 = {"w": t(1.0, 1.0, 0.0)}, {"w": t(1, 1, 0)}
    u2, m2 = {"w": t(3.0, 0.0, 0.0)}, {"w": t(1, 0, 0)}
    out = agg.coverage_mean([u1, u2], [m1, m2], [1, 1], prev)
    # coord 0: (1+3)/2; coord 1: only client 1; coord 2: nobody -> previous value
    assert torch.allclose(out["w"], t(2.0, 1.0, 9.0))


def test_median_and_trimmed_mean():
    ups = [{"w": t(v)} for v in (1.0, 2.0, 100.0, 6.0, -50.0)]
    assert agg.median(ups)["w"].item() == 2.0
    assert agg.trimmed_mean(ups, 0.2)["w"].item() == pytest.approx(3.0)  # drops -50 and 100: (1+2+6)/3


def test_krum_picks_the_central_update():
    # n=5, f=1: each update is scored by its 2 nearest neighbours; (0, 0) scores 0.01 + 0.01,
    # its two neighbours 0.01 + 0.02, the outliers far more
    pts = [(50.0, 50.0), (0.1, 0.0), (0.0, 0.0), (0.0, 0.1), (-50.0, -50.0)]
    out, idx = agg.krum([{"w": t(*p)} for p in pts], byzantine=1)
    assert idx == 2 and torch.equal(out["w"], t(0.0, 0.0))


def test_validate_update_reasons():
    ref = {"w": torch.zeros(2, 3)}
    assert agg.validate_update({"w": torch.ones(2, 3)}, ref) is None
    assert "shape (3, 2)" in agg.validate_update({"w": torch.ones(3, 2)}, ref)
    assert "non-finite" in agg.validate_update({"w": torch.full((2, 3), float("nan"))}, ref)
    assert "non-finite" in agg.validate_update({"w": torch.full((2, 3), float("inf"))}, ref)
    assert "wrong keys" in agg.validate_update({"v": torch.ones(2, 3)}, ref)
    assert "wrong keys" in agg.validate_update({"w": torch.ones(2, 3), "x": torch.ones(1)}, ref)


def test_nbytes_is_exact():
    assert agg.nbytes({"a": torch.zeros(10, dtype=torch.float32), "b": torch.zeros(3, 4, dtype=torch.float16)}) == 64

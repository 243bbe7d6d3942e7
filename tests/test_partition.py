import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefm import EdgefmError
from edgefm.data import partition as P


def labels(n=600, k=4, seed=0):
    return np.random.default_rng(seed).integers(0, k, size=n)


def assert_disjoint_cover(parts, n, full=True):
    allidx = np.concatenate(parts)
    assert len(allidx) == len(set(allidx.tolist()))  # every example at most once
    if full:
        assert sorted(allidx.tolist()) == list(range(n))  # and exactly once


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological"])
def test_each_example_assigned_once_and_deterministic(name):
    y = labels()
    fn = getattr(P, name)
    a = fn(y, 10, np.random.default_rng(1), alpha=0.5, classes_per_client=2)
    b = fn(y, 10, np.random.default_rng(1), alpha=0.5, classes_per_client=2)
    c = fn(y, 10, np.random.default_rng(2), alpha=0.5, classes_per_client=2)
    assert_disjoint_cover(a, len(y))
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_iid_sizes_are_balanced():
    parts = P.iid(labels(103), 10, np.random.default_rng(0))
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3


def test_dirichlet_skew_grows_as_alpha_shrinks():
    y = labels(4000, 4)

    def mean_max_share(alpha):
        parts = P.dirichlet(y, 10, np.random.default_rng(0), alpha=alpha, min_size=1)
        return np.mean([np.bincount(y[p], minlength=4).max() / len(p) for p in parts])

    assert mean_max_share(0.1) > mean_max_share(1.0) > mean_max_share(100.0)
    assert mean_max_share(100.0) < 0.35  # near-uniform label mix


def test_dirichlet_min_size_and_errors():
    y = labels(200)
    parts = P.dirichlet(y, 5, np.random.default_rng(0), alpha=0.5, min_size=10)
    assert min(len(p) for p in parts) >= 10
    with pytest.raises(EdgefmError, match="alpha"):
        P.dirichlet(y, 5, np.random.default_rng(0), alpha=0)
    with pytest.raises(EdgefmError, match="exceeds the 200 training examples"):
        P.dirichlet(y, 201, np.random.default_rng(0))


def test_dirichlet_redraws_up_to_a_thousand_and_the_cap_only_decides_when_to_give_up():
    y = np.repeat(np.arange(3), 40)  # 20 clients of >= 3 at alpha 0.5: seed 0 needs over 100 draws
    with pytest.raises(EdgefmError, match="in 100 draws"):
        P.dirichlet(y, 20, np.random.default_rng(0), alpha=0.5, min_size=3, max_tries=100)
    parts = P.dirichlet(y, 20, np.random.default_rng(0), alpha=0.5, min_size=3)  # the default cap
    assert min(len(p) for p in parts) >= 3
    assert_disjoint_cover(parts, len(y))
    # seed 4 succeeds within 100: a higher cap returns the very same partition (rejection sampling)
    few = P.dirichlet(y, 20, np.random.default_rng(4), alpha=0.5, min_size=3, max_tries=100)
    many = P.dirichlet(y, 20, np.random.default_rng(4), alpha=0.5, min_size=3)
    assert all(np.array_equal(a, b) for a, b in zip(few, many, strict=True))


def test_pathological_label_counts():
    y = np.repeat(np.arange(4), 25)  # 4 classes x 25
    parts = P.pathological(y, 4, np.random.default_rng(0), classes_per_client=2)
    assert_disjoint_cover(parts, 100)
    for i, p in enumerate(parts):
        assert set(np.unique(y[p]).tolist()) == {i % 4, (i + 1) % 4}
        assert 24 <= len(p) <= 26  # each class split evenly over its two holders (12 or 13 each)
    with pytest.raises(EdgefmError, match="classes_per_client"):
        P.pathological(y, 4, np.random.default_rng(0), classes_per_client=5)


def test_natural_by_column():
    y = np.zeros(6, dtype=int)
    groups = ["b", "a", "b", "c", "a", "c"]
    parts = P.natural(y, 3, np.random.default_rng(0), groups=groups)
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3, 5]]
    with pytest.raises(EdgefmError, match="distinct values"):
        P.natural(y, 4, np.random.default_rng(0), groups=groups)


def test_local_splits_keep_the_label_mix():
    y = np.repeat([0, 1], [80, 20])
    ((train, test),) = P.local_splits([np.arange(100)], y, 0.25, np.random.default_rng(0))
    assert np.bincount(y[test]).tolist() == [20, 5]
    assert np.bincount(y[train]).tolist() == [60, 15]
    assert set(train.tolist()).isdisjoint(test.tolist())


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 300), st.integers(2, 6), st.integers(1, 8), st.floats(0.05, 10), st.integers(0, 10**6))
def test_dirichlet_property_disjoint_cover(n, k, clients, alpha, seed):
    y = np.random.default_rng(seed).integers(0, k, size=n)
    try:
        parts = P.dirichlet(y, clients, np.random.default_rng(seed), alpha=alpha, min_size=1)
    except EdgefmError:
        return  # infeasible draws are reported, never silently wrong
    assert_disjoint_cover(parts, n)

"""Seeded partitioners: who holds which examples.

Each partitioner maps a label array to one index array per client, every example assigned at
most once (exactly once for all but ``pathological``, which drops nothing either: every class
is held by at least one client when ``clients * classes_per_client >= classes``). They follow
the Flower Datasets partitioners (IidPartitioner, DirichletPartitioner, PathologicalPartitioner,
NaturalIdPartitioner) but are written here small, on numpy, so that no extra package can pull a
newer torch. :func:`local_splits` then gives each client a train split and a local test split
with the same label mix (stratified per class).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefm import EdgefmError
from edgefm.registry import register


@register("partitioner", "iid")
def iid(labels: np.ndarray, clients: int, rng: np.random.Generator, **_: object) -> list[np.ndarray]:
    """Shuffle and cut into ``clients`` near-equal parts."""
    _check(labels, clients)
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), clients)]


@register("partitioner", "dirichlet")
def dirichlet(
    labels: np.ndarray,
    clients: int,
    rng: np.random.Generator,
    alpha: float = 0.5,
    min_size: int = 4,
    max_tries: int = 1000,
    **_: object,
) -> list[np.ndarray]:
    """Label skew: each class is split over clients by proportions drawn from Dir(alpha).

    Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification" (2019). Redraws (up to ``max_tries``) until every client holds at
    least ``min_size`` examples, as Flower's DirichletPartitioner does. This is rejection
    sampling: an accepted partition has the same distribution whatever ``max_tries`` is, and a
    draw that succeeds within fewer tries is the same partition, so the cap only decides when to
    give up (1,000 draws: 32 devices at alpha 0.3 over 6 domains needed 122 for seed 2).
    """
    _check(labels, clients)
    if alpha <= 0:
        raise EdgefmError(f"partition.alpha: {alpha!r} is out of range; expected a value > 0")
    if clients * min_size > len(labels):
        raise EdgefmError(
            f"partition.min_size: {clients} clients x {min_size} examples exceed the {len(labels)} examples; "
            "expected fewer clients or a smaller min_size"
        )
    classes = np.unique(labels)
    for _try in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise EdgefmError(
        f"partition.alpha: {alpha!r} left some client with fewer than {min_size} examples in {max_tries} draws; "
        "expected a larger alpha, fewer clients or a smaller partition.min_size"
    )


@register("partitioner", "pathological")
def pathological(
    labels: np.ndarray, clients: int, rng: np.random.Generator, classes_per_client: int = 2, **_: object
) -> list[np.ndarray]:
    """Each client holds ``classes_per_client`` classes (McMahan et al. 2017, non-IID shards).

    Client ``i`` takes classes ``i, i+1, ...`` (mod K) so that every class has a holder when
    ``clients * classes_per_client >= K``; each class's examples are shuffled and split evenly
    among its holders.
    """
    _check(labels, clients)
    classes = np.unique(labels)
    k = len(classes)
    if classes_per_client > k:
        raise EdgefmError(
            f"partition.classes_per_client: {classes_per_client} exceeds the {k} classes; expected at most {k}"
        )
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for i in range(clients):
        for j in range(classes_per_client):
            holders[int(classes[(i + j) % k])].append(i)
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for c, owners in holders.items():
        idx = rng.permutation(np.flatnonzero(labels == c))
        if not owners:
            continue  # fewer clients than needed to cover every class
        for owner, piece in zip(owners, np.array_split(idx, len(owners)), strict=True):
            parts[owner].append(piece)
    return [np.sort(np.concatenate(p)) if p else np.array([], dtype=int) for p in parts]


@register("partitioner", "natural")
def natural(
    labels: np.ndarray, clients: int, rng: np.random.Generator, groups: Sequence | None = None, **_: object
) -> list[np.ndarray]:
    """Split by an owner column (a user, a store): groups dealt to clients in sorted order.

    With as many clients as groups each client is one group; with fewer, groups are dealt
    round-robin. ``rng`` is unused: the split is fixed by the data.
    """
    if groups is None:
        raise EdgefmError("partition.column: the natural partitioner needs a column naming each example's owner")
    groups = np.asarray(groups)
    _check(labels, clients)
    keys = sorted(set(groups.tolist()), key=str)
    if len(keys) < clients:
        raise EdgefmError(
            f"clients: {clients} exceeds the {len(keys)} distinct values of partition.column; "
            f"expected at most {len(keys)}"
        )
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for g, key in enumerate(keys):
        parts[g % clients].append(np.flatnonzero(groups == key))
    return [np.sort(np.concatenate(p)) for p in parts]


def _check(labels: np.ndarray, clients: int) -> None:
    if clients < 1:
        raise EdgefmError(f"clients: {clients} is out of range; expected at least 1")
    if clients > len(labels):
        raise EdgefmError(
            f"clients: {clients} exceeds the {len(labels)} training examples; expected at most {len(labels)}"
        )


def local_splits(
    parts: list[np.ndarray], labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per client, a stratified (train, local test) split: each class contributes
    ``round(test_fraction * count)`` examples to the test side, so the label mix matches."""
    out = []
    for part in parts:
        train, test = [], []
        for c in np.unique(labels[part]):
            idx = rng.permutation(part[labels[part] == c])
            n_test = int(round(test_fraction * len(idx)))
            if n_test >= len(idx) and len(idx) > 1:
                n_test = len(idx) - 1  # keep at least one training example of the class
            test.append(idx[:n_test])
            train.append(idx[n_test:])
        tr = np.sort(np.concatenate(train)) if train else np.array([], dtype=int)
        te = np.sort(np.concatenate(test)) if test else np.array([], dtype=int)
        out.append((tr, te))
    return out

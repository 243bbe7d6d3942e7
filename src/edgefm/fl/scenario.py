"""Build an edge scenario from a config: data, partitions, devices, the workbench, the strategy.

Cheap checks come first (data files, columns, partition feasibility) so that a bad config
fails in a second, before any model is loaded and before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgefm import EdgefmError, registry, tasks
from edgefm.config import RunConfig
from edgefm.data.encode import Encoded
from edgefm.data.partition import local_splits
from edgefm.data.sources import DataBundle, raw_bytes
from edgefm.edge.devices import DeviceProfile, sample_population
from edgefm.fl import attacks, heap
from edgefm.fl.strategy import ClientData, Strategy, build_strategy, seed_for
from edgefm.models.workbench import Workbench, resolve_device


@dataclass
class Scenario:
    cfg: RunConfig
    bundle: DataBundle
    devices: list[DeviceProfile]
    clients: list[ClientData]
    test: Encoded
    workbench: Workbench
    strategy: Strategy
    task: tasks.Task
    public: Encoded | None = None  # server-side data, disjoint from every device's and the test's

    def parameter_counts(self) -> dict[str, int]:
        """The model's parameters, and those the method trains (what a run summary reports)."""
        return {
            "total": self.workbench.parameter_counts()["total"],
            "trainable": self.strategy.trainable_parameters(self.workbench),
        }


def public_split(cfg: RunConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows held by the server, rows left for the devices) of the training pool (seeded)."""
    k = int(round(cfg.data.public_fraction * n))
    if k == 0:
        return np.zeros(0, dtype=int), np.arange(n)
    chosen = np.random.default_rng(seed_for(cfg.seed, 14)).choice(n, size=k, replace=False)
    return np.sort(chosen), np.setdiff1d(np.arange(n), chosen)


def partition_indices(
    cfg: RunConfig, bundle: DataBundle, pool: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each client's (train rows, local test rows) of the training pool, drawn from ``pool``."""
    pool = np.arange(len(bundle.train)) if pool is None else pool
    labels = np.asarray(bundle.train["label"])[pool]
    p = cfg.partition
    kwargs: dict = {"alpha": p.alpha, "min_size": p.min_size, "classes_per_client": p.classes_per_client}
    if p.name == "natural":
        if p.column is None or p.column not in bundle.train.column_names:
            raise EdgefmError(
                f"partition.column: {p.column!r} is not a column of the data; "
                f"expected one of {', '.join(bundle.train.column_names)}"
            )
        kwargs["groups"] = [bundle.train[p.column][i] for i in pool]
    partitioner = registry.get("partitioner", p.name)
    parts = partitioner(labels, cfg.clients, np.random.default_rng(seed_for(cfg.seed, 11)), **kwargs)
    splits = local_splits(parts, labels, p.local_test_fraction, np.random.default_rng(seed_for(cfg.seed, 12)))
    for k, (train, _) in enumerate(splits):
        if len(train) == 0:
            raise EdgefmError(f"clients: client {k} received no training examples; expected fewer clients or more data")
    return [(pool[tr], pool[te]) for tr, te in splits]


def _mix_global(clients: list[ClientData], test: Encoded, share: float, rng: np.random.Generator) -> None:
    """Add to each client's local test split examples of the global test set, ``share`` of the
    result (seeded, without replacement within a client): its model then also meets data from
    outside its own training mix. Their ``test_index`` entries are ``-1 - row`` (a row of the
    global test set, not of the training pool)."""
    for c in clients:
        own = len(c.test)
        extra = min(len(test), int(round(share * own / (1.0 - share))))
        if own == 0 or extra == 0:
            continue
        rows = np.sort(rng.choice(len(test), size=extra, replace=False))
        picked = test.subset(rows)
        c.test = Encoded(c.test.ids + picked.ids, np.concatenate([c.test.labels, picked.labels]), c.test.pad_id)
        if c.test_index is not None:
            c.test_index = np.concatenate([c.test_index, -1 - rows])


def build(cfg: RunConfig, devices: list[DeviceProfile] | None = None, owners: list[int] | None = None) -> Scenario:
    """The run ``cfg`` describes. Several tenants over one population (``fl/tenants.py``): the
    data is dealt to all ``cfg.clients`` devices of the population, and the run trains only the
    ``owners``' shares, on ``devices`` (theirs, numbered 0..len(owners)-1): a device's data is
    its own whichever tenant it serves, and a tenant without the device goes without it."""
    if cfg.mmap_threshold_kb:  # before the data and the model are built: their blocks too
        heap.map_large(cfg.mmap_threshold_kb)
    strategy = build_strategy(cfg)
    task = tasks.make(cfg.task)
    bundle = task.load(cfg)
    public_rows, pool = public_split(cfg, len(bundle.train))
    splits = partition_indices(cfg, bundle, pool)
    if owners is not None:
        if not owners or not all(0 <= i < len(splits) for i in owners) or len(set(owners)) != len(owners):
            raise EdgefmError(f"owners: {owners[:8]}; expected distinct device indices below {len(splits)}")
        splits = [splits[i] for i in owners]
    if devices is None:
        devices = sample_population(
            cfg.clients, cfg.edge.tiers, cfg.edge.jitter, np.random.default_rng(seed_for(cfg.seed, 13))
        )
        devices = devices if owners is None else [replace(devices[i], device_id=k) for k, i in enumerate(owners)]
    elif [d.device_id for d in devices] != list(range(len(splits))):
        raise EdgefmError(f"devices: ids {[d.device_id for d in devices][:8]}; expected 0..{len(splits) - 1}")
    tokenizer = task.setup(cfg, bundle)
    archs = task.architectures(cfg)
    workbench = Workbench(
        lambda arch: task.build(cfg, arch, tokenizer, bundle), archs[0], tokenizer, resolve_device(cfg.device), task
    )

    def encode(rows: np.ndarray) -> Encoded:
        return task.encode(tokenizer, bundle.train, rows, cfg)

    clients = [
        ClientData(k, encode(tr), encode(te), raw_bytes(bundle.train, tr), tr, te) for k, (tr, te) in enumerate(splits)
    ]
    if cfg.attack.kind == "label_flip":  # malicious devices train honestly on flipped labels
        for k in attacks.malicious(cfg.seed, len(clients), cfg.attack.fraction):
            c = clients[k]
            c.train = Encoded(c.train.ids, attacks.flip_labels(c.train.labels, bundle.num_labels), c.train.pad_id)
    test = task.encode(tokenizer, bundle.test, np.arange(len(bundle.test)), cfg)
    if cfg.partition.local_test_global > 0:
        _mix_global(clients, test, cfg.partition.local_test_global, np.random.default_rng(seed_for(cfg.seed, 15)))
    public = encode(public_rows) if len(public_rows) else None
    clients, devices = strategy.population(clients, devices, workbench)
    strategy.server_data(public)
    return Scenario(cfg, bundle, devices, clients, test, workbench, strategy, task, public)

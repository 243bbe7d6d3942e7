"""Build an edge scenario from a config: data, partitions, devices, the workbench, the strategy.

Cheap checks come first (data files, columns, partition feasibility) so that a bad config
fails in a second, before any model is loaded and before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefm import EdgefmError, registry
from edgefm.config import RunConfig
from edgefm.data.encode import Encoded, encode
from edgefm.data.partition import local_splits
from edgefm.data.sources import DataBundle, load_data
from edgefm.edge.devices import DeviceProfile, sample_population
from edgefm.fl.strategy import ClientData, Strategy, build_strategy, seed_for
from edgefm.models.workbench import Workbench


@dataclass
class Scenario:
    cfg: RunConfig
    bundle: DataBundle
    devices: list[DeviceProfile]
    clients: list[ClientData]
    test: Encoded
    workbench: Workbench
    strategy: Strategy


def partition_indices(cfg: RunConfig, bundle: DataBundle) -> list[tuple[np.ndarray, np.ndarray]]:
    labels = np.asarray(bundle.train["label"])
    p = cfg.partition
    kwargs: dict = {"alpha": p.alpha, "min_size": p.min_size, "classes_per_client": p.classes_per_client}
    if p.name == "natural":
        if p.column is None or p.column not in bundle.train.column_names:
            raise EdgefmError(
                f"partition.column: {p.column!r} is not a column of the data; "
                f"expected one of {', '.join(bundle.train.column_names)}"
            )
        kwargs["groups"] = bundle.train[p.column]
    partitioner = registry.get("partitioner", p.name)
    parts = partitioner(labels, cfg.clients, np.random.default_rng(seed_for(cfg.seed, 11)), **kwargs)
    splits = local_splits(parts, labels, p.local_test_fraction, np.random.default_rng(seed_for(cfg.seed, 12)))
    for k, (train, _) in enumerate(splits):
        if len(train) == 0:
            raise EdgefmError(f"clients: client {k} received no training examples; expected fewer clients or more data")
    return splits


def build(cfg: RunConfig) -> Scenario:
    strategy = build_strategy(cfg)
    bundle = load_data(cfg.data, cfg.seed)
    splits = partition_indices(cfg, bundle)
    devices = sample_population(
        cfg.clients, cfg.edge.tiers, cfg.edge.jitter, np.random.default_rng(seed_for(cfg.seed, 13))
    )
    workbench = Workbench.from_config(cfg, bundle.num_labels)
    tok, max_len = workbench.tokenizer, cfg.data.max_length
    train = encode(bundle.train["text"], bundle.train["label"], tok, max_len)
    test = encode(bundle.test["text"], bundle.test["label"], tok, max_len)
    texts = bundle.train["text"]
    clients = [
        ClientData(k, train.subset(tr), train.subset(te), sum(len(texts[i].encode()) + 1 for i in tr), tr, te)
        for k, (tr, te) in enumerate(splits)
    ]
    clients, devices = strategy.population(clients, devices)
    return Scenario(cfg, bundle, devices, clients, test, workbench, strategy)

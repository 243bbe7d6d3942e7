"""Centralized training: every client's raw data pooled in one datacenter — the upper bound.

Each round is ``train.epochs`` passes over the pooled data on the datacenter profile. The
ledger charges the raw training text that clients would have to ship, once, in round 1 (the
privacy cost federated learning avoids); the model never leaves the datacenter.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgefm.algorithms.configs import CentralizedConfig
from edgefm.algorithms.fedavg import FedAvg
from edgefm.data.encode import Encoded
from edgefm.edge.devices import DATACENTER, DeviceProfile
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors


def pool(parts: list[Encoded], indices: list[np.ndarray]) -> tuple[Encoded, np.ndarray]:
    """The examples of several encoded splits merged, and the pool rows they came from.

    One example per row (classification): in the order of their rows, so the pooled data is the
    same however it was partitioned. A language model's split packs its rows' documents into
    blocks, several per row: every block is kept, in the parts' order (training shuffles them),
    with the rows sorted. Until 2026-12-05 the rows' count cut the blocks too: the centralized
    language model trained on about a tenth of the pooled text."""
    index = np.concatenate(indices)
    ids = [x for p in parts for x in p.ids]
    labels = np.concatenate([p.labels for p in parts])
    if len(ids) != len(index):
        return Encoded(ids, labels, parts[0].pad_id), np.sort(index)
    order = np.argsort(index, kind="stable")
    return Encoded([ids[i] for i in order], labels[order], parts[0].pad_id), index[order]


class Centralized(FedAvg):
    Config = CentralizedConfig

    def population(
        self, clients: list[ClientData], devices: list[DeviceProfile], workbench
    ) -> tuple[list[ClientData], list[DeviceProfile]]:
        """Every client's data shipped to one datacenter device (which trains the largest
        architecture it can)."""
        train, train_index = pool([c.train for c in clients], [c.train_index for c in clients])
        test, test_index = pool([c.test for c in clients], [c.test_index for c in clients])
        pooled = ClientData(0, train, test, sum(c.raw_bytes for c in clients), train_index, test_index)
        return super().population([pooled], [replace(DATACENTER, device_id=0)], workbench)

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        update = super().client_update(task, workbench, data, private)
        update.colocated = True
        update.extra_bytes_up = data.raw_bytes if task.round == 1 else 0
        return update

"""Centralized training: every client's raw data pooled in one datacenter — the upper bound.

Each round is ``train.epochs`` passes over the pooled data on the datacenter profile. The
ledger charges the raw training text that clients would have to ship, once, in round 1 (the
privacy cost federated learning avoids); the model never leaves the datacenter.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefm.algorithms.fedavg import FedAvg
from edgefm.config import AlgorithmConfig
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors
from edgefm.registry import register


@dataclass(frozen=True)
class CentralizedConfig(AlgorithmConfig):
    name: str = "centralized"


@register("algorithm", "centralized")
class Centralized(FedAvg):
    Config = CentralizedConfig
    pooled = True

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        update = super().client_update(task, workbench, data, private)
        update.colocated = True
        update.extra_bytes_up = data.raw_bytes if task.round == 1 else 0
        return update

"""Local-only training: every device fine-tunes its own adapters on its own data, alone.

The lower bound of collaboration: no bytes cross the network; each client's model is judged
on its local test split (and, averaged over clients, on the global test set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgefm.algorithms.fedavg import FedAvg, client_accuracies
from edgefm.config import AlgorithmConfig
from edgefm.data.encode import Encoded
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors
from edgefm.registry import register


@dataclass(frozen=True)
class LocalConfig(AlgorithmConfig):
    name: str = "local"


@register("algorithm", "local")
class Local(FedAvg):
    Config = LocalConfig
    personalized = True
    global_from_state = False  # the global figure is the mean of the clients' own models

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        # The initial adapters come from the shared seed, generated on the device: nothing is sent.
        return {d.device_id: ClientTask(d.device_id, rnd, {}, {"init": state}) for d in devices}

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        workbench.set_state(private if private is not None else task.config["init"])
        fit = self.local_fit(task, workbench, data)
        return ClientUpdate(
            task.client_id,
            task.round,
            {},
            num_examples=len(data.train),
            flops=fit.flops,
            metrics={"train_loss": fit.loss, "steps": fit.steps},
            private=workbench.get_state(),
        )

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        return {}

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate]) -> Tensors:
        return state  # nothing is shared

    def evaluate(
        self, state: Tensors, workbench, test: Encoded, clients: list[ClientData], private: dict[int, Tensors]
    ) -> dict[str, float]:
        states = {c.client_id: private.get(c.client_id, state) for c in clients}
        metrics = client_accuracies(workbench, clients, states)
        global_accs = []
        for c in clients:
            workbench.set_state(states[c.client_id])
            global_accs.append(workbench.accuracy(test))
        metrics["accuracy"] = float(np.mean(global_accs))  # mean over the clients' own models
        return {k: v for k, v in metrics.items() if not math.isnan(v)}

"""Local-only training: every device fine-tunes its own adapters on its own data, alone.

The lower bound of collaboration: no bytes cross the network. There is no global model: each
client's own model is judged on its local test split, and the run's global accuracy is the mean
over clients of their own models on the global test set.
"""

from __future__ import annotations

from torch import nn

from edgefm.algorithms.configs import LocalConfig
from edgefm.algorithms.fedavg import FedAvg, seeded_on_device
from edgefm.data.encode import Encoded
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.strategy import ClientData, ClientEval, ClientTask, ClientUpdate, Tensors


class Local(FedAvg):
    Config = LocalConfig

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        # The initial adapters come from the shared seed, generated on the device: nothing is sent.
        return seeded_on_device(super().configure(rnd, state, devices))

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        arch = task.arch or self.archs[0]
        workbench.use(arch)
        workbench.set_state(private if private is not None else self.part(task.config["init"], arch))
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

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        return state  # nothing is shared

    def model_for(
        self, workbench, state: Tensors, private: Tensors | None = None, client: int | None = None
    ) -> nn.Module:
        """A client's own model (before it first trains: the shared initial one)."""
        arch = self.arch_of(client)
        workbench.use(arch)
        workbench.set_state(private if private is not None else self.part(state, arch))
        return workbench.model

    def evaluate_server(self, state: Tensors, workbench, test: Encoded) -> dict[str, float]:
        return {}  # the server holds no trained model

    def evaluate_client(
        self, state: Tensors, workbench, data: ClientData, private: Tensors | None, test: Encoded
    ) -> ClientEval:
        own = super().evaluate_client(state, workbench, data, private, test)
        model = self.model_for(workbench, state, private, data.client_id)
        own.global_ = workbench.task.evaluate(model, test, workbench.device)
        return own

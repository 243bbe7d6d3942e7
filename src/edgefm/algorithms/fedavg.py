"""FedAvg: sample-weighted federated averaging of LoRA adapters + head (or of every weight).

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data"
(AISTATS 2017). With ``model.finetune=lora`` each client receives and returns only the LoRA
matrices and the classifier head (Hu et al. 2022); with ``full`` it exchanges every weight.
The other baselines override one step each.
"""

from __future__ import annotations

from edgefm.algorithms.configs import FedAvgConfig
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.aggregate import weighted_mean
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Strategy, Tensors
from edgefm.models.workbench import FitResult


class FedAvg(Strategy):
    Config = FedAvgConfig

    def initial_state(self, workbench) -> Tensors:
        return workbench.get_state()

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        return {d.device_id: ClientTask(d.device_id, rnd, state) for d in devices}

    def local_fit(self, task: ClientTask, workbench, data: ClientData) -> FitResult:
        """Local training; variants (FedProx) override this one step."""
        seed = self.client_seed(task.round, task.client_id)
        return workbench.fit(data.train, self.cfg.train, self.client_generator(task.round, task.client_id), seed)

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        workbench.set_state(task.payload)
        fit = self.local_fit(task, workbench, data)
        return ClientUpdate(
            task.client_id,
            task.round,
            workbench.get_state(),
            num_examples=len(data.train),
            flops=fit.flops,
            metrics={"train_loss": fit.loss, "steps": fit.steps},
        )

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        return weighted_mean([u.payload for u in updates], [u.num_examples for u in updates])

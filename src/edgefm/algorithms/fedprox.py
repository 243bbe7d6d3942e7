"""FedProx: FedAvg with a proximal term mu/2 ||w - w_global||^2 in every client's loss.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020). The term keeps
local updates near the global model under data heterogeneity; ``mu = 0`` is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefm.algorithms.fedavg import FedAvg
from edgefm.config import AlgorithmConfig, ConfigError
from edgefm.fl.strategy import ClientData, ClientTask
from edgefm.models.workbench import FitResult
from edgefm.registry import register


@dataclass(frozen=True)
class FedProxConfig(AlgorithmConfig):
    name: str = "fedprox"
    mu: float = 0.01  # proximal weight

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ConfigError(f"algorithm.mu: {self.mu!r} is out of range; expected a value >= 0")


@register("algorithm", "fedprox")
class FedProx(FedAvg):
    Config = FedProxConfig

    def local_fit(self, task: ClientTask, workbench, data: ClientData) -> FitResult:
        seed = self.client_seed(task.round, task.client_id)
        gen = self.client_generator(task.round, task.client_id)
        # The workbench holds the global state right now, so it is the proximal anchor.
        return workbench.fit(data.train, self.cfg.train, gen, seed, prox_mu=self.algo.mu)

"""FedProx: FedAvg with a proximal term mu/2 ||w - w_global||^2 in every client's loss.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020). The term keeps
local updates near the global model under data heterogeneity; ``mu = 0`` is FedAvg.
"""

from __future__ import annotations

import torch

from edgefm.algorithms.configs import FedProxConfig
from edgefm.algorithms.fedavg import FedAvg
from edgefm.fl.strategy import ClientData, ClientTask
from edgefm.models.workbench import FitResult


def proximal_term(params: list[torch.nn.Parameter], mu: float):
    """A penalty ``() -> mu/2 * sum ||p - p_0||^2`` anchored at the parameters' values now."""
    anchor = [p.detach().clone() for p in params]

    def penalty() -> torch.Tensor:
        return 0.5 * mu * sum((p - a).pow(2).sum() for p, a in zip(params, anchor, strict=True))

    return penalty


class FedProx(FedAvg):
    Config = FedProxConfig

    def local_fit(self, task: ClientTask, workbench, data: ClientData) -> FitResult:
        seed = self.client_seed(task.round, task.client_id)
        gen = self.client_generator(task.round, task.client_id)
        # The workbench holds the global state right now, so it is the proximal anchor.
        trained = [p for p in workbench.model.parameters() if p.requires_grad]
        penalty = proximal_term(trained, self.algo.mu) if self.algo.mu > 0 else None
        return workbench.fit(data.train, self.cfg.train, gen, seed, penalty=penalty)

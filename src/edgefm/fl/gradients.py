"""A device's gradient at the start of training: the ``G2`` of convergence bounds.

Bounds for federated and split training with partial participation (Li et al., "On the
Convergence of FedAvg on Non-IID Data", ICLR 2020; PRINCE, Li, Hu, Min, Huang, arXiv
2503.04971, which prices devices by their contribution to such a bound) weight each device by
``G2_n``, a bound on the squared norm of its local gradient. PRINCE's devices report it once,
before training; :func:`start_gradients` measures what such a report holds: the squared norm of
the gradient of the task's loss over the device's whole training data, at the run's initial
state, with respect to exactly the parameters the method trains.

Choices (the papers do not fix them):
- the model is in eval mode (dropout off), so the report is a function of the weights and the
  data alone, with no seed;
- the loss is the mean over the device's examples, accumulated batch by batch (each batch's mean
  loss weighted by its examples: for token-level losses this weights batches by examples, not
  tokens);
- float32, whatever ``train.precision`` says: the report is one pass, not a training step.
"""

from __future__ import annotations

import numpy as np
import torch

from edgefm.data.encode import Encoded
from edgefm.fl.scenario import Scenario


def gradient(
    model: torch.nn.Module, task, data: Encoded, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The gradient of the mean loss over ``data`` with respect to ``model``'s trainable
    parameters (eval mode; the model's own gradients are left cleared)."""
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters: there is no gradient to report")
    n = len(data)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        for index in data.batch_indices(batch_size):  # backward accumulates the weighted batches
            batch = data.collate(index).to(device)
            (task.loss(model, batch).float() * (len(index) / n)).backward()
        return {
            k: p.grad.float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
            for k, p in params.items()
        }
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def squared_norm(grad: dict[str, torch.Tensor]) -> float:
    return float(sum(float(g.double().pow(2).sum()) for g in grad.values()))


def start_gradients(sc: Scenario, clients: list[int] | None = None) -> np.ndarray:
    """``G2`` of each client of ``sc`` (or of ``clients``): the squared norm of its full-data
    gradient at the strategy's initial state, on the model of the architecture it trains; 0 for
    a client without training data."""
    state = sc.strategy.initial_state(sc.workbench)
    out = []
    for cid in range(len(sc.clients)) if clients is None else clients:
        data = sc.clients[cid].train
        if len(data) == 0:
            out.append(0.0)
            continue
        model = sc.strategy.model_for(sc.workbench, state, None, cid)
        out.append(squared_norm(gradient(model, sc.task, data, sc.cfg.train.batch_size, sc.workbench.device)))
    return np.array(out)

"""A device's start gradient (fl/gradients.py), the G2 PRINCE's devices report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgefm import config
from edgefm.fl.gradients import gradient, squared_norm, start_gradients
from edgefm.fl.scenario import build


@pytest.fixture(scope="module")
def sc(tiny_scenario_factory):
    return tiny_scenario_factory()


def _model(sc, cid: int = 0):
    return sc.strategy.model_for(sc.workbench, sc.strategy.initial_state(sc.workbench), None, cid)


def test_gradient_is_that_of_the_mean_loss_over_all_examples(sc):
    model, data = _model(sc), sc.clients[0].train
    model.eval()
    # known answer: one batch holding every example, differentiated by autograd directly
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    whole = data.collate(np.arange(len(data)))
    ref = torch.autograd.grad(sc.task.loss(model, whole), list(params.values()))
    got = gradient(model, sc.task, data, batch_size=7, device=sc.workbench.device)  # 7: batches of unequal size
    assert list(got) == list(params)
    for (k, g), r in zip(got.items(), ref, strict=True):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4, msg=k)


def test_only_the_trained_parameters_and_the_model_left_as_found(sc):
    model, data = _model(sc), sc.clients[1].train
    model.train()
    got = gradient(model, sc.task, data, batch_size=16, device=sc.workbench.device)
    trained = {k for k, p in model.named_parameters() if p.requires_grad}
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert set(got) == trained and frozen  # LoRA: the backbone is frozen and reports nothing
    assert model.training and all(p.grad is None for p in model.parameters())


def test_squared_norm_and_start_gradients(sc):
    assert squared_norm({"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[1.0]])}) == pytest.approx(26.0)
    g2 = start_gradients(sc)
    assert g2.shape == (len(sc.clients),) and np.all(np.isfinite(g2)) and np.all(g2 > 0)
    # deterministic (eval mode: no dropout, no seed), and each client's own
    model = _model(sc, 2)
    own = squared_norm(gradient(model, sc.task, sc.clients[2].train, sc.cfg.train.batch_size, sc.workbench.device))
    assert start_gradients(sc, [2])[0] == pytest.approx(own, rel=1e-6)
    assert g2[2] == pytest.approx(own, rel=1e-6)
    assert len(set(np.round(g2, 8))) == len(g2)  # different data, different gradients


def test_split_learning_tenant_reports_the_whole_models_gradient():
    vit = ["clients=3", "data.max_train=120", "data.max_test=30"]
    split = build(config.load("configs/splitfed_mnist.yaml", [*vit, "algorithm.cut=1"]))
    g2 = start_gradients(split)
    assert g2.shape == (3,) and np.all(g2 > 0)
    # the cut is placement, not the function: the model cut elsewhere reports the same
    other = build(config.load("configs/splitfed_mnist.yaml", [*vit, "algorithm.cut=3"]))
    np.testing.assert_allclose(start_gradients(other), g2, rtol=1e-5)

"""FedMS's passes over one batch: what is frozen and what trains.

Wu, Li, Wang, Wang, "FedMS: Federated Learning with Mixture of Sparsely Activated Foundations
Models" (arXiv 2312.15926); the strategy is ``algorithms/fedms.py``. A stage 2 step reads three
frozen things per example: the bare backbone's pooled feature (the gate's input, when the gate
is learned), the frozen global expert's class probabilities (unless the local expert stands
alone), and the bare blocks below the local expert's lowest active one. :meth:`Passes.frozen`
computes them (in eval mode: a client's device may keep them, ``models/prefix.py``), and
:meth:`Passes.heads` runs what trains on top: the local expert's active blocks and head, the
gate. Evaluation runs the same two with no cut (the local expert from the input ids).
"""

from __future__ import annotations

import torch
from torch import nn

from edgefm.algorithms.configs import FedMSConfig
from edgefm.models import lora as L
from edgefm.models.prefix import Frozen
from edgefm.models.split import Split


class Passes:
    """The passes of one FedMS mode (``algo``) for a local expert trained on ``blocks``, with
    the bare blocks below them cut off as ``parts.device`` (None: the local expert runs from the
    input ids)."""

    def __init__(self, algo: FedMSConfig, model: nn.Module, blocks: set[int], parts: Split | None, train: bool):
        self.algo, self.model, self.blocks, self.parts, self.train = algo, model, blocks, parts, train
        self.learned = algo.gate == "learned" and algo.experts == "mixture"

    def frozen(self, ids: torch.Tensor, mask: torch.Tensor) -> Frozen:
        """Per-token: the bare prefix's output ``h`` (with a cut); per example: the gate's input
        ``feature`` and the global expert's probabilities ``global``, where the mode uses them."""
        model, parts = self.model, self.parts
        tokens, rows = {}, {}
        L.route_adapters(model, None)
        if parts is not None:
            tokens["h"] = parts.device(ids, mask)
            if self.learned:  # the bare pass goes on from the cut: one pass serves both
                rows["feature"] = parts.edge.features(tokens["h"], mask)
        elif self.learned:
            rows["feature"] = model.pooled(ids, mask)
        if self.algo.experts != "local":
            L.route_adapters(model, "default", None)
            rows["global"] = torch.softmax(model(ids, mask), -1)
        return tokens, rows

    def heads(self, frozen: Frozen, ids: torch.Tensor, mask: torch.Tensor):
        """(gate weights, global expert probabilities, local expert logits); the first two None
        when the mode does not use them."""
        model, (tokens, rows) = self.model, frozen
        L.route_adapters(model, "local", self.blocks, train=self.train)
        parts = self.parts
        feature = parts.edge.features(tokens["h"], mask) if parts is not None else model.pooled(ids, mask)
        local_logits = model.local_head(model.dropout(feature))
        weights = None
        if self.algo.experts == "mixture":
            weights = model.gate(rows["feature"]) if self.learned else local_logits.new_full((len(ids), 2), 0.5)
        return weights, rows.get("global"), local_logits

    def loss(self, frozen: Frozen, batch) -> torch.Tensor:
        """Mixture NLL + ``local_weight`` x the local expert's own cross-entropy (mixture mode)."""
        weights, global_probs, local_logits = self.heads(frozen, batch.input_ids, batch.attention_mask)
        loss = nn.functional.nll_loss(combine(weights, global_probs, local_logits), batch.labels)
        if self.algo.experts == "mixture":
            loss = loss + self.algo.local_weight * nn.functional.cross_entropy(local_logits, batch.labels)
        return loss

    @torch.no_grad()
    def evaluate(self, ids: torch.Tensor, mask: torch.Tensor):
        """:meth:`heads` on freshly computed frozen passes, without autograd."""
        return self.heads(self.frozen(ids, mask), ids, mask)


def combine(weights, global_probs, local_logits) -> torch.Tensor:
    """Log probabilities: the gate-weighted mixture, or the local expert's alone (no weights)."""
    if weights is None:
        return torch.log_softmax(local_logits, -1)
    mix = weights[:, :1] * global_probs + weights[:, 1:] * torch.softmax(local_logits, -1)
    return torch.log(mix.clamp_min(1e-12))

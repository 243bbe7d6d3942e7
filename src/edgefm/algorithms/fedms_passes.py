"""FedMS's passes over one batch: what is frozen and what trains.

Wu, Li, Wang, Wang, "FedMS: Federated Learning with Mixture of Sparsely Activated Foundations
Models" (arXiv 2312.15926); the strategy is ``algorithms/fedms.py``. A stage 2 step reads three
frozen things per example: the bare backbone's pooled feature (the gate's input, when the gate
is learned), the frozen global expert's class probabilities (unless the local expert stands
alone), and the bare blocks below the local expert's lowest active one. :meth:`Passes.frozen`
computes them (in eval mode: a client's device may keep them, ``models/prefix.py``), and
:meth:`Passes.heads` runs what trains on top: the local expert's active blocks and head, the
gate. Evaluation runs the same two with no cut (the local expert from the input ids).
:class:`Mixture` is the model a client ends with, and writes itself as folders plain
transformers and peft load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgefm.algorithms.configs import FedMSConfig
from edgefm.models import hf_export
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


@torch.no_grad()
def breakdown(passes: Passes, data, device) -> dict[str, float]:
    """Accuracy of the global expert, the local expert and their mixture on ``data``, and the
    gate's mean weight on the local expert (the experts already loaded into ``passes.model``)."""
    passes.model.eval()
    hits = {"global": 0, "local": 0, "mixture": 0}
    w_local = 0.0
    for batch in data.batches(128):
        batch = batch.to(device)
        w, p_global, local_logits = passes.evaluate(batch.input_ids, batch.attention_mask)
        mix = w[:, :1] * p_global + w[:, 1:] * torch.softmax(local_logits, -1)
        for name, p in (("global", p_global), ("local", local_logits), ("mixture", mix)):
            hits[name] += int((p.argmax(-1) == batch.labels).sum())
        w_local += float(w[:, 1].sum())
    n = max(1, len(data))
    return {**{f"acc_{k}": v / n for k, v in hits.items()}, "gate_local": w_local / n}


class Mixture(nn.Module):
    """The model a FedMS client ends with, as one module: (input_ids, attention_mask) -> log
    mixture probabilities. A view of the shared model, valid until it is next loaded."""

    def __init__(self, passes: Passes):
        super().__init__()
        self.passes, self.model = passes, passes.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return combine(*self.passes.evaluate(input_ids, attention_mask))

    def save_pretrained(self, tokenizer, folder: Path, facts: dict | None = None) -> dict[str, Any]:
        """``folder/base`` + a peft adapter folder per expert (``global``: adapter ``default`` in
        every block; ``local``: adapter ``local`` in the blocks it trained), their heads and the
        gate (``hf_export.save_experts``); ``edgefm.json`` says how they combine."""
        algo, blocks = self.passes.algo, sorted(self.passes.blocks)
        experts = {"local": hf_export.Expert("local", "local_head", blocks)}
        feature = "f = the base's last hidden states (no adapter) mean-pooled over attention_mask"
        if algo.experts == "local":
            how = {"combine": "log p = log_softmax(local logits)"}
        else:
            experts = {"global": hf_export.Expert("default", "head"), **experts}
            mix = "p = w[0] * softmax(global logits) + w[1] * softmax(local logits); output log p"
            gate = "w = (0.5, 0.5)"
            if self.passes.learned:
                gate = f"w = softmax(out(f + adapter.2(gelu(adapter.0(f))))), tensors in gate.safetensors; {feature}"
            how = {"combine": mix, "gate": gate}
        extra = {"gate": self.model.gate.state_dict()} if self.passes.learned else {}
        return hf_export.save_experts(self.model, tokenizer, folder, experts, extra, how, facts)

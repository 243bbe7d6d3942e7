"""Cut a model in two for split learning: a device part and an edge part.

Split learning (Vepakomma et al. 2018; SplitFed, Thapa et al., AAAI 2022) as PRINCE (Li, Hu, Min,
Huang; arXiv 2503.04971) trains foundation models with it: the device runs the embeddings and
the blocks before the cut and sends the *smashed* activations up; the edge server runs the
blocks after the cut and the head, computes the loss, and sends the gradient at the cut down;
the device finishes the backward pass.

The two parts are views over the one model's own modules (no copies: LoRA adapters and every
weight are shared with the unsplit model), and their forward passes are the library's own,
layer by layer, with the masks built by ``transformers.masking_utils``, so composed they give
exactly the unsplit model's outputs (tested). The edge part rebuilds the attention mask from
the padding mask the device sends with the activations.

Built: BERT-style encoders with a classification head (MiniLM, tiny BERT:
:class:`~edgefm.models.backbones.TextClassifier`), the image and audio encoders of
``models/media.py`` (a ViT, a Whisper encoder) under the same head, and Llama-style decoders
(llama, qwen3, qwen3_moe: :class:`~edgefm.models.causal.CausalLM`). For images and audio the
activations are every position's hidden state (patches and [CLS]; 50 audio positions) and the
mask sent with them is the batch's one-column placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from edgefm import EdgefmError


@dataclass
class Split:
    """``device(input_ids, attention_mask) -> activations``; ``edge(activations,
    attention_mask) -> outputs`` (class scores or next-token logits)."""

    device: nn.Module
    edge: nn.Module
    cut: int  # blocks on the device
    layers: int  # blocks in all
    width: int  # hidden size at the cut
    positions: int | None = None  # positions at the cut when fixed (images, audio); else the input length


# ----------------------------------------------------------------------------- encoders


class _EncoderDevice(nn.Module):
    def __init__(self, encoder: nn.Module, cut: int):
        super().__init__()
        self.embeddings = encoder.embeddings
        self.blocks = nn.ModuleList(encoder.encoder.layer[:cut])
        self.config = encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(input_ids=input_ids)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=h, attention_mask=attention_mask)
        for block in self.blocks:
            h = block(h, mask)
        return h


class _EncoderEdge(nn.Module):
    def __init__(self, classifier: nn.Module, cut: int):
        super().__init__()
        self.blocks = nn.ModuleList(classifier.encoder.encoder.layer[cut:])
        self.config = classifier.encoder.config
        self.dropout, self.head = classifier.dropout, classifier.head

    def features(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled feature the head reads."""
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=h, attention_mask=attention_mask)
        for block in self.blocks:
            h = block(h, mask)
        w = attention_mask.unsqueeze(-1).to(h.dtype)  # the classifier's masked mean pooling
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(h, attention_mask)))


# ----------------------------------------------------------------------------- images and audio


class _MediaDevice(nn.Module):
    """The embedding and the first ``cut`` blocks of a ``models/media.py`` encoder. Only those
    are registered as its modules (the device part's parameters and state keys); the encoder
    itself is held unregistered, for its ``embed``."""

    def __init__(self, encoder: nn.Module, cut: int):
        super().__init__()
        object.__setattr__(self, "_encoder", encoder)
        self.embedding = nn.ModuleList(encoder.embedding_modules())
        self.blocks = nn.ModuleList(encoder.blocks[:cut])
        self.cut = cut

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._encoder.run_blocks(self._encoder.embed(input_ids), 0, self.cut)


class _MediaEdge(nn.Module):
    def __init__(self, classifier: nn.Module, cut: int):
        super().__init__()
        object.__setattr__(self, "_encoder", classifier.encoder)
        self.blocks = nn.ModuleList(classifier.encoder.blocks[cut:])
        self.final_norm = classifier.encoder.final_norm
        self.cut = cut
        self.dropout, self.head = classifier.dropout, classifier.head

    def features(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled feature the head reads."""
        return self._encoder.head_input(self._encoder.run_blocks(h, self.cut))[:, 0]

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(h, attention_mask)))


# ----------------------------------------------------------------------------- decoders


def _decoder_inputs(config, h: torch.Tensor, attention_mask: torch.Tensor, rotary: nn.Module):
    positions = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
    mask = create_causal_mask(
        config=config, inputs_embeds=h, attention_mask=attention_mask, cache=None, position_ids=positions
    )
    return mask, rotary(h, position_ids=positions), positions


class _DecoderDevice(nn.Module):
    def __init__(self, lm: nn.Module, cut: int):
        super().__init__()
        body = lm.model
        self.embed_tokens, self.rotary = body.embed_tokens, body.rotary_emb
        self.blocks = nn.ModuleList(body.layers[:cut])
        self.config = lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        mask, rope, positions = _decoder_inputs(self.config, h, attention_mask, self.rotary)
        for block in self.blocks:
            h = block(h, attention_mask=mask, position_embeddings=rope, position_ids=positions)
        return h


class _DecoderEdge(nn.Module):
    def __init__(self, lm: nn.Module, cut: int):
        super().__init__()
        body = lm.model
        self.rotary, self.norm, self.lm_head = body.rotary_emb, body.norm, lm.lm_head
        self.blocks = nn.ModuleList(body.layers[cut:])
        self.config = lm.config

    def forward(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask, rope, positions = _decoder_inputs(self.config, h, attention_mask, self.rotary)
        for block in self.blocks:
            h = block(h, attention_mask=mask, position_embeddings=rope, position_ids=positions)
        return self.lm_head(self.norm(h))


# ----------------------------------------------------------------------------- the cut


def split(model: nn.Module, cut: int) -> Split:
    """``model`` cut after its first ``cut`` blocks (1 <= cut < blocks)."""
    positions = None  # the input length, except where the encoder fixes it
    if hasattr(model, "encoder") and hasattr(model.encoder, "run_blocks"):  # models/media.py
        layers, width = len(model.encoder.blocks), model.encoder.config.hidden_size

        positions = model.encoder.positions

        def make(c: int) -> tuple[nn.Module, nn.Module]:
            return _MediaDevice(model.encoder, c), _MediaEdge(model, c)

    elif hasattr(model, "encoder") and hasattr(getattr(model.encoder, "encoder", None), "layer"):
        layers, width = len(model.encoder.encoder.layer), model.encoder.config.hidden_size

        def make(c: int) -> tuple[nn.Module, nn.Module]:
            return _EncoderDevice(model.encoder, c), _EncoderEdge(model, c)

    elif hasattr(model, "lm") and hasattr(getattr(model.lm, "model", None), "rotary_emb"):
        layers, width = len(model.lm.model.layers), model.lm.config.hidden_size

        def make(c: int) -> tuple[nn.Module, nn.Module]:
            return _DecoderDevice(model.lm, c), _DecoderEdge(model.lm, c)

    else:
        raise EdgefmError(
            f"split: cannot cut a {type(model).__name__}; expected a BERT-style, image or audio classifier "
            "or a Llama-style decoder"
        )
    if not 1 <= cut < layers:
        raise EdgefmError(f"split.cut: {cut}; expected 1 to {layers - 1} (the model has {layers} blocks)")
    device, edge = make(cut)
    return Split(device, edge, cut, layers, width, positions)


def split_step(parts: Split, batch, loss_fn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One split training step's forward and backward: the device's forward, the activations
    sent up (detached: a new leaf on the edge), the edge's forward, loss and backward, the
    gradient at the cut sent down, the device's backward. Returns (loss, activations, gradient
    at the cut); gradients accumulate in both parts' parameters."""
    acts = parts.device(batch.input_ids, batch.attention_mask)
    received = acts.detach().requires_grad_(True)
    loss = loss_fn(parts.edge(received, batch.attention_mask), batch)
    loss.backward()
    acts.backward(received.grad)
    return loss.detach(), received.detach(), received.grad.detach()

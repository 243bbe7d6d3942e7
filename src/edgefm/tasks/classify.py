"""Classification: a backbone (MiniLM, a tiny BERT or a local folder for text; a tiny ViT for
images, a tiny Whisper encoder for audio: ``models/media.py``) with a linear head,
cross-entropy, accuracy. One architecture per run: the backbone the config names; its modality
must be the data's."""

from __future__ import annotations

import datasets
import numpy as np
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.config import RunConfig
from edgefm.data import media
from edgefm.data.encode import Batch, Encoded, encode
from edgefm.data.sources import DataBundle, load_data
from edgefm.edge.devices import DeviceProfile
from edgefm.models.backbones import TextClassifier, build_backbone
from edgefm.models.families import Fit
from edgefm.models.lora import add_lora
from edgefm.models.workbench import accuracy
from edgefm.tasks.base import Task


def set_dropout(module: nn.Module, p: float) -> None:
    """Every dropout inside ``module`` (BERT's hidden and attention dropout: its attention reads
    its dropout module's ``p``) at probability ``p``."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(module.config, key):  # what a saved copy of the model says
            setattr(module.config, key, p)


class Classify(Task):
    name = "classify"
    headline = "accuracy"
    lower_is_better = False

    def __init__(self) -> None:
        self._backbone = None

    def load(self, cfg: RunConfig) -> DataBundle:
        return load_data(cfg.data, cfg.seed)

    def setup(self, cfg: RunConfig, bundle: DataBundle):
        self._backbone = build_backbone(cfg.model.name, cfg.model.path, seed=cfg.seed)
        if self._backbone.modality != bundle.modality:
            raise EdgefmError(
                f"model.name: {cfg.model.name} reads {self._backbone.modality}; data {bundle.name} holds "
                f"{bundle.modality}: expected a model for {bundle.modality}"
            )
        return self._backbone.tokenizer

    def architectures(self, cfg: RunConfig) -> list[str]:
        return [cfg.model.name]

    def assign(self, cfg: RunConfig, devices: list[DeviceProfile]) -> dict[int, Fit]:
        """Every device trains the run's one backbone (its memory is not estimated here)."""
        return {d.device_id: Fit(cfg.model.name, 0.0) for d in devices}

    def build(self, cfg: RunConfig, arch: str, tokenizer, bundle: DataBundle) -> nn.Module:
        backbone = self._backbone
        if cfg.model.backbone_dropout is not None:
            set_dropout(backbone.encoder, cfg.model.backbone_dropout)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = TextClassifier(backbone.encoder, backbone.hidden_size, bundle.num_labels)
            if cfg.model.finetune == "lora":
                model = add_lora(model, cfg.model.lora, backbone.lora_targets)
        return model

    def encode(self, tokenizer, data: datasets.Dataset, index: np.ndarray, cfg: RunConfig) -> Encoded:
        if "image" in data.column_names or "path" in data.column_names:
            rows = data.select(np.asarray(index, dtype=int))
            if "image" in data.column_names:
                feats = media.image_features(tokenizer, rows["image"])
            else:
                feats = media.audio_features(tokenizer, rows["path"])
            return Encoded(feats, np.asarray(rows["label"], dtype=int))
        texts, labels = data["text"], data["label"]
        return encode([texts[i] for i in index], [labels[i] for i in index], tokenizer, cfg.data.max_length)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(model(batch.input_ids, batch.attention_mask), batch.labels)

    def evaluate(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[str, float]:
        return {"accuracy": accuracy(model, data, device)}

    def local(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[str, float]:
        return {"acc": accuracy(model, data, device)}

"""Encoders for images and audio, built tiny from transformers configs, behind the text
classifier's interface.

- ``tiny_vit``: a Vision Transformer (Dosovitskiy et al., ICLR 2021; ``transformers.ViTModel``)
  for 28x28 grey digits: 7x7 patches (16 tokens and [CLS]), 4 layers, width 64, 4 heads.
- ``tiny_whisper``: the encoder of Whisper (Radford et al., 2022; ``WhisperEncoder``) on one
  second of 16 kHz audio: 80 log-mel bins x 100 frames, two convolutions (the second strides 2:
  50 positions), 4 layers, width 64, 4 heads.

:class:`MediaEncoder` takes the flat feature vector of ``data/media.py`` as ``input_ids``, runs
``embed`` (patches or convolutions, plus positions), the ``blocks`` and the ``final_norm`` the
library's own model runs, and returns the mean over positions as a length-1 sequence: the text
classifier's masked mean pooling (over one position, mask [B, 1]) then passes it through, so
``TextClassifier`` and LoRA work unchanged, and ``models/split.py`` cuts between blocks.
Randomly initialised from the run seed: no pretrained ViT or Whisper is available offline.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViTConfig, ViTModel, WhisperConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from edgefm.models.backbones import Backbone
from edgefm.registry import register


class MediaEncoder(nn.Module):
    """A transformers image or audio encoder seen as embed -> blocks -> final_norm -> mean."""

    def __init__(self, model: nn.Module, kind: str, shape: tuple[int, ...]):
        super().__init__()
        self.model, self.kind, self.shape = model, kind, shape
        self.config = model.config
        self.blocks = model.layers
        self.final_norm = model.layernorm if kind == "image" else model.layer_norm
        c = model.config  # positions after the embedding: patches and [CLS], or audio frames / 2
        self.positions = (c.image_size // c.patch_size) ** 2 + 1 if kind == "image" else c.max_source_positions

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *self.shape)
        if self.kind == "image":
            return self.model.embeddings(x)
        m = self.model  # WhisperEncoder.forward up to its layers
        h = nn.functional.gelu(m.conv2(nn.functional.gelu(m.conv1(x)))).permute(0, 2, 1)
        h = h + m.embed_positions(torch.arange(m.embed_positions.num_embeddings, device=h.device))
        return nn.functional.dropout(h, p=m.dropout, training=self.training)

    def embedding_modules(self) -> list[nn.Module]:
        """The modules ``embed`` uses (what a device holds before the first block)."""
        if self.kind == "image":
            return [self.model.embeddings]
        return [self.model.conv1, self.model.conv2, self.model.embed_positions]

    def run_blocks(self, h: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            h = block(h, None)
        return h

    def head_input(self, h: torch.Tensor) -> torch.Tensor:
        """The final norm and the mean over positions, as a length-1 sequence."""
        return self.final_norm(h).mean(dim=1, keepdim=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.head_input(self.run_blocks(self.embed(input_ids))))

    def example_input(self, batch: int) -> torch.Tensor:
        """A zero input of the fixed size this encoder reads (for FLOP counting)."""
        return torch.zeros(batch, int(torch.tensor(self.shape).prod()))


def _seeded(seed: int, make):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


@register("model", "tiny_vit")
def tiny_vit(seed: int = 0, layers: int = 4, hidden: int = 64, heads: int = 4) -> Backbone:
    from transformers.models.vit import ViTImageProcessorPil

    cfg = ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = _seeded(seed, lambda: ViTModel(cfg, add_pooling_layer=False))
    processor = ViTImageProcessorPil(
        do_resize=False, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5], image_std=[0.5]
    )
    return Backbone("tiny_vit", MediaEncoder(model, "image", (1, 28, 28)), processor, "image", ("q_proj", "v_proj"))


@register("model", "tiny_whisper")
def tiny_whisper(seed: int = 0, layers: int = 4, hidden: int = 64, heads: int = 4) -> Backbone:
    from transformers import WhisperFeatureExtractor

    cfg = WhisperConfig(
        num_mel_bins=80,
        d_model=hidden,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=2 * hidden,
        max_source_positions=50,  # 100 frames (1 s at a 10 ms hop) after the stride-2 convolution
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    model = _seeded(seed, lambda: WhisperEncoder(cfg))
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16_000, chunk_length=1)
    return Backbone("tiny_whisper", MediaEncoder(model, "audio", (80, 100)), extractor, "audio", ("q_proj", "v_proj"))

"""The Task protocol: data, models, loss and metrics of one kind of learning problem."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import datasets
import numpy as np
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.config import RunConfig
from edgefm.data.encode import Batch, Encoded
from edgefm.data.sources import DataBundle
from edgefm.edge.devices import DeviceProfile
from edgefm.models.families import Fit


class Task(ABC):
    """One run's task. The runtime and the methods reach data, models, loss and metrics only
    through these methods, so a method written once trains either task."""

    name: ClassVar[str]
    headline: ClassVar[str]  # the metric a run is judged by ("accuracy", "log_ppl")
    lower_is_better: ClassVar[bool]

    @abstractmethod
    def load(self, cfg: RunConfig) -> DataBundle:
        """The training pool and the test set; ``label`` is the class (or the domain)."""

    @abstractmethod
    def setup(self, cfg: RunConfig, bundle: DataBundle):
        """The run's tokenizer (built once, shared by every model of the run)."""

    @abstractmethod
    def architectures(self, cfg: RunConfig) -> list[str]:
        """The architectures the run may use; the first is its default (the server's model)."""

    @abstractmethod
    def assign(self, cfg: RunConfig, devices: list[DeviceProfile]) -> dict[int, Fit]:
        """Each device's architecture and its estimated training memory (a device that can
        train none gets no architecture and the reason)."""

    @abstractmethod
    def build(self, cfg: RunConfig, arch: str, tokenizer, bundle: DataBundle) -> nn.Module:
        """A model ``(input_ids, attention_mask) -> scores`` of ``arch``, seeded from the run's
        seed, with LoRA when ``model.finetune=lora``."""

    @abstractmethod
    def encode(self, tokenizer, data: datasets.Dataset, index: np.ndarray, cfg: RunConfig) -> Encoded:
        """Rows ``index`` of ``data`` as model inputs (examples, or packed blocks)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The training objective on one batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[str, float]:
        """The run's metrics of ``model`` on a test set."""

    @abstractmethod
    def local(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[str, float]:
        """A client's metrics on its local test split (the runtime reports their mean and spread)."""

    def generate(self, model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, seed: int) -> str:
        """A seeded continuation of ``prompt`` (generative tasks only)."""
        raise EdgefmError(f"task {self.name!r} does not generate text; expected a language-model run (task lm)")

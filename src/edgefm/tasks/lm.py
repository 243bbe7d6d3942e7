"""Causal language modelling: documents packed into blocks, next-token cross-entropy, and the
figures language-model papers report: token-level mean negative log-likelihood (log-perplexity),
perplexity and token accuracy (the teacher-forced argmax), over all tokens and per domain.

Metrics sum per-token losses in float64 and skip padding; a block's first token is never a
target (nothing precedes it). The architectures a run may use are ``model.families`` (or
``model.name``) x ``model.sizes`` from ``models/families.py``; each device trains the largest
that fits its memory (the method's ``population`` decides, with :func:`fit_devices`).
"""

from __future__ import annotations

import math
import zlib

import datasets
import numpy as np
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.config import RunConfig
from edgefm.data.corpus import build_tokenizer, load_corpus, pack
from edgefm.data.encode import Batch, Encoded
from edgefm.data.sources import DataBundle
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.strategy import seed_for
from edgefm.models import causal
from edgefm.models import families as F
from edgefm.models.lora import add_lora
from edgefm.tasks.base import Task

POSITIONS = 512  # position table of the learned-position families; blocks must fit in it


def family_of(cfg: RunConfig, device_id: int) -> str:
    """The family device ``device_id`` runs: ``model.name``, or one of ``model.families`` by a
    seeded draw per device (its vendor's choice, independent of its profile)."""
    families = cfg.model.families or (cfg.model.name,)
    return families[seed_for(cfg.seed, 23, device_id) % len(families)]


class LanguageModelling(Task):
    name = "lm"
    headline = "log_ppl"
    lower_is_better = True

    def __init__(self) -> None:
        self.domains: list[str] = []
        self.vocab = 0

    def load(self, cfg: RunConfig) -> DataBundle:
        if cfg.data.block_length > POSITIONS:
            raise EdgefmError(f"data.block_length: {cfg.data.block_length} exceeds {POSITIONS} positions")
        bundle = load_corpus(cfg.data, cfg.seed)
        self.domains = bundle.label_names
        return bundle

    def setup(self, cfg: RunConfig, bundle: DataBundle):
        """``data.tokenizer: model`` is a local model folder's own tokenizer (``model.name=path``)
        or, for the built-in families, MiniLM's WordPiece; ``bpe:N`` is trained on the text."""
        if cfg.model.name == "path" and cfg.data.tokenizer == "model":
            tokenizer = causal.folder_tokenizer(cfg.model.path)
        else:
            tokenizer = build_tokenizer(cfg.data.tokenizer, list(bundle.train["text"]))
        self.vocab = len(tokenizer)
        return tokenizer

    def architectures(self, cfg: RunConfig) -> list[str]:
        if cfg.model.name == "path":
            return ["path"]
        families = cfg.model.families or (cfg.model.name,)
        sizes = sorted(cfg.model.sizes, key=F.SIZES.index, reverse=True)
        experts = cfg.model.experts
        return [F.moe_name(s, experts) if f == "qwen3_moe" and experts else f"{f}-{s}" for f in families for s in sizes]

    def spec(self, arch: str) -> F.ArchSpec:
        return F.parse(arch, self.vocab, POSITIONS)

    def build(self, cfg: RunConfig, arch: str, tokenizer, bundle: DataBundle) -> nn.Module:
        if arch == "path":
            model, family = causal.from_folder(cfg.model.path), "path"
            if model.lm.config.vocab_size < self.vocab:
                raise EdgefmError(
                    f"model.path: its vocabulary has {model.lm.config.vocab_size} tokens, the run's tokenizer "
                    f"{self.vocab}; expected data.tokenizer=model (the folder's own)"
                )
        else:
            a = self.spec(arch)
            family = a.family
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            model = causal.build(a, pad, tokenizer.eos_token_id, seed_for(cfg.seed, 21, zlib.crc32(arch.encode())))
        if cfg.model.finetune == "lora":
            targets = causal.LORA_TARGETS[family]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = add_lora(model, cfg.model.lora, targets, causal.LORA_PARAMETERS.get(family, ()))
        return model

    def trained_parameters(self, cfg: RunConfig, arch: str) -> int | None:
        """Parameters a device trains for ``arch`` (None: all of them, full fine-tuning)."""
        if cfg.model.finetune != "lora":
            return None
        a = self.spec(arch)
        with_experts = cfg.model.lora.target_parameters != () and a.experts > 0
        return F.lora_parameters(a, cfg.model.lora.r, with_experts)

    def assign(self, cfg: RunConfig, devices: list[DeviceProfile]) -> dict[int, F.Fit]:
        """Each device's architecture: the largest of its family's sizes that fits its memory
        (scaled by ``edge.memory_scale``) at the run's batch size and block length."""
        out = {}
        for d in devices:
            family = family_of(cfg, d.device_id)
            if family == "path":
                out[d.device_id] = F.Fit("path", 0.0)
                continue
            trained = {
                a: self.trained_parameters(cfg, a) for a in self.architectures(cfg) if a.startswith(family + "-")
            }
            out[d.device_id] = F.fit(
                family,
                tuple(cfg.model.sizes),
                d.memory_bytes * cfg.edge.memory_scale,
                cfg.train.batch_size,
                cfg.data.block_length,
                self.vocab,
                POSITIONS,
                {k: v for k, v in trained.items() if v is not None},
                cfg.model.experts,
            )
        return out

    def encode(self, tokenizer, data: datasets.Dataset, index: np.ndarray, cfg: RunConfig) -> Encoded:
        texts, labels = data["text"], data["label"]
        return pack(tokenizer, [texts[i] for i in index], [labels[i] for i in index], cfg.data.block_length)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(batch.input_ids, batch.attention_mask)
        valid = (batch.attention_mask[:, 1:] > 0) & (batch.attention_mask[:, :-1] > 0)
        return nn.functional.cross_entropy(logits[:, :-1][valid], batch.input_ids[:, 1:][valid])

    @torch.no_grad()
    def token_stats(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[int, tuple[float, int, int]]:
        """Per domain: (sum of token NLL in float64, tokens predicted right, tokens predicted)."""
        model.eval()
        out: dict[int, list] = {}
        for batch in data.batches(32):
            batch = batch.to(device)
            logits = model(batch.input_ids, batch.attention_mask)
            target = batch.input_ids[:, 1:]
            valid = (batch.attention_mask[:, 1:] > 0) & (batch.attention_mask[:, :-1] > 0)
            nll = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), target, reduction="none")
            hit = logits[:, :-1].argmax(-1) == target
            for d in batch.labels.unique().tolist():
                rows = (batch.labels == d)[:, None] & valid
                acc = out.setdefault(d, [0.0, 0, 0])
                acc[0] += float(nll[rows].double().sum())
                acc[1] += int(hit[rows].sum())
                acc[2] += int(rows.sum())
        return {d: tuple(v) for d, v in out.items()}

    def evaluate(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[str, float]:
        stats = self.token_stats(model, data, device)
        out = summarize(
            sum(s[0] for s in stats.values()), sum(s[1] for s in stats.values()), sum(s[2] for s in stats.values())
        )
        for d, (nll, hits, n) in sorted(stats.items()):
            out.update({f"{k}/{self.domains[d]}": v for k, v in summarize(nll, hits, n).items()})
        return out

    def local(self, model: nn.Module, data: Encoded, device: torch.device) -> dict[str, float]:
        stats = self.token_stats(model, data, device)
        out = summarize(
            sum(s[0] for s in stats.values()), sum(s[1] for s in stats.values()), sum(s[2] for s in stats.values())
        )
        return {"log_ppl": out["log_ppl"], "token_acc": out["token_acc"]} if out else {}

    @torch.no_grad()
    def generate(self, model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, seed: int) -> str:
        """Sample a continuation of ``prompt`` (top-k 50, temperature 1), seeded: the same seed
        gives the same text."""
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            raise EdgefmError(f"--prompt {prompt!r}: no tokens; expected some text")
        device = next(model.parameters()).device
        model.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = model.lm.generate(
                ids.to(device),
                attention_mask=torch.ones_like(ids).to(device),
                max_new_tokens=max_new_tokens,
                do_sample=True,
                top_k=50,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def summarize(nll: float, hits: int, n: int) -> dict[str, float]:
    """Log-perplexity (mean token NLL), perplexity and token accuracy; nothing for no tokens."""
    if n == 0:
        return {}
    log_ppl = nll / n
    return {"log_ppl": log_ppl, "ppl": math.exp(min(log_ppl, 700.0)), "token_acc": hits / n}

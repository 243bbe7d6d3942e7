"""DeepFusion: one-shot federated distillation of heterogeneous on-device LLMs into a global MoE.

Li, Hu, Abdelmoniem, Min, Huang, Huang, "DeepFusion" (arXiv 2602.14301). One round:

- **Devices.** Each trains the largest causal LM of its family that fits its memory (the task's
  device fit) on its own text for ``local_steps`` steps, from the run's seeded initial model
  (nothing is downloaded), computes the mean MiniLM sentence embedding of its text (up to
  ``embed_blocks`` of its blocks, evenly spaced, decoded), and uploads model and embedding once.
- **Phase I (server).** Cosine similarity of the embeddings (PCA to ``embed_dim`` first, fitted
  on the server over the uploaded embeddings); KMeans (scipy, seeded) *within each architecture*,
  so that a cluster's members can be averaged: K experts are shared among architectures in
  proportion to their devices (largest remainder, at least one each). A cluster's proxy teacher is
  the token-weighted mean of its members' weights. ``clustering=none``: one proxy per
  architecture, the K students spread over them in turn.
- **Phase II.** Student i, a copy of the MoE's dense base (``qwen3`` of ``moe_size``, all copies
  from one seeded initialisation), learns from proxy i on the server's public text:
  L = L_CE + alpha L_FM + beta L_KL, L_FM through View-Aligned Attention (``models/vaa.py``; J is
  capped by the shallower model's depth), L_KL per token at ``temperature``. Baselines on the same
  path: ``distill=linear`` (linear feature matching, the ablation), ``fedmkt`` (per public block,
  the proxy of lowest cross-entropy gives the target distribution, top-k logits kept; no
  features), ``ofa`` (per-stage linear projectors into the vocabulary, the OFA loss).
- **Phase III.** The MoE (``models/moe.py``): expert i of layer l is the MLP of layer l of student
  i; embeddings, attention, norms and the output layer are the students' mean; with the experts
  frozen, the router and the shared layers are fine-tuned on the public text (top-2 routing,
  cross-entropy + ``balance`` x the load-balancing loss).

Everyone's model after the round is the MoE. The server's seconds per phase are in the round's
metrics, with how close Phase II brought the students to their teachers (``phase2_kl``,
``phase2_student_ce`` against ``phase2_teacher_ce``, on the first public blocks; fedmkt and ofa
are measured against the cluster's own proxy too). Choices the paper leaves open are the project's (see the config's help).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import nn

from edgefm import EdgefmError
from edgefm.algorithms.configs import DeepFusionConfig
from edgefm.algorithms.fedavg import FedAvg, seeded_on_device
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors, seed_for
from edgefm.models import causal, distill
from edgefm.models import families as F
from edgefm.models import moe as MoE
from edgefm.models.backbones import minilm, sentence_embeddings
from edgefm.models.vaa import LinearAlignment, ViewAlignedAttention, feature_loss

EMBEDDING = "embedding"
EMBED_WIDTH = 384  # all-MiniLM-L6-v2


class DeepFusion(FedAvg):
    Config = DeepFusionConfig

    def population(self, clients: list[ClientData], devices: list[DeviceProfile], workbench):
        out = super().population(clients, devices, workbench)
        unfit = [(cid, f.reason) for cid, f in sorted(self.fits.items()) if not f.arch]
        if unfit:  # one shot: a device left out would leave its knowledge out of the MoE for good
            cid, why = unfit[0]
            raise EdgefmError(f"deepfusion: device {cid} fits no model ({why}); every device must upload one")
        self.workbench = workbench
        self.moe_arch = F.moe_name(self.algo.moe_size, self.algo.experts)
        return out

    def server_data(self, public) -> None:
        if public is None or len(public) == 0:
            raise EdgefmError("data.public_fraction: deepfusion needs public text on the server; expected > 0")
        self.public = public

    def prefix(self, arch: str) -> str:
        return f"{arch}::"  # device models and the MoE always side by side

    # -- devices --------------------------------------------------------------------------
    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        """Round 1: every device trains from the run's seeded initial model (nothing downloaded)."""
        return seeded_on_device(super().configure(rnd, state, devices))

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        return {**task.config["init"], EMBEDDING: torch.zeros(EMBED_WIDTH)}

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        workbench.use(task.arch)
        workbench.set_state(self.part(task.config["init"], task.arch))
        train = dataclasses.replace(self.cfg.train, epochs=10**6, max_steps=self.algo.local_steps)
        fit = workbench.fit(
            data.train,
            train,
            self.client_generator(task.round, task.client_id),
            self.client_seed(task.round, task.client_id),
        )
        payload = {self.prefix(task.arch) + k: v for k, v in workbench.get_state().items()}
        payload[EMBEDDING] = self.embed(workbench.tokenizer, data)
        tokens = int(sum(len(b) for b in data.train.ids))
        return ClientUpdate(
            task.client_id, task.round, payload, tokens, fit.flops, {"train_loss": fit.loss, "steps": fit.steps}
        )

    def embed(self, tokenizer, data: ClientData) -> torch.Tensor:
        """The mean MiniLM sentence embedding of a device's text: of up to ``embed_blocks`` of its
        blocks, evenly spaced, decoded (a summary, not a second pass over all its text)."""
        if not hasattr(self, "_minilm"):
            self._minilm = minilm()
        ids = data.train.ids
        pick = np.unique(np.linspace(0, len(ids) - 1, min(len(ids), self.algo.embed_blocks)).round().astype(int))
        texts = tokenizer.batch_decode([ids[i].tolist() for i in pick], skip_special_tokens=True)
        return sentence_embeddings(self._minilm, texts).mean(0)

    # -- the server -----------------------------------------------------------------------
    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        clock = time.perf_counter()
        clusters = self.cluster(updates, tasks)
        proxies = [
            (arch, self.proxy([u for u in updates if u.client_id in members], arch)) for arch, members in clusters
        ]
        t1 = time.perf_counter()
        students = [self.distil(i, arch, proxy, proxies) for i, (arch, proxy) in enumerate(proxies)]
        t2 = time.perf_counter()
        gaps = [self.fidelity(arch, proxy, student) for (arch, proxy), student in zip(proxies, students, strict=True)]
        moe = self.fuse(students)
        t3 = time.perf_counter()
        self.round_metrics = {
            "server_s_phase1": t1 - clock,
            "server_s_phase2": t2 - t1,
            "server_s_phase3": t3 - t2,
            "clusters": float(len(clusters)),
        }
        self.round_metrics.update({f"cluster_{i}_devices": float(len(m)) for i, (_, m) in enumerate(clusters)})
        for key in ("teacher_ce", "student_ce", "kl"):  # how close Phase II brought each student
            self.round_metrics[f"phase2_{key}"] = float(np.mean([g[key] for g in gaps]))
        return {self.prefix(self.moe_arch) + k: v for k, v in moe.items()}

    def cluster(self, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> list[tuple[str, list[int]]]:
        """Phase I: K clusters of devices, each of one architecture: (architecture, device ids)."""
        k = self.algo.experts
        by_arch: dict[str, list[int]] = {}
        for u in updates:
            by_arch.setdefault(tasks[u.client_id].arch, []).append(u.client_id)
        archs = sorted(by_arch)
        if self.algo.clustering == "none":
            return [(a, by_arch[a]) for a in (archs[i % len(archs)] for i in range(k))]
        if k < len(archs):
            raise EdgefmError(
                f"algorithm.experts: {k} < the {len(archs)} device architectures; a cluster holds one architecture"
            )
        share = allocate(k, [len(by_arch[a]) for a in archs])
        emb = reduce(torch.stack([u.payload[EMBEDDING] for u in updates]).double().numpy(), self.algo.embed_dim)
        row = {u.client_id: i for i, u in enumerate(updates)}
        out = []
        for a, n in zip(archs, share, strict=True):
            ids = by_arch[a]
            x = emb[[row[c] for c in ids]]
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # cosine geometry
            labels = kmeans(x, n, seed_for(self.cfg.seed, 31, len(out)))
            out += [(a, [c for c, lab in zip(ids, labels, strict=True) if lab == j]) for j in range(n)]
        return out

    def proxy(self, members: list[ClientUpdate], arch: str) -> Tensors:
        """A cluster's proxy teacher: its members' models averaged, weighted by their tokens."""
        p = self.prefix(arch)
        total = float(sum(u.num_examples for u in members))
        keys = [k for k in members[0].payload if k.startswith(p)]
        return {
            k[len(p) :]: (sum(u.payload[k].double() * u.num_examples for u in members) / total).float() for k in keys
        }

    def student(self) -> causal.CausalLM:
        """A fresh dense base model (the same seeded initialisation for every student)."""
        tok = self.workbench.tokenizer
        base = F.spec("qwen3", self.algo.moe_size, len(tok), 512)
        return causal.build(base, tok.pad_token_id or 0, tok.eos_token_id, seed_for(self.cfg.seed, 32)).to(
            self.workbench.device
        )

    def teacher(self, arch: str, state: Tensors) -> nn.Module:
        model = self.workbench.use(arch)
        self.workbench.set_state(state)
        model.eval()
        return model

    def distil(self, index: int, arch: str, proxy: Tensors, proxies: list[tuple[str, Tensors]]) -> Tensors:
        """Phase II: student ``index`` learns from its proxy teacher on the public text."""
        a, dev = self.algo, self.workbench.device
        student = self.student().train()
        teacher = self.teacher(arch, proxy)
        stages = min(a.stages, student.lm.config.num_hidden_layers, teacher.lm.config.num_hidden_layers)
        s_widths = [student.lm.config.hidden_size] * stages
        t_widths = [teacher.lm.config.hidden_size] * stages
        gen = torch.Generator().manual_seed(seed_for(self.cfg.seed, 33, index))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(self.cfg.seed, 34, index))  # the aligner's initialisation too
            extra: nn.Module | None = None
            if a.distill in ("vaa", "linear"):
                kind = ViewAlignedAttention if a.distill == "vaa" else LinearAlignment
                extra = kind(s_widths, t_widths, a.patches, a.vaa_width, a.vaa_heads, a.vaa_residual).to(dev)
            elif a.distill == "ofa":
                extra = nn.ModuleList(nn.Linear(w, student.lm.config.vocab_size) for w in s_widths).to(dev)
            groups = [{"params": list(student.parameters()), "lr": a.distill_lr}]
            if extra is not None:
                groups.append({"params": list(extra.parameters()), "lr": a.vaa_lr})
            opt = torch.optim.AdamW(groups, weight_decay=0.01)
            for _, batch in zip(
                range(a.distill_steps), cycle(self.public, self.cfg.train.batch_size, gen), strict=False
            ):
                batch = batch.to(dev)
                ids, mask = batch.input_ids, batch.attention_mask
                logits, feats = distill.forward_with_stages(student, ids, mask, stages)
                loss = distill.next_token_ce(logits, ids, mask)
                with torch.no_grad():
                    if a.distill == "fedmkt":
                        target = self.best_teacher(proxies, ids, mask)
                    else:
                        t_logits, t_feats = distill.forward_with_stages(teacher, ids, mask, stages)
                if a.distill in ("vaa", "linear"):
                    loss = (
                        loss
                        + a.alpha * distill_features(extra, feats, t_feats, mask)
                        + a.beta * distill.kl_loss(logits, t_logits, mask, a.temperature)
                    )
                elif a.distill == "fedmkt":
                    loss = loss + a.beta * distill.target_loss(logits, target, mask)
                else:  # ofa: the final logits and every stage's projection into the vocabulary
                    loss = loss + a.beta * distill.ofa_loss(logits, t_logits, ids, mask, temperature=a.temperature)
                    loss = loss + a.alpha * sum(
                        distill.ofa_loss(p(f), t_logits, ids, mask, temperature=a.temperature)
                        for p, f in zip(extra, feats, strict=True)
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return {k: v.detach().clone() for k, v in student.state_dict().items()}

    @torch.no_grad()
    def fidelity(self, arch: str, proxy: Tensors, student: Tensors, batches: int = 4) -> dict[str, float]:
        """On the first public blocks: the teacher's and the student's next-token cross-entropy and
        KL(teacher || student), per token (the gap distillation left)."""
        teacher = self.teacher(arch, proxy)
        model = self.student()
        model.load_state_dict(student)
        model.eval()
        sums = {"teacher_ce": 0.0, "student_ce": 0.0, "kl": 0.0}
        seen = 0
        for _, batch in zip(range(batches), self.public.batches(self.cfg.train.batch_size), strict=False):
            batch = batch.to(self.workbench.device)
            ids, mask = batch.input_ids, batch.attention_mask
            t, s_ = teacher(ids, mask), model(ids, mask)
            sums["teacher_ce"] += distill.next_token_ce(t, ids, mask).item()
            sums["student_ce"] += distill.next_token_ce(s_, ids, mask).item()
            sums["kl"] += distill.kl_loss(s_, t, mask).item()
            seen += 1
        return {k: v / max(seen, 1) for k, v in sums.items()}

    @torch.no_grad()
    def best_teacher(self, proxies: list[tuple[str, Tensors]], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """FedMKT: per block, the distribution of the proxy with the lowest cross-entropy, top-k kept."""
        best, best_ce = None, None
        for arch, state in proxies:
            logits = self.teacher(arch, state)(ids, mask)
            valid = distill.positions(mask).float()
            ce = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            ce = (ce * valid).sum(1) / valid.sum(1).clamp_min(1.0)
            target = distill.topk_target(logits, self.algo.fedmkt_top_k)
            if best is None:
                best, best_ce = target, ce
            else:
                better = ce < best_ce
                best[better], best_ce = target[better], torch.minimum(ce, best_ce)
        return best

    def fuse(self, students: list[Tensors]) -> Tensors:
        """Phase III: the MoE of the students' MLPs, router and shared layers tuned on public text."""
        a, wb = self.algo, self.workbench
        dense = []
        for state in students:
            m = self.student()
            m.load_state_dict(state)
            dense.append(m)
        tok = wb.tokenizer
        moe = MoE.assemble(
            dense,
            F.parse(self.moe_arch, len(tok), 512),
            tok.pad_token_id or 0,
            tok.eos_token_id,
            seed_for(self.cfg.seed, 35),
        )
        model = wb.use(self.moe_arch)
        model.load_state_dict(moe.state_dict())
        frozen = set(MoE.expert_parameters(model))
        trained = [p for n, p in model.named_parameters() if n not in frozen]
        for n, p in model.named_parameters():
            p.requires_grad = n not in frozen
        opt = torch.optim.AdamW(trained, lr=a.merge_lr, weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed_for(self.cfg.seed, 36))
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(self.cfg.seed, 37))
            for _, batch in zip(range(a.merge_steps), cycle(self.public, self.cfg.train.batch_size, gen), strict=False):
                batch = batch.to(wb.device)
                out = model.lm(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    output_router_logits=True,
                    use_cache=False,
                )
                loss = (
                    distill.next_token_ce(out.logits, batch.input_ids, batch.attention_mask) + a.balance * out.aux_loss
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        for p in model.parameters():
            p.requires_grad = True
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    # -- the model everyone ends with ------------------------------------------------------
    def model_for(
        self, workbench, state: Tensors, private: Tensors | None = None, client: int | None = None
    ) -> nn.Module:
        """The MoE once the round has run (before it: the client's initial model)."""
        if any(k.startswith(self.prefix(self.moe_arch)) for k in state):
            model = workbench.use(self.moe_arch)
            model.load_state_dict(self.part(state, self.moe_arch))
            return model
        return super().model_for(workbench, state, private, client)

    def evaluate_server(self, state: Tensors, workbench, test) -> dict[str, float]:
        return workbench.task.evaluate(self.model_for(workbench, state), test, workbench.device)

    def trainable_parameters(self, workbench) -> int:
        return sum(p.numel() for p in workbench.model.parameters())


def distill_features(
    align: nn.Module, student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    return feature_loss(align(student, mask), teacher, mask)


def cycle(data, batch_size: int, generator: torch.Generator):
    """Shuffled batches of ``data``, epoch after epoch."""
    while True:
        yield from data.batches(batch_size, generator=generator, shuffle=True)


def allocate(k: int, counts: list[int]) -> list[int]:
    """``k`` clusters shared among groups in proportion to ``counts`` (largest remainder), each
    group at least one and at most its size."""
    share = [1] * len(counts)
    exact = [k * c / sum(counts) for c in counts]
    while sum(share) < k:
        room = [i for i, c in enumerate(counts) if share[i] < c]
        i = max(room, key=lambda j: exact[j] - share[j])
        share[i] += 1
    return share


def reduce(x: np.ndarray, dims: int) -> np.ndarray:
    """PCA of the rows of ``x`` to at most ``dims`` dimensions (0: unchanged)."""
    if dims == 0 or dims >= min(x.shape):
        return x
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dims].T


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Seeded KMeans (scipy, k-means++ starts); no cluster is left empty."""
    if k >= len(x):
        return np.arange(len(x))
    rng = np.random.default_rng(seed)
    for _ in range(20):  # k-means++ rarely leaves a cluster empty; then start again
        _, labels = kmeans2(x, k, minit="++", seed=rng)
        if len(set(labels.tolist())) == k:
            return labels
    raise EdgefmError(f"deepfusion: KMeans left a cluster empty 20 times ({len(x)} devices, {k} clusters)")

"""FedJETS-style federated mixture of experts: the multi-round communication baseline of DeepFusion.

Dun, Hipolito Garcia, Zheng, et al., "FedJETs: Efficient Just-In-Time Personalization with
Federated Mixture of Experts" (arXiv 2306.08586), as DeepFusion (arXiv 2602.14301) uses it: one
global MoE (``model.name=qwen3_moe``, ``model.experts=K`` full-width experts); every round each
sampled device downloads the shared layers (embeddings, attention, norms, output layer, the
routers) and the ``active`` experts its data routes to most, trains them, and uploads them; the
server averages the shared layers over every device and each expert over the devices that
trained it. Bytes grow with rounds: that is what DeepFusion's single upload is measured against.

Choices of ours (FedJETS selects experts with a pretrained common expert and anchor clients,
which a model trained from scratch does not have):

- *The device trains a slice*: a MoE of ``active`` experts (the chosen ones, in order) whose
  router is the chosen rows of the global router; with top-``active`` routing renormalised over
  the chosen experts, the slice computes what the global MoE computes with its router masked to
  those experts.
- *Which experts*: at a device's first round, experts ``(d x active + j) mod K`` (spread evenly,
  seeded by nothing); after it, the ``active`` experts with the largest routing mass the device
  measured on its own text with the whole router (downloaded with the shared layers) after its
  last training, reported as K numbers.
- A device's memory is the slice's training memory (its task's ``memory_bytes``).
"""

from __future__ import annotations

import torch

from edgefm import EdgefmError
from edgefm.algorithms.configs import FedJetsConfig
from edgefm.algorithms.fedavg import FedAvg
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.aggregate import weighted_mean
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors
from edgefm.models import families as F
from edgefm.models.moe import EXPERTS

ROUTER = "mlp.gate.weight"
ROUTING = "routing"  # a device's routing mass over the K experts, uploaded with its update
FULL = "full_router::"  # the global router rows a device downloads to measure its routing


class FedJets(FedAvg):
    Config = FedJetsConfig

    def population(self, clients: list[ClientData], devices: list[DeviceProfile], workbench):
        out = super().population(clients, devices, workbench)
        if len(self.archs) != 1 or F.parse(self.archs[0], 1, 1).experts < 2:
            raise EdgefmError("model: fedjets trains one global MoE; expected model.name=qwen3_moe, model.experts >= 2")
        self.global_arch = self.archs[0]
        moe = F.parse(self.global_arch, 1, 1)
        self.experts = moe.experts
        self.active = min(self.algo.active, self.experts)
        self.slice_arch = F.moe_name(moe.size, self.active)
        self.routing: dict[int, torch.Tensor] = {}
        self.vocab = len(workbench.tokenizer)
        return out

    def chosen(self, client: int) -> list[int]:
        """The experts a device trains this round (sorted)."""
        if client in self.routing:
            return sorted(torch.topk(self.routing[client], self.active).indices.tolist())
        return sorted({(client * self.active + j) % self.experts for j in range(self.active)})

    # -- the slice a device trains ---------------------------------------------------------------
    def slice(self, state: Tensors, chosen: list[int]) -> Tensors:
        index = torch.tensor(chosen)
        out = {}
        for k, v in state.items():
            if EXPERTS in k or k.endswith(ROUTER):
                out[k] = v.index_select(0, index).clone()
            else:
                out[k] = v
        return out

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        tasks = {}
        for d in devices:
            if declined := self.unfit(d, rnd):
                tasks[d.device_id] = declined
                continue
            chosen = self.chosen(d.device_id)
            payload = self.slice(state, chosen)
            payload.update({FULL + k: v for k, v in state.items() if k.endswith(ROUTER)})
            memory = F.training_memory(
                F.parse(self.slice_arch, self.vocab, 512),
                self.cfg.train.batch_size,
                self.cfg.data.block_length,
            ).total
            tasks[d.device_id] = ClientTask(
                d.device_id, rnd, payload, {"experts": chosen}, arch=self.slice_arch, memory_bytes=memory
            )
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        shapes = {k: v for k, v in task.payload.items() if not k.startswith(FULL)}
        return {**shapes, ROUTING: torch.zeros(self.experts)}

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        model = workbench.use(self.slice_arch)
        workbench.set_state({k: v for k, v in task.payload.items() if not k.startswith(FULL)})
        fit = self.local_fit(task, workbench, data)
        routers = {k[len(FULL) :]: v for k, v in task.payload.items() if k.startswith(FULL)}
        payload = dict(workbench.get_state())
        payload[ROUTING] = routing_mass(model, routers, data, self.active, workbench.device)
        return ClientUpdate(
            task.client_id,
            task.round,
            payload,
            num_examples=len(data.train),
            flops=fit.flops,
            metrics={"train_loss": fit.loss, "steps": fit.steps},
        )

    # -- the server ----------------------------------------------------------------------------
    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        """Shared layers: the mean over every device; expert e (and its router row): the mean over
        the devices that trained it; untrained experts stay as they were."""
        out = dict(state)
        weights = [u.num_examples for u in updates]
        shared = [k for k in state if EXPERTS not in k and not k.endswith(ROUTER)]
        payloads = [{k: u.payload[k] for k in shared} for u in updates]
        merged = self.robust(payloads, weights, {k: state[k] for k in shared})
        out.update(merged if merged is not None else weighted_mean(payloads, weights))
        sliced = [k for k in state if k not in shared]
        trained = [0.0] * self.experts
        for e in range(self.experts):
            picks = [(u, tasks[u.client_id].config["experts"]) for u in updates]
            group = [(u, chosen.index(e)) for u, chosen in picks if e in chosen]  # (update, its slot for e)
            if not group:
                continue
            trained[e] = float(len(group))
            payloads = [{k: u.payload[k][j] for k in sliced} for u, j in group]
            counts = [u.num_examples for u, _ in group]
            mean = self.robust(payloads, counts, {k: state[k][e] for k in sliced})
            mean = mean if mean is not None else weighted_mean(payloads, counts)
            for k in sliced:
                out[k] = out[k].clone() if out[k] is state[k] else out[k]
                out[k][e] = mean[k]
        for u in updates:
            self.routing[u.client_id] = u.payload[ROUTING].clone()
        self.round_metrics.update({f"expert_{e}_devices": n for e, n in enumerate(trained)})
        return out

    def evaluate_server(self, state: Tensors, workbench, test) -> dict[str, float]:
        return workbench.task.evaluate(self.model_for(workbench, state), test, workbench.device)


@torch.no_grad()
def routing_mass(model, routers: dict[str, torch.Tensor], data: ClientData, active: int, device) -> torch.Tensor:
    """The share of the device's tokens, over layers, that the whole router sends to each expert
    (top-``active``), measured on the hidden states the trained slice computes."""
    routers = {k: v.to(device) for k, v in routers.items()}  # once: the payload arrives in host memory
    layers = model.lm.model.layers
    counts = None
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        layer.mlp.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, args[0]))
        for i, layer in enumerate(layers)
    ]
    try:
        model.eval()
        for batch in data.train.batches(32):
            batch = batch.to(device)
            model(batch.input_ids, batch.attention_mask)
            real = batch.attention_mask.reshape(-1) > 0
            for i in range(len(layers)):
                h = inputs[i].reshape(-1, inputs[i].shape[-1])[real]
                top = (h @ routers[f"lm.model.layers.{i}.{ROUTER}"].T).topk(active, dim=-1).indices
                c = torch.bincount(top.reshape(-1), minlength=routers[f"lm.model.layers.{i}.{ROUTER}"].shape[0])
                counts = c.double() if counts is None else counts + c.double()
    finally:
        for h in hooks:
            h.remove()
    experts = next(iter(routers.values())).shape[0]
    if counts is None or counts.sum() == 0:
        return torch.zeros(experts)
    return (counts / counts.sum()).float()

"""FedAvg: sample-weighted federated averaging of LoRA adapters + head (or of every weight).

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data"
(AISTATS 2017). With ``model.finetune=lora`` each client receives and returns only the LoRA
matrices and the classifier head (Hu et al. 2022); with ``full`` it exchanges every weight.
The other baselines override one step each.

Heterogeneous architectures (language models sized to each device): every device trains the
architecture its task assigns it (the largest that fits its memory); the server keeps one global
model per architecture (state keys ``ARCH::name``) and averages each over the clients that
trained it. A device that fits none declines, with the reason, every round. With one
architecture the state is the plain model state, as before.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

from edgefm import EdgefmError
from edgefm.algorithms.configs import FedAvgConfig
from edgefm.data.encode import Encoded
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.aggregate import weighted_mean
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Strategy, Tensors
from edgefm.models.workbench import FitResult

SEP = "::"


class FedAvg(Strategy):
    Config = FedAvgConfig

    # -- architectures ------------------------------------------------------------------
    def population(self, clients: list[ClientData], devices: list[DeviceProfile], workbench):
        """Every client on its own device, each with the architecture its task assigns it."""
        self.fits = workbench.task.assign(self.cfg, devices)
        use = Counter(f.arch for f in self.fits.values() if f.arch)
        if not use:
            raise EdgefmError(
                f"model: no device can train any allowed architecture; first: {next(iter(self.fits.values())).reason}"
            )
        self.archs = sorted(use, key=lambda a: (-use[a], a))  # the most used first: the default
        self.clients_per_arch = dict(use)
        return clients, devices

    def prefix(self, arch: str) -> str:
        return f"{arch}{SEP}" if len(self.archs) > 1 else ""

    def part(self, state: Tensors, arch: str) -> Tensors:
        """The tensors of ``arch``'s model in a (multi-architecture) state, keys as its model has them."""
        p = self.prefix(arch)
        return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}

    def arch_of(self, client: int | None) -> str:
        fit = self.fits.get(client) if client is not None else None
        return fit.arch if fit is not None and fit.arch else self.archs[0]

    # -- rounds ---------------------------------------------------------------------------
    def initial_state(self, workbench) -> Tensors:
        state = {}
        for arch in self.archs:
            workbench.use(arch)
            state.update({self.prefix(arch) + k: v for k, v in workbench.get_state().items()})
        return state

    def unfit(self, device: DeviceProfile, rnd: int) -> ClientTask | None:
        """The declined task of a device that fits no allowed architecture (None: it fits one)."""
        fit = self.fits[device.device_id]
        return None if fit.arch else ClientTask(device.device_id, rnd, {}, declined=fit.reason, memory_bytes=fit.memory)

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        tasks = {}
        for d in devices:
            fit = self.fits[d.device_id]
            if declined := self.unfit(d, rnd):
                tasks[d.device_id] = declined
                continue
            p = self.prefix(fit.arch)
            payload = {k: v for k, v in state.items() if k.startswith(p)} if p else state
            tasks[d.device_id] = ClientTask(d.device_id, rnd, payload, arch=fit.arch, memory_bytes=fit.memory)
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        return task.payload

    def local_fit(self, task: ClientTask, workbench, data: ClientData) -> FitResult:
        """Local training; variants (FedProx) override this one step."""
        seed = self.client_seed(task.round, task.client_id)
        return workbench.fit(data.train, self.cfg.train, self.client_generator(task.round, task.client_id), seed)

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        arch = task.arch or self.archs[0]
        workbench.use(arch)
        p = self.prefix(arch)
        workbench.set_state({k[len(p) :]: v for k, v in task.payload.items()})
        fit = self.local_fit(task, workbench, data)
        return ClientUpdate(
            task.client_id,
            task.round,
            {p + k: v for k, v in workbench.get_state().items()},
            num_examples=len(data.train),
            flops=fit.flops,
            metrics={"train_loss": fit.loss, "steps": fit.steps},
        )

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        """Each architecture's model: the sample-weighted mean of the clients that trained it."""
        out = dict(state)
        for arch in self.archs:
            group = [u for u in updates if (tasks[u.client_id].arch or self.archs[0]) == arch]
            if group:
                payloads, weights = [u.payload for u in group], [u.num_examples for u in group]
                merged = self.robust(payloads, weights, {k: state[k] for k in payloads[0]})
                out.update(merged if merged is not None else weighted_mean(payloads, weights))
        return out

    # -- the models a run ends with -------------------------------------------------------
    def model_for(
        self, workbench, state: Tensors, private: Tensors | None = None, client: int | None = None
    ) -> nn.Module:
        """The global model of ``client``'s architecture (default: the most used one)."""
        arch = self.arch_of(client)
        workbench.use(arch)
        self.load_state(workbench, self.part(state, arch))
        return workbench.model

    def evaluate_server(self, state: Tensors, workbench, test: Encoded) -> dict[str, float]:
        """One architecture: its global model on the test set. Several: each one's figures
        (``metric@arch``), and as the run's figures their mean weighted by the clients that
        train each architecture (the mean over clients of the model each one ends with)."""
        if len(self.archs) == 1:
            return super().evaluate_server(state, workbench, test)
        per_arch = {}
        for arch in self.archs:
            workbench.use(arch)
            self.load_state(workbench, self.part(state, arch))
            per_arch[arch] = workbench.task.evaluate(workbench.model, test, workbench.device)
        total = sum(self.clients_per_arch.values())
        out = {}
        for key in per_arch[self.archs[0]]:
            values = [(per_arch[a][key], self.clients_per_arch[a]) for a in self.archs if key in per_arch[a]]
            out[key] = sum(v * n for v, n in values) / sum(n for _, n in values)
        for arch, metrics in per_arch.items():
            out.update({f"{k}@{arch}": v for k, v in metrics.items() if "/" not in k})
        out["architectures"] = float(len(self.archs))
        assert total > 0
        return out


def seeded_on_device(tasks: dict[int, ClientTask]) -> dict[int, ClientTask]:
    """The tasks with their payload moved into the config: the device builds its initial model
    from the run's seed, so nothing is downloaded (local-only, DeepFusion)."""
    return {
        cid: t
        if t.declined
        else ClientTask(cid, t.round, {}, {"init": t.payload}, arch=t.arch, memory_bytes=t.memory_bytes)
        for cid, t in tasks.items()
    }

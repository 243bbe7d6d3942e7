"""The one round loop, and the in-process transport.

Sample clients, ``configure``, send the tasks no device declined through the transport (in-process:
every ``client_update`` on the shared workbench, one at a time, since a single process may use
every core; Flower: one message per node), ``aggregate``, evaluate (the server's metrics from
the global state, each client's from its own model, combined once here for both engines), write
the ledger and a checkpoint. The engine is silent: it reports through :class:`Callbacks`, which
the CLI renders as progress bars.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgefm import EdgefmError
from edgefm.edge.costs import update_cost
from edgefm.fl import attacks, checkpoint, heap
from edgefm.fl.aggregate import nbytes
from edgefm.fl.events import Callbacks, sample_clients, seed_for
from edgefm.fl.ledger import Ledger
from edgefm.fl.private import PrivateStore
from edgefm.fl.scenario import Scenario
from edgefm.fl.strategy import ClientEval, ClientTask, ClientUpdate, Tensors, combine_metrics

log = logging.getLogger("edgefm.fl")


@dataclass
class Reply:
    """One client's answer to a task, as a transport delivers it."""

    client_id: int
    update: ClientUpdate | None  # None: the client dropped (crashed, timed out)
    error: str = ""
    wire_bytes_up: int | None = None  # serialised message sizes, where the transport knows them
    wire_bytes_down: int | None = None


def _host(tensors: Tensors) -> Tensors:
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


class InProcess:
    """The in-process transport: clients take turns on the shared workbench, in this process.
    Their private state (local experts, personalized heads) is held here, per client: in memory
    up to ``private_memory_mb``, on disk beyond it (``fl/private.py``)."""

    def __init__(self, scenario: Scenario):
        self.sc = scenario
        self.private = PrivateStore(scenario.cfg.private_memory_mb * 2**20)

    def train(self, rnd: int, tasks: dict[int, ClientTask]) -> list[Reply]:
        sc, replies = self.sc, []
        for cid, task in tasks.items():
            try:
                update = sc.strategy.client_update(task, sc.workbench, sc.clients[cid], self.private.get(cid))
            except Exception as exc:  # a failing device must not stop the round
                replies.append(Reply(cid, None, f"{type(exc).__name__}: {exc}"))
                continue
            # what crosses the network is host memory, as on Flower (which serialises it): the
            # server validates and aggregates on the CPU whatever device the client trained on
            update.payload = _host(update.payload)
            if update.private is not None:  # kept by the store alone (it may go to disk), not the reply
                update.private = _host(update.private)
                self.private[cid], update.private = update.private, None
            replies.append(Reply(cid, update))
            self._release()
        return replies

    def _release(self) -> None:
        if self.sc.cfg.trim_memory:
            heap.trim()

    def evaluate_clients(self, rnd: int, state: Tensors) -> list[ClientEval]:
        sc, out = self.sc, []
        for c in sc.clients:
            ev = sc.strategy.evaluate_client(state, sc.workbench, c, self.private.get(c.client_id), sc.test)
            ev.client = c.client_id
            out.append(ev)
            self._release()
        return out

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"private": self.private}

    def restore(self, saved: checkpoint.Checkpoint) -> None:
        if saved.private_on_nodes:
            raise EdgefmError(
                f"clients {saved.private_on_nodes[:5]} kept private state on the Flower nodes of the interrupted "
                "run; it is gone, so this run cannot be resumed"
            )
        self.private = PrivateStore(self.sc.cfg.private_memory_mb * 2**20, saved.private)


class Engine:
    """The one round loop; where clients run is the transport's business (in-process or Flower)."""

    def __init__(self, scenario: Scenario, callbacks: Callbacks | None = None, transport=None):
        self.sc = scenario
        self.cb = callbacks or Callbacks()
        self.transport = transport if transport is not None else InProcess(scenario)
        attack = scenario.cfg.attack
        self.attackers = attacks.malicious(scenario.cfg.seed, len(scenario.clients), attack.fraction)
        self.attackers = self.attackers if attack.kind != "none" else set()

    def run(self, run_dir: Path | None = None, resume: bool = False) -> dict[str, Any]:
        sc, cfg = self.sc, self.sc.cfg
        state = sc.strategy.initial_state(sc.workbench)  # also prepares the workbench, so on a resume too
        ledger, start = Ledger(), 1
        if resume:
            if run_dir is None:
                raise EdgefmError("resume needs a run folder")
            saved = checkpoint.load(run_dir)
            self.transport.restore(saved)
            state, ledger, start = saved.state, Ledger.from_state(saved.ledger), saved.round + 1
            checkpoint.rewrite_files(run_dir, saved.ledger)
        self.cb.on_run_start(cfg.rounds, start)
        for rnd in range(start, cfg.rounds + 1):
            state = self._round(rnd, state, ledger, run_dir)
            if rnd < cfg.rounds and self.cb.should_stop(ledger.rounds[-1]):
                log.info("round %d: stopped by the caller's rule", rnd)
                break
        return {"state": state, "ledger": ledger, **self.transport.checkpoint_fields()}

    def _round(self, rnd: int, state: Tensors, ledger: Ledger, run_dir: Path | None) -> Tensors:
        sc, cfg = self.sc, self.sc.cfg
        strategy = sc.strategy
        t0 = time.perf_counter()
        sampled = sample_clients(cfg.seed, rnd, len(sc.clients), cfg.fraction)
        self.cb.on_round_start(rnd, sampled)
        tasks = strategy.configure(rnd, state, [sc.devices[i] for i in sampled])
        # a device that declines a task (e.g. no subnetwork fits its budget) is not contacted
        declined = {cid: t.declined for cid, t in tasks.items() if t.declined}
        declined.update(self._dropouts(rnd, [cid for cid in tasks if cid not in declined]))
        sent = {cid: t for cid, t in tasks.items() if cid not in declined}
        replies = {r.client_id: r for r in self.transport.train(rnd, sent)} if sent else {}
        replies.update({cid: Reply(cid, None, why) for cid, why in declined.items()})
        for cid in tasks:
            if cid not in replies:
                replies[cid] = Reply(cid, None, "no reply (timed out)")
        late = self._stragglers(replies, tasks)
        dropped = {cid: r.error for cid, r in replies.items() if r.update is None}
        for cid, why in dropped.items():
            log.warning("round %d: client %d dropped: %s", rnd, cid, why)
        if tasks and len(dropped) == len(tasks):
            if set(declined) == set(tasks):  # e.g. every device sat out under independent participation
                log.warning("round %d: every device declined or sat out; the model is unchanged", rnd)
            else:
                first = next(iter(dropped.values()))
                raise EdgefmError(f"round {rnd}: every client failed; first error: {first}")
        updates = [replies[cid].update for cid in tasks if cid not in dropped]
        attack = cfg.attack
        for u in updates:  # simulated Byzantine devices: what they send instead of their honest update
            if u.client_id in self.attackers:
                reference = strategy.expected_update(state, tasks[u.client_id])
                seed = seed_for(cfg.seed, 5000 + rnd, u.client_id)
                u.payload = attacks.corrupt(u.payload, reference, attack.kind, attack.strength, seed)
        strategy.round_metrics = {}
        result = strategy.aggregate(rnd, state, updates, tasks)
        for cid, task in tasks.items():
            device, reply = sc.devices[cid], replies[cid]
            wire = {"wire_bytes_up": reply.wire_bytes_up, "wire_bytes_down": reply.wire_bytes_down}
            wire = {k: v for k, v in wire.items() if v is not None}
            if task.arch:  # which model the device trains, and the memory it was estimated to need
                wire["arch"] = task.arch
            if task.memory_bytes:
                wire["memory_mb"] = task.memory_bytes / 2**20
            if cid in self.attackers:
                wire["attacker"] = 1
            if cid in dropped:
                row = ledger.record_client(rnd, device, task.payload, None, 0.0, 0, "dropped", dropped[cid], extra=wire)
            else:
                u = reply.update
                status = "rejected" if cid in result.rejected else "ok"
                down, up = ({}, {}) if u.colocated else (task.payload, u.payload)
                row = ledger.record_client(
                    rnd,
                    device,
                    down,
                    up,
                    u.flops,
                    u.num_examples,
                    status,
                    result.rejected.get(cid, ""),
                    u.extra_bytes_up,
                    u.metrics,
                    extra=wire,
                    extra_bytes_down=u.extra_bytes_down,
                    server_flops=u.server_flops,
                    server_seconds=u.server_seconds,
                )
            self.cb.on_client_end(rnd, cid, row)
        state = result.state
        metrics: dict[str, float] = {}
        if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
            server = strategy.evaluate_server(state, sc.workbench, sc.test)
            evals = self.transport.evaluate_clients(rnd, state)
            metrics = combine_metrics(server, evals)
            if run_dir is not None:  # each client's own figures, for the report's per-client panel
                with open(Path(run_dir) / "evals.jsonl", "a") as fh:
                    for ev in evals:
                        row = {
                            "round": rnd,
                            "client": ev.client,
                            **ev.local,
                            **{f"global_{k}": v for k, v in ev.global_.items()},
                        }
                        fh.write(json.dumps(checkpoint.jsonable(row)) + "\n")
        metrics.update(strategy.round_metrics)  # e.g. the server's own work in the round
        # a round that cut stragglers lasted until its deadline
        summary = ledger.close_round(rnd, metrics, time.perf_counter() - t0, cfg.faults.deadline if late else 0.0)
        if run_dir is not None:  # the clients' lines first: a round's metrics line says they are all there
            with open(Path(run_dir) / "clients.jsonl", "a") as fh:
                for row in ledger.clients:
                    if row["round"] == rnd:
                        fh.write(json.dumps(checkpoint.jsonable(row)) + "\n")
            with open(Path(run_dir) / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(checkpoint.jsonable(summary)) + "\n")
            fields = self.transport.checkpoint_fields()
            checkpoint.save(run_dir, checkpoint.Checkpoint(rnd, state, ledger.state_dict(), **fields))
        self.cb.on_round_end(summary)
        return state

    def _dropouts(self, rnd: int, cids: list[int]) -> dict[int, str]:
        """Devices that drop out of round ``rnd`` before training (``faults.dropout``), and why."""
        rate = self.sc.cfg.faults.dropout
        if not rate:
            return {}
        out = {}
        for cid in cids:  # one seeded draw per device and round: the same on both engines
            if np.random.default_rng(seed_for(self.sc.cfg.seed, 7000 + rnd, cid)).random() < rate:
                out[cid] = f"dropped out of round {rnd} (faults.dropout={rate:g})"
        return out

    def _stragglers(self, replies: dict[int, Reply], tasks: dict[int, ClientTask]) -> set[int]:
        """Discard the updates of devices whose simulated round time passes ``faults.deadline``."""
        deadline, late = self.sc.cfg.faults.deadline, set()
        if deadline is None:
            return late
        for cid, reply in replies.items():
            u = reply.update
            if u is None:
                continue
            down, up = ({}, {}) if u.colocated else (tasks[cid].payload, u.payload)
            cost = update_cost(
                u.flops, nbytes(up) + u.extra_bytes_up, nbytes(down) + u.extra_bytes_down, self.sc.devices[cid]
            )
            seconds = cost["total"].seconds + u.server_seconds
            if seconds > deadline:
                why = (
                    f"straggler: {seconds:.3g} simulated s, past the round's {deadline:g} s deadline (update discarded)"
                )
                replies[cid] = Reply(cid, None, why, reply.wire_bytes_up, reply.wire_bytes_down)
                late.add(cid)
        return late

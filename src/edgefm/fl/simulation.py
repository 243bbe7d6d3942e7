"""The in-process engine: the one round loop.

Sample clients, ``configure``, run every ``client_update`` on the shared workbench (one at a
time: a single process may use every core), ``aggregate``, ``evaluate``, write the ledger and
a checkpoint. The engine is silent: it reports through :class:`Callbacks`, which the CLI
renders as progress bars.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefm import EdgefmError
from edgefm.fl import checkpoint
from edgefm.fl.ledger import Ledger
from edgefm.fl.scenario import Scenario
from edgefm.fl.strategy import ClientTask, ClientUpdate, Tensors, seed_for

log = logging.getLogger("edgefm.fl")


class Callbacks:
    """Progress events; every method is a no-op here."""

    def on_run_start(self, rounds: int, start_round: int) -> None: ...
    def on_round_start(self, rnd: int, clients: list[int]) -> None: ...
    def on_client_end(self, rnd: int, client_id: int, row: dict[str, Any]) -> None: ...
    def on_round_end(self, summary: dict[str, Any]) -> None: ...


def sample_clients(seed: int, rnd: int, n: int, fraction: float) -> list[int]:
    """``max(1, round(fraction * n))`` clients, without replacement, seeded by (seed, round)."""
    k = max(1, int(round(fraction * n)))
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng(seed_for(seed, 2000 + rnd))
    return sorted(rng.choice(n, size=k, replace=False).tolist())


@dataclass
class Reply:
    """One client's answer to a task, as a transport delivers it."""

    client_id: int
    update: ClientUpdate | None  # None: the client dropped (crashed, timed out)
    error: str = ""
    wire_bytes_up: int | None = None  # serialised message sizes, where the transport knows them
    wire_bytes_down: int | None = None


class InProcess:
    """The in-process transport: clients take turns on the shared workbench, in this process.
    Their private state (local experts, personalized heads) is held here, per client."""

    def __init__(self, scenario: Scenario):
        self.sc = scenario
        self.private: dict[int, Tensors] = {}

    def train(self, rnd: int, tasks: dict[int, ClientTask]) -> list[Reply]:
        sc, replies = self.sc, []
        for cid, task in tasks.items():
            try:
                update = sc.strategy.client_update(task, sc.workbench, sc.clients[cid], self.private.get(cid))
            except Exception as exc:  # a failing device must not stop the round
                replies.append(Reply(cid, None, f"{type(exc).__name__}: {exc}"))
                continue
            if update.private is not None:
                self.private[cid] = update.private
            replies.append(Reply(cid, update))
        return replies

    def evaluate(self, rnd: int, state: Tensors) -> dict[str, float]:
        sc = self.sc
        return sc.strategy.evaluate(state, sc.workbench, sc.test, sc.clients, self.private)

    def state_dict(self) -> dict[str, Any]:
        return {"private": self.private}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.private = saved.get("private", {})


class Engine:
    """The one round loop; where clients run is the transport's business (in-process or Flower)."""

    def __init__(self, scenario: Scenario, callbacks: Callbacks | None = None, transport=None):
        self.sc = scenario
        self.cb = callbacks or Callbacks()
        self.transport = transport if transport is not None else InProcess(scenario)

    def run(self, run_dir: Path | None = None, resume: bool = False) -> dict[str, Any]:
        sc, cfg = self.sc, self.sc.cfg
        if resume:
            if run_dir is None:
                raise EdgefmError("resume needs a run folder")
            saved = checkpoint.load(run_dir)
            state = saved["state"]
            self.transport.load_state_dict(saved)
            ledger, start = Ledger.from_state(saved["ledger"]), saved["round"] + 1
            self._rewrite_metrics(run_dir, ledger)
        else:
            state, ledger, start = sc.strategy.initial_state(sc.workbench), Ledger(), 1
        self.cb.on_run_start(cfg.rounds, start)
        for rnd in range(start, cfg.rounds + 1):
            state = self._round(rnd, state, ledger, run_dir)
        return {"state": state, "private": getattr(self.transport, "private", {}), "ledger": ledger}

    def _round(self, rnd: int, state: Tensors, ledger: Ledger, run_dir: Path | None) -> Tensors:
        sc, cfg = self.sc, self.sc.cfg
        strategy = sc.strategy
        t0 = time.perf_counter()
        sampled = sample_clients(cfg.seed, rnd, len(sc.clients), 1.0 if strategy.pooled else cfg.fraction)
        self.cb.on_round_start(rnd, sampled)
        tasks = strategy.configure(rnd, state, [sc.devices[i] for i in sampled])
        # a device that declines a task (e.g. no subnetwork fits its budget) is not contacted
        declined = {cid: t.config["declined"] for cid, t in tasks.items() if t.config.get("declined")}
        sent = {cid: t for cid, t in tasks.items() if cid not in declined}
        replies = {r.client_id: r for r in self.transport.train(rnd, sent)} if sent else {}
        replies.update({cid: Reply(cid, None, why) for cid, why in declined.items()})
        for cid in tasks:
            if cid not in replies:
                replies[cid] = Reply(cid, None, "no reply (timed out)")
        dropped = {cid: r.error for cid, r in replies.items() if r.update is None}
        for cid, why in dropped.items():
            log.warning("round %d: client %d dropped: %s", rnd, cid, why)
        if tasks and len(dropped) == len(tasks):
            first = next(iter(dropped.values()))
            raise EdgefmError(f"round {rnd}: every client failed; first error: {first}")
        updates = [replies[cid].update for cid in tasks if cid not in dropped]
        result = strategy.aggregate(rnd, state, updates, tasks)
        for cid, task in tasks.items():
            device, reply = sc.devices[cid], replies[cid]
            wire = {"wire_bytes_up": reply.wire_bytes_up, "wire_bytes_down": reply.wire_bytes_down}
            wire = {k: v for k, v in wire.items() if v is not None}
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
                )
            self.cb.on_client_end(rnd, cid, row)
        state = result.state
        metrics: dict[str, float] = {}
        if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
            metrics = self.transport.evaluate(rnd, state)
        summary = ledger.close_round(rnd, metrics, time.perf_counter() - t0)
        if run_dir is not None:
            with open(Path(run_dir) / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(summary) + "\n")
            with open(Path(run_dir) / "clients.jsonl", "a") as fh:
                for row in ledger.clients:
                    if row["round"] == rnd:
                        fh.write(json.dumps(row) + "\n")
            checkpoint.save(
                run_dir, {"round": rnd, "state": state, "ledger": ledger.state_dict(), **self.transport.state_dict()}
            )
        self.cb.on_round_end(summary)
        return state

    @staticmethod
    def _rewrite_metrics(run_dir: Path, ledger: Ledger) -> None:
        # Rounds after the checkpoint (a crash mid-round) are dropped, then re-run.
        with open(Path(run_dir) / "metrics.jsonl", "w") as fh:
            for summary in ledger.rounds:
                fh.write(json.dumps(summary) + "\n")
        with open(Path(run_dir) / "clients.jsonl", "w") as fh:
            for row in ledger.clients:
                fh.write(json.dumps(row) + "\n")

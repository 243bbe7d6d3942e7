"""The same Strategy, unchanged, on Flower: a ServerApp and a ClientApp on Flower's Message API.

Flower (Beutel et al., "Flower: A Friendly Federated Learning Research Framework", 2020),
``flwr`` 1.41: the ServerApp's main receives a ``Grid`` and sends ``Message``s whose content is
a ``RecordDict`` (``ArrayRecord`` for tensors, ``ConfigRecord``/``MetricRecord`` for scalars);
a ClientApp answers ``query``, ``train`` and ``evaluate`` messages with a persistent ``Context``.

How edgefm maps onto it. The ServerApp runs edgefm's own round loop (``Engine``) with a
:class:`FlowerTransport`: the Strategy's ``configure`` and ``aggregate`` run on the server, its
``client_update`` on the node that holds the partition (``node_config["partition-id"]``), so a
method written once runs in both engines. Payloads travel as ``ArrayRecord``s; the ledger keeps
the payload tensors' bytes (as in-process, so the two engines agree) and adds the serialised
record sizes as ``wire_bytes_up/down``. A client's private state (local experts, personalized
heads) lives in the node's ``context.state``, never on the server. Clients that crash or do not
answer within ``flower.round_timeout`` are recorded as dropped and the round aggregates the rest.
Each node evaluates its own model (``Strategy.evaluate_client``), the server the global state
(``evaluate_server``), and the engine combines the two as it does in-process. Clients that keep
private state say so in their reply; the checkpoint records them, since their state is on the
nodes and not in the checkpoint. With CUDA present (and ``device`` not ``cpu``) every simulated
node gets an equal share of the GPUs.

Nodes learn the run's resolved config from every message (a few KB of YAML, in the wire bytes),
and the server maps partitions to nodes with one ``query`` round, asking again whenever a node it
has not seen joins (a restarted SuperNode comes back under a new node id).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from edgefm import EdgefmError, config
from edgefm.fl import checkpoint
from edgefm.fl.events import Callbacks
from edgefm.fl.flower_sim import (  # the names edgefm's launcher and these apps share
    CONFIG_KEY,
    ERROR,
    LAUNCHED_KEY,
    RESUME_KEY,
    RUN_DIR_KEY,
    SET_KEY,
    TRANSPORT_KEY,
    VERDICT,
)
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine, Reply
from edgefm.fl.strategy import ClientEval, ClientTask, ClientUpdate, Tensors

log = logging.getLogger("edgefm.fl")


BF16 = "bf16:"  # numpy has no bfloat16: such tensors travel as float32 (exact both ways) under this prefix


def _to_record(tensors: Tensors) -> ArrayRecord:
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        out[BF16 + k if v.dtype == torch.bfloat16 else k] = v.float() if v.dtype == torch.bfloat16 else v
    return ArrayRecord.from_torch_state_dict(out)


def _from_record(record: ArrayRecord) -> Tensors:
    out = {}
    for k, v in record.to_torch_state_dict().items():
        out[k[len(BF16) :] if k.startswith(BF16) else k] = v.bfloat16() if k.startswith(BF16) else v
    return out


def _split_config(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensors]]:
    """Scalars go in a ConfigRecord; tensor-valued entries (e.g. an initial state) as ArrayRecords."""
    scalars, arrays = {}, {}
    for k, v in cfg.items():
        if isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values()):
            arrays[k] = v
        elif isinstance(v, bool | int | float | str):
            scalars[k] = v
        elif isinstance(v, list) and v and all(type(x) is type(v[0]) and isinstance(x, int | float | str) for x in v):
            scalars[k] = v  # e.g. RaFFM's per-layer subnetwork widths
        else:
            raise EdgefmError(f"task config {k!r}: {type(v).__name__} cannot travel in a Flower message")
    return scalars, arrays


# ----------------------------------------------------------------------------- client side

_SCENARIOS: dict[str, Any] = {}  # per node process: the scenario built once per config


def _scenario(cfg_yaml: str, threads: int):
    key = hashlib.sha256(cfg_yaml.encode()).hexdigest()
    if key not in _SCENARIOS:
        torch.set_num_threads(threads)  # parallel clients get one thread each (2 x 2 threads run at 40%)
        _SCENARIOS.clear()
        _SCENARIOS[key] = build(config.loads(cfg_yaml))
    return _SCENARIOS[key]


def _partition(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise EdgefmError("node_config has no partition-id; start the SuperNode with --node-config 'partition-id=K'")
    return int(context.node_config["partition-id"])


client_app = ClientApp()


@client_app.query()
def _query(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"node": ConfigRecord({"partition-id": _partition(context)})}), reply_to=msg)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    meta = msg.content["task"]
    sc = _scenario(str(meta[CONFIG_KEY]), int(meta.get("threads", 1)))
    cid, rnd = int(meta["client"]), int(meta["round"])
    if cid != _partition(context):
        raise EdgefmError(f"task for client {cid} reached partition {_partition(context)}")
    extra = {k[len("cfg.") :]: _from_record(v) for k, v in msg.content.array_records.items() if k.startswith("cfg.")}
    fields = (CONFIG_KEY, "client", "round", "threads", "arch", "step")
    scalars = {k: v for k, v in meta.items() if k not in fields}
    payload = _from_record(msg.content["payload"]) if "payload" in msg.content.array_records else {}
    task = ClientTask(cid, rnd, payload, {**scalars, **extra}, arch=str(meta.get("arch", "")))
    private = _from_record(context.state["private"]) if "private" in context.state.array_records else None
    if sc.strategy.interactive:  # one message of an exchange (split learning: one split step)
        update = _exchange_step(msg, context, sc, task, private)
        if not isinstance(update, ClientUpdate):
            return Message(RecordDict({"up": _to_record(update)}), reply_to=msg)
    else:
        update = sc.strategy.client_update(task, sc.workbench, sc.clients[cid], private)
    if update.private is not None:
        context.state["private"] = _to_record(update.private)
    numbers = {
        "num_examples": update.num_examples,
        "flops": float(update.flops),
        "extra_bytes_up": update.extra_bytes_up,
        "colocated": int(update.colocated),
        "has_private": int(update.private is not None),
    }
    metrics = {f"m.{k}": float(v) for k, v in update.metrics.items()}
    content = RecordDict({"payload": _to_record(update.payload), "update": MetricRecord({**numbers, **metrics})})
    return Message(content, reply_to=msg)


def _exchange_step(msg: Message, context: Context, sc, task: ClientTask, private) -> ClientUpdate | Tensors:
    """The node's answer to one message of an exchange: what goes up, or the finished update.
    Between messages the node keeps only its context's ``carry`` record (a node may answer each
    message in a fresh process); the first message of a task starts afresh."""
    first = int(msg.content["task"]["step"]) == 0
    carry = None if first or "carry" not in context.state.array_records else _from_record(context.state["carry"])
    if not first and carry is None:
        raise EdgefmError(f"client {task.client_id}: a step of round {task.round} arrived but no exchange is under way")
    down = _from_record(msg.content["down"]) if "down" in msg.content.array_records else None
    step, carry = sc.strategy.client_step(task, sc.workbench, sc.clients[task.client_id], private, carry, down)
    if step.update is not None:
        if "carry" in context.state.array_records:
            del context.state["carry"]
        return step.update
    context.state["carry"] = _to_record(carry)
    return step.up


@client_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    meta = msg.content["task"]
    sc = _scenario(str(meta[CONFIG_KEY]), int(meta.get("threads", 1)))
    cid = _partition(context)
    state = _from_record(msg.content["state"])
    own = _from_record(context.state["private"]) if "private" in context.state.array_records else None
    result = sc.strategy.evaluate_client(state, sc.workbench, sc.clients[cid], own, sc.test)
    out = {**{f"local.{k}": float(v) for k, v in result.local.items()}}
    out.update({f"global.{k}": float(v) for k, v in result.global_.items()})
    return Message(RecordDict({"metrics": MetricRecord(out)}), reply_to=msg)


# ----------------------------------------------------------------------------- server side


class FlowerTransport:
    """Runs the engine's tasks on Flower nodes through a Grid."""

    def __init__(self, grid: Grid, scenario, cfg_yaml: str):
        self.grid, self.sc, self.cfg_yaml = grid, scenario, cfg_yaml
        self.timeout = scenario.cfg.flower.round_timeout
        self.threads = scenario.cfg.flower.client_cpus
        self.private_on_nodes: set[int] = set()
        self.asked: set[int] = set()  # nodes whose partition we asked (restarted nodes are new ones)
        self.node_of = self._discover()

    def _discover(self) -> dict[int, int]:
        """partition id -> node id, from one query round; waits for enough nodes to join."""
        want = len(self.sc.clients)
        deadline = time.monotonic() + self.timeout
        nodes = list(self.grid.get_node_ids())
        if len(nodes) < want:
            log.warning("waiting up to %.0f s for %d Flower nodes (%d joined)", self.timeout, want, len(nodes))
        while len(nodes) < want and time.monotonic() < deadline:
            time.sleep(1.0)
            nodes = list(self.grid.get_node_ids())
        if len(nodes) < want:
            raise EdgefmError(f"only {len(nodes)} Flower nodes joined; expected one per client ({want})")
        mapping, errors = self._ask(nodes)
        missing = sorted(set(range(want)) - set(mapping))
        if missing:
            why = f" (a node answered: {errors[0]})" if errors else f" (no answer within {self.timeout:.0f} s)"
            raise EdgefmError(
                f"no Flower node holds partition(s) {missing[:5]}{why}; start one SuperNode per partition"
            )
        return mapping

    def _ask(self, nodes: list[int]) -> tuple[dict[int, int], list[str]]:
        """Which partition each of ``nodes`` holds (one ``query`` round), and the errors met."""
        self.asked |= set(nodes)
        msgs = [
            Message(
                RecordDict({"task": ConfigRecord({CONFIG_KEY: self.cfg_yaml})}),
                dst_node_id=n,
                message_type=MessageType.QUERY,
            )
            for n in nodes
        ]
        mapping, errors = {}, []
        for reply in self.grid.send_and_receive(msgs, timeout=self.timeout):
            if reply.has_error():
                errors.append(reply.error.reason)
                continue
            mapping[int(reply.content["node"]["partition-id"])] = reply.metadata.src_node_id
        return mapping, errors

    def _refresh(self) -> None:
        """Follow restarted SuperNodes: a node that comes back gets a new node id from the
        SuperLink, so nodes not seen before are asked their partition before each round's
        messages, and a partition found on a new node is sent there from now on. A node that
        is gone simply does not answer (its client is dropped for the round, as any failure)."""
        new = [n for n in self.grid.get_node_ids() if n not in self.asked]
        if not new:
            return
        found, _ = self._ask(new)
        for part, node in sorted(found.items()):
            if 0 <= part < len(self.sc.clients) and self.node_of.get(part) != node:
                log.warning("partition %d moved from Flower node %s to node %d", part, self.node_of.get(part), node)
                self.node_of[part] = node

    def _message(self, cid: int, rnd: int, content: RecordDict, kind: str) -> Message:
        """The message to client ``cid``'s node (tests override this seam to inject faults)."""
        return Message(content, dst_node_id=self.node_of[cid], message_type=kind)

    def _task_content(self, rnd: int, cid: int, task: ClientTask, step: int = 0, down: Tensors | None = None):
        """A training message: the task (its payload with the first message only) and, in an
        exchange, the step it answers and the server's answer ``down``."""
        scalars, arrays = _split_config(task.config)
        meta = {CONFIG_KEY: self.cfg_yaml, "client": cid, "round": rnd, "threads": self.threads, "arch": task.arch}
        content = RecordDict({"task": ConfigRecord({**meta, "step": step, **scalars})})
        if task.payload and step == 0:
            content["payload"] = _to_record(task.payload)
        if step == 0:
            for k, v in arrays.items():
                content[f"cfg.{k}"] = _to_record(v)
        if down is not None:
            content["down"] = _to_record(down)
        return content

    def train(self, rnd: int, tasks: dict[int, ClientTask]) -> list[Reply]:
        self._refresh()
        strategy = self.sc.strategy
        if not strategy.interactive:
            return self._train_group(rnd, tasks)
        # an exchange per client: V1 split learning's devices side by side, V2's one at a time
        groups = [[cid] for cid in tasks] if strategy.serial() else [list(tasks)]
        return [r for group in groups for r in self._train_group(rnd, {cid: tasks[cid] for cid in group})]

    def _train_group(self, rnd: int, tasks: dict[int, ClientTask]) -> list[Reply]:
        """Send every task; relay an interactive method's messages (``serve`` answers each
        ``up``) until each client finished or dropped."""
        strategy, by_node = self.sc.strategy, {v: k for k, v in self.node_of.items()}
        pending = {cid: self._task_content(rnd, cid, task) for cid, task in tasks.items()}
        down = {cid: 0 for cid in tasks}
        up = {cid: 0 for cid in tasks}
        steps = {cid: 0 for cid in tasks}
        replies = []
        while pending:
            msgs, order = [], list(pending)
            for cid, content in pending.items():
                down[cid] += sum(r.count_bytes() for r in content.array_records.values())
                msgs.append(self._message(cid, rnd, content, MessageType.TRAIN))
            pending = {}
            got = list(self.grid.send_and_receive(msgs, timeout=self.timeout))
            # the grid gave each message its id as it sent it; a node that is gone is answered for
            # by the SuperLink itself (its own node id), so a reply is matched by what it answers
            sent = {m.metadata.message_id: cid for m, cid in zip(msgs, order, strict=True) if m.metadata.message_id}
            for reply in got:
                cid = sent.get(reply.metadata.reply_to_message_id)
                cid = by_node.get(reply.metadata.src_node_id) if cid is None else cid
                if cid is None:
                    log.warning("round %d: a reply nobody was asked for (%s)", rnd, reply.metadata.reply_to_message_id)
                    continue
                if not reply.has_error() and "up" in reply.content.array_records:
                    try:  # the server's half of the step; a reply it cannot use drops the client
                        record = reply.content["up"]
                        up[cid] += record.count_bytes()
                        answer = strategy.serve(tasks[cid], self.sc.workbench, _from_record(record))
                    except Exception as exc:
                        replies.append(Reply(cid, None, f"bad step: {type(exc).__name__}: {exc}", up[cid], down[cid]))
                        continue
                    steps[cid] += 1
                    pending[cid] = self._task_content(rnd, cid, tasks[cid], steps[cid], answer)
                    continue
                got = self._read_update(rnd, cid, reply, up[cid], down[cid])
                if got.update is not None:
                    got.update = strategy.finish(tasks[cid], got.update)
                replies.append(got)
        return replies

    def _read_update(self, rnd: int, cid: int, reply: Message, up: int, down: int) -> Reply:
        """A client's final reply as a :class:`Reply` (a drop, with the reason, if unreadable)."""
        if reply.has_error():
            return Reply(cid, None, f"node error: {reply.error.reason}", wire_bytes_down=down)
        try:  # a node may send anything: a reply that cannot be read is a drop, with the reason
            payload_rec = reply.content["payload"]
            nums = reply.content["update"]
            update = ClientUpdate(
                cid,
                rnd,
                _from_record(payload_rec),
                num_examples=nums["num_examples"],  # as sent: aggregate's validation judges it
                flops=float(nums["flops"]),
                metrics={k[2:]: v for k, v in nums.items() if k.startswith("m.")},
                extra_bytes_up=int(nums["extra_bytes_up"]),
                colocated=bool(nums["colocated"]),
            )
            private = bool(nums["has_private"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            return Reply(cid, None, f"malformed reply: {type(exc).__name__}: {exc}", wire_bytes_down=down)
        if private:
            self.private_on_nodes.add(cid)
        return Reply(cid, update, wire_bytes_up=up + payload_rec.count_bytes(), wire_bytes_down=down)

    def evaluate_clients(self, rnd: int, state: Tensors) -> list[ClientEval]:
        self._refresh()
        content = RecordDict(
            {
                "task": ConfigRecord({CONFIG_KEY: self.cfg_yaml, "threads": self.threads}),
                "state": _to_record(state),
            }
        )
        msgs = [self._message(cid, rnd, content, MessageType.EVALUATE) for cid in range(len(self.sc.clients))]
        evals = []
        got = list(self.grid.send_and_receive(msgs, timeout=self.timeout))
        sent = {m.metadata.message_id: cid for cid, m in enumerate(msgs) if m.metadata.message_id}
        for reply in got:
            if reply.has_error():
                log.warning(
                    "round %d: evaluation failed on node %d: %s", rnd, reply.metadata.src_node_id, reply.error.reason
                )
                continue
            m = reply.content["metrics"]
            evals.append(
                ClientEval(
                    {k[len("local.") :]: float(v) for k, v in m.items() if k.startswith("local.")},
                    {k[len("global.") :]: float(v) for k, v in m.items() if k.startswith("global.")},
                    sent.get(reply.metadata.reply_to_message_id, -1),
                )
            )
        return evals

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"private": {}, "private_on_nodes": sorted(self.private_on_nodes)}  # private state stays on nodes

    def restore(self, saved: checkpoint.Checkpoint) -> None:
        checkpoint.check_resumable(saved)


class Verdicts(Callbacks):
    """The launcher's stop rule, across processes (``fl/flower_sim.py``): after each round but
    the last the server waits for ``run_dir/VERDICT``, which the launcher writes once its
    callbacks have seen that round, so a stop lands after the same round as in-process. An
    ``abort`` verdict (the launcher was interrupted), or a launcher that is gone, ends the run
    after the round in hand, cleanly: the checkpoint holds it and ``--resume`` goes on."""

    def __init__(self, run_dir: Path, launcher_pid: int):
        self.path, self.pid = run_dir / VERDICT, launcher_pid

    def _launcher_alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, under another user
            return True
        return True

    def should_stop(self, summary: dict[str, Any]) -> bool:
        checks = 0
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                verdict = json.loads(self.path.read_text())
                if verdict.get("abort"):
                    return True
                if verdict["round"] == summary["round"]:
                    return bool(verdict["stop"])
            checks += 1
            if checks % 50 == 0 and not self._launcher_alive():
                log.warning("round %d: the launcher is gone; stopping after this round", summary["round"])
                return True
            time.sleep(0.02)


def _transport(spec: str) -> type[FlowerTransport]:
    """A FlowerTransport subclass named ``module:attribute`` (a test seam), or the default."""
    if not spec:
        return FlowerTransport
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


server_app = ServerApp()


@server_app.main()
def _deployed_main(grid: Grid, context: Context) -> None:
    """``flwr run``: the config comes as a YAML file path (or YAML text) in the run config, with
    optional ``edgefm-set`` overrides. Launched by edgefm (``engine=flower``, ``edgefm-launched``)
    the run folder already holds its config, the server saves the tokenizer (the launcher
    built no scenario), the launcher's callbacks decide whether to go on after each round,
    ``edgefm-resume`` resumes it, and the launcher writes the summary and report; a failure
    leaves its one-line reason in ``run_dir/ERROR``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    rc = context.run_config
    value = str(rc.get(CONFIG_KEY, ""))
    if not value:
        raise EdgefmError(
            f"run config has no {CONFIG_KEY!r}; pass --run-config \"{CONFIG_KEY}='/abs/path/config.yaml'\""
        )
    run_dir = Path(str(rc[RUN_DIR_KEY])) if rc.get(RUN_DIR_KEY) else None
    launcher = int(rc.get(LAUNCHED_KEY, 0) or 0)  # the launcher's process id; 0: run by hand
    launched = launcher > 0 and run_dir is not None
    try:
        overrides = str(rc.get(SET_KEY, "")).split()
        path = Path(value)
        if path.is_file():
            text = config.dump(config.load(path, overrides))
        else:
            text = config.dump(
                config.build(
                    config.RunConfig,
                    config.merge(config.yaml.safe_load(value) or {}, config.parse_overrides(overrides)),
                )
            )
        sc = build(config.loads(text))
        resuming = launched and bool(rc.get(RESUME_KEY))
        if run_dir is not None and not launched:  # the same folder as `edgefm train` writes
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(text)
        if run_dir is not None and not resuming:  # the launcher holds no tokenizer (fl/outline.py)
            sc.workbench.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
        callbacks = Verdicts(run_dir, launcher) if launched else None
        transport = _transport(str(rc.get(TRANSPORT_KEY, "")) if launched else "")  # a seam for edgefm's tests
        Engine(sc, callbacks, transport(grid, sc, text)).run(run_dir, resume=resuming)
    except Exception as exc:
        if launched:  # the launcher raises it as a one-line error
            reason = str(exc) if isinstance(exc, EdgefmError) else f"{type(exc).__name__}: {exc}"
            (run_dir / ERROR).write_text(reason.splitlines()[0] if reason else type(exc).__name__)
        raise
    if run_dir is not None and not launched:
        from edgefm.fl.outline import outline
        from edgefm.report.html import finish_run

        finish_run(run_dir, outline(sc))

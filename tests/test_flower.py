"""The same Strategy on Flower: the simulation engine agrees with the in-process one; a node that
crashes is dropped, not fatal; and a real deployment (SuperLink + 2 SuperNodes on 127.0.0.1 +
``flwr run``) finishes a 2-round run."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from edgefm import EdgefmError, config
from edgefm.fl.simulation import Callbacks, Engine

pytest.importorskip("flwr")

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=tiny_bert",
    "data.max_train=160",
    "data.max_test=60",
    "data.max_length=24",
    "rounds=2",
    "clients=3",
    "train.lr=0.01",
    "train.head_lr=0.01",
    "flower.round_timeout=120",
]


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


class Recorder(Callbacks):
    """The caller's side of a run: every event it saw, and a stop rule (stop after round ``stop_after``)."""

    def __init__(self, stop_after: int = 0):
        self.events: list[tuple] = []
        self.stop_after = stop_after

    def on_run_start(self, rounds, start_round):
        self.events.append(("run", rounds, start_round))

    def on_round_start(self, rnd, clients):
        self.events.append(("start", rnd, tuple(clients)))

    def on_client_end(self, rnd, client_id, row):
        self.events.append(("client", rnd, client_id, row["status"]))

    def on_round_end(self, summary):
        self.events.append(("end", summary["round"]))

    def should_stop(self, summary):
        return summary["round"] == self.stop_after


@pytest.mark.slow
def test_flower_simulation_matches_inprocess_and_drops_a_crashing_node(tmp_path, monkeypatch):
    """``flwr run`` against a simulating SuperLink: the numbers and the caller's events are the
    in-process engine's; a node that raises is dropped; a server that fails says why in one line."""
    from edgefm.fl import flower_sim
    from edgefm.fl.scenario import build

    cfg = config.load(None, TINY)
    seen = {"inprocess": Recorder(), "flower": Recorder()}
    inproc = Engine(build(cfg), seen["inprocess"]).run()
    fl_dir = tmp_path / "b"
    out = flower_sim.run_simulation(cfg, fl_dir, seen["flower"])
    assert seen["flower"].events == seen["inprocess"].events and len(seen["flower"].events) == 1 + 2 * (1 + 3 + 1)
    assert not list(fl_dir.glob(".flower-*")) and (fl_dir / "flower.log").is_file()
    a, b = inproc["ledger"].rounds, out["ledger"].rounds
    assert [r["accuracy"] for r in a] == pytest.approx([r["accuracy"] for r in b], abs=1e-6)
    assert [r["bytes_up"] for r in a] == [r["bytes_up"] for r in b]
    assert [r["client_acc_mean"] for r in a] == pytest.approx([r["client_acc_mean"] for r in b], abs=1e-6)
    assert all(r["wire_bytes_up"] >= r["bytes_up"] > 0 for r in rows(fl_dir / "clients.jsonl"))
    # client 1's node fails its round-1 task (a real exception on the node): dropped and logged;
    # the run goes on
    # (the server imports the seam by name: it runs in another process)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    crash_dir = tmp_path / "c"
    out = flower_sim.run_simulation(cfg, crash_dir, transport="flower_seams:Misaddressed")
    first = [r for r in rows(crash_dir / "clients.jsonl") if r["round"] == 1]
    status = {r["client"]: r["status"] for r in first}
    assert status == {0: "ok", 1: "dropped", 2: "ok"}
    assert "task for client 99 reached partition 1" in next(r["reason"] for r in first if r["client"] == 1)
    assert out["ledger"].rounds[0]["dropped"] == 1 and len(out["ledger"].rounds) == 2
    with pytest.raises(
        EdgefmError, match=r"^the Flower run failed: ModuleNotFoundError: No module named 'no_such_seams'"
    ):
        flower_sim.run_simulation(cfg, tmp_path / "d", transport="no_such_seams:X")


@pytest.mark.slow
def test_the_callers_stop_rule_ends_a_flower_run_after_the_same_round(tmp_path):
    """The server waits for the caller's verdict after each round: a rule that stops after
    round 1 of 3 ends the run there, on Flower as in-process; --resume then finishes it."""
    from edgefm.fl import checkpoint, flower_sim
    from edgefm.fl.scenario import build

    cfg = config.load(None, [*TINY, "rounds=3"])
    want = Engine(build(cfg), Recorder(stop_after=1)).run()
    caller = Recorder(stop_after=1)
    out = flower_sim.run_simulation(cfg, tmp_path, caller)
    assert [e[:2] for e in caller.events if e[0] == "end"] == [("end", 1)] and len(out["ledger"].rounds) == 1
    assert out["ledger"].rounds[0]["accuracy"] == pytest.approx(want["ledger"].rounds[0]["accuracy"], abs=1e-6)
    assert checkpoint.load(tmp_path).round == 1
    again = Recorder()
    out = flower_sim.run_simulation(cfg, tmp_path, again, resume=True)
    assert again.events[0] == ("run", 3, 2) and [e[1] for e in again.events if e[0] == "end"] == [2, 3]
    assert [r["round"] for r in rows(tmp_path / "metrics.jsonl")] == [1, 2, 3] and len(out["ledger"].rounds) == 3


DEPLOYED = " ".join(x for x in TINY if not x.startswith("clients=")) + " clients=2"


@pytest.mark.slow
def test_deployment_superlink_two_supernodes_flwr_run(tmp_path):
    """Only loopback addresses; every process is bounded in time and killed at the end."""
    from edgefm.fl.loopback import Loopback

    with Loopback(tmp_path) as lb:
        lb.start_superlink()
        for k in range(2):
            lb.start_node(k, 2)
        time.sleep(3)
        result = lb.run(ROOT / "configs" / "tiny.yaml", DEPLOYED, tmp_path / "run", timeout=300)
    run_dir = tmp_path / "run"
    assert (run_dir / "metrics.jsonl").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    done = rows(run_dir / "metrics.jsonl")
    assert [r["round"] for r in done] == [1, 2] and all(r["accepted"] == 2 for r in done)
    assert all(r["bytes_up"] > 0 for r in done)
    # the deployed server writes the folder `edgefm train` writes: summary, report, tokenizer
    from edgefm.api import open_run

    run = open_run(run_dir)
    assert run.summary["rounds"] == 2 and run.summary["final_accuracy"] == pytest.approx(done[-1]["accuracy"])
    assert run.report.is_file() and (run_dir / "tokenizer").is_dir()


@pytest.mark.slow
def test_tls_deployment_admits_only_registered_supernodes(tmp_path):
    """TLS with a CA made here, ``--enable-supernode-auth``: two SuperNodes whose public keys were
    registered with ``flwr supernode register`` train a run over TLS; a third, with a valid key
    pair that was never registered, is refused and exits."""
    from edgefm.fl.loopback import Loopback, make_node_key

    with Loopback(tmp_path, tls=True, auth=True) as lb:
        lb.start_superlink()
        keys = [make_node_key(tmp_path / "keys", f"node{k}") for k in range(3)]
        for _, public in keys[:2]:
            reg = lb.register(public)
            assert reg.returncode == 0 and "registered successfully" in reg.stdout, reg.stdout + reg.stderr
        for k in range(2):
            lb.start_node(k, 2, keys[k][0])
        stranger = lb.start_node(2, 2, keys[2][0])
        time.sleep(3)
        result = lb.run(ROOT / "configs" / "tiny.yaml", DEPLOYED, tmp_path / "run", timeout=300)
        listed = lb.flwr("supernode", "list", lb.connection, "--format", "json", timeout=60)
        assert stranger.wait(timeout=120) != 0  # the unregistered node gives up
        # the link really is TLS: the CA the nodes trust signed the certificate the SuperLink serves
        ctx = ssl.create_default_context(cafile=str(lb.ca))
        with (
            socket.create_connection(("127.0.0.1", lb.port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    run_dir = tmp_path / "run"
    assert (run_dir / "metrics.jsonl").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    assert [r["accepted"] for r in rows(run_dir / "metrics.jsonl")] == [2, 2]
    assert "Failed to activate SuperNode" in (tmp_path / "node2.log").read_text()
    assert listed.stdout.count('"online"') == 2, listed.stdout


@pytest.mark.slow
def test_raffm_subnetworks_on_flower_match_inprocess(tmp_path):
    """Per-client subnetwork specs travel in the task config; declined devices are never contacted."""
    from edgefm.fl import flower_sim
    from edgefm.fl.scenario import build

    cfg = config.load(
        None,
        [
            *TINY,
            "clients=4",
            "model.finetune=full",
            "algorithm.name=raffm",
            "algorithm.step_budget_s=0.001",
            "edge.tiers={low_end_phone: 1, high_end_phone: 1, laptop: 1, edge_server: 1}",
            "edge.jitter=0",
        ],
    )
    inproc = Engine(build(cfg)).run()
    out = flower_sim.run_simulation(cfg, tmp_path)
    a, b = inproc["ledger"], out["ledger"]
    assert [r["accuracy"] for r in a.rounds] == pytest.approx([r["accuracy"] for r in b.rounds], abs=1e-6)
    assert [(r["status"], r["bytes_up"], r["flops"]) for r in a.clients] == [
        (r["status"], r["bytes_up"], r["flops"]) for r in b.clients
    ]
    statuses = [r["status"] for r in b.clients]
    assert "dropped" in statuses and "ok" in statuses
    assert len({r["bytes_up"] for r in b.clients if r["status"] == "ok"}) >= 2  # different subnetworks


@pytest.mark.slow
def test_fedms_on_flower_matches_inprocess(tmp_path):
    """Local experts and gates stay on the nodes (context.state); nodes evaluate the mixtures."""
    from edgefm.fl import flower_sim
    from edgefm.fl.scenario import build

    cfg = config.load(None, [*TINY, "rounds=3", "algorithm.name=fedms", "algorithm.stage1_rounds=1"])
    sc = build(cfg)
    inproc = Engine(sc).run()
    out = flower_sim.run_simulation(cfg, tmp_path)
    a, b = inproc["ledger"].rounds, out["ledger"].rounds
    for key in ("accuracy", "client_acc_mean", "client_acc_min"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6), key
    assert [(r["bytes_up"], r["bytes_down"]) for r in a] == [(r["bytes_up"], r["bytes_down"]) for r in b]
    # the nodes evaluated the clients' mixtures: the figure equals the mixtures' mean accuracy
    mixtures = sc.strategy.expert_breakdown(inproc["state"], sc.workbench, sc.clients, inproc["private"])
    assert b[-1]["client_acc_mean"] == pytest.approx(mixtures["mean"]["acc_mixture"], abs=1e-9)
    assert mixtures["mean"]["acc_mixture"] != mixtures["mean"]["acc_global"]  # which the check can tell apart
    assert out["private_on_nodes"] == [0, 1, 2] and out["private"] == {}


@pytest.mark.slow
def test_language_models_of_two_architectures_on_flower_match_inprocess(tmp_path):
    """Each node builds the architecture its device trains; the server averages each one."""
    from edgefm.fl import flower_sim
    from edgefm.fl.scenario import build
    from test_lm import TINY as LM

    cfg = config.load(
        None, [*LM, "clients=3", "model.families=[llama, gpt2]", "model.finetune=lora", "flower.round_timeout=120"]
    )
    inproc = Engine(build(cfg)).run()
    out = flower_sim.run_simulation(cfg, tmp_path)
    a, b = inproc["ledger"], out["ledger"]
    for key in ("log_ppl", "token_acc", "client_log_ppl_mean"):
        assert [r[key] for r in a.rounds] == pytest.approx([r[key] for r in b.rounds], abs=1e-6), key
    assert [(r["arch"], r["bytes_up"]) for r in a.clients] == [(r["arch"], r["bytes_up"]) for r in b.clients]
    assert len({r["arch"] for r in b.clients}) == 2


@pytest.mark.slow
def test_split_learning_on_flower_matches_inprocess(tmp_path):
    """The ServerApp is the edge server: every split step is a message round trip with the node
    (activations up, the gradient down). V1's devices step side by side, V2's in turn; devices
    that sit out or disconnect mid-step are dropped the same way; the numbers are in-process's."""
    from edgefm.fl import flower_sim
    from edgefm.fl.scenario import build
    from test_lm import TINY as LM

    settings = (
        [*TINY, "algorithm.name=splitfed", "train.max_steps=3", "train.batch_size=8", "model.backbone_dropout=0.1"],
        [*LM, "algorithm.name=splitfed", "algorithm.variant=v2", "algorithm.step_drop=0.2"]
        + ["algorithm.participation=[0.9,0.6]", "rounds=3", "flower.round_timeout=120"],
    )
    for n, sets in enumerate(settings):
        cfg = config.load(None, sets)
        inproc = Engine(build(cfg)).run()
        (tmp_path / str(n)).mkdir()
        out = flower_sim.run_simulation(cfg, tmp_path / str(n))
        a, b = inproc["ledger"], out["ledger"]
        metric = "accuracy" if n == 0 else "log_ppl"
        assert [r[metric] for r in a.rounds] == pytest.approx([r[metric] for r in b.rounds], abs=1e-6)
        keys = ("round", "client", "status", "bytes_up", "bytes_down", "flops", "server_flops")
        assert [[r.get(k) for k in keys] for r in a.clients] == [[r.get(k) for k in keys] for r in b.clients]
        loss = [[r.get("client_train_loss", -1.0) for r in x.clients] for x in (a, b)]
        assert loss[0] == pytest.approx(loss[1], rel=1e-6)
        ok = [r for r in rows(tmp_path / str(n) / "clients.jsonl") if r["status"] == "ok"]
        # the wire carried every step's activations and gradients: more than the ledger's payloads
        assert ok and all(r["wire_bytes_up"] > r["bytes_up"] > r["client_act_bytes_up"] > 0 for r in ok)
    reasons = [r["reason"] for r in b.clients if r["status"] == "dropped"]
    assert any("disconnected in split step" in x for x in reasons) and any("sat out" in x for x in reasons)


class _RestartingGrid:
    """A Grid whose nodes answer at once. ``restart`` gives a partition a new node id, as the
    SuperLink does when a killed SuperNode comes back; ``kill`` leaves a node dead, and, as
    Flower does, the SuperLink itself (node 1) answers its messages with an error."""

    def __init__(self, parts: int):
        self.node_part = {100 + k: k for k in range(parts)}
        self.sent: list[tuple[str, int]] = []

    def restart(self, part: int, new_id: int) -> None:
        self.node_part = {n: p for n, p in self.node_part.items() if p != part} | {new_id: part}

    def kill(self, part: int) -> None:
        self.node_part = {n: p for n, p in self.node_part.items() if p != part}

    def get_node_ids(self):
        return list(self.node_part)

    def send_and_receive(self, msgs, timeout=None):
        import torch
        from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        out = []
        for i, m in enumerate(msgs):
            m.metadata.__dict__["_message_id"] = f"{len(self.sent)}-{i}"  # as Flower's grid does on sending
            node = m.metadata.dst_node_id
            self.sent.append((m.metadata.message_type, node))
            TaskIdentity.node_id = node if node in self.node_part else 1
            if node not in self.node_part:
                out.append(Message(Error(code=3, reason="node unavailable"), reply_to=m))
            elif m.metadata.message_type == MessageType.QUERY:
                part = self.node_part[node]
                out.append(m.create_reply(RecordDict({"node": ConfigRecord({"partition-id": part})})))
            elif m.metadata.message_type == MessageType.TRAIN:
                numbers = {"num_examples": 5, "flops": 1.0, "extra_bytes_up": 0, "colocated": 0, "has_private": 0}
                payload = ArrayRecord.from_torch_state_dict({"w": torch.ones(2)})
                out.append(m.create_reply(RecordDict({"payload": payload, "update": MetricRecord(numbers)})))
            else:
                part = self.node_part[node]
                out.append(m.create_reply(RecordDict({"metrics": MetricRecord({"local.accuracy": float(part)})})))
            TaskIdentity.node_id = 1  # back to the server's
        return out


def test_a_restarted_supernode_gets_its_partition_back_and_a_dead_one_is_a_drop():
    from types import SimpleNamespace

    from flwr.app import MessageType
    from flwr.supercore.task_identity import TaskIdentity

    from edgefm.fl.flower import FlowerTransport
    from edgefm.fl.strategy import ClientTask

    cfg = config.load(None, ["clients=3"])
    strategy = SimpleNamespace(interactive=False, finish=lambda task, update: update)
    sc = SimpleNamespace(cfg=cfg, clients=[None] * 3, strategy=strategy)
    grid = _RestartingGrid(3)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1  # as Flower sets in a ServerApp
    try:
        t = FlowerTransport(grid, sc, "yaml")
        assert t.node_of == {0: 100, 1: 101, 2: 102}
        grid.restart(1, 205)  # partition 1's node was killed and came back as node 205
        grid.kill(2)  # partition 2's node is gone for good
        grid.sent.clear()
        replies = t.train(2, {k: ClientTask(k, 2, {}, {}) for k in range(3)})
        # only the new node is asked its partition; partition 1's task goes to it
        assert [n for kind, n in grid.sent if kind == MessageType.QUERY] == [205]
        assert sorted(n for kind, n in grid.sent if kind == MessageType.TRAIN) == [100, 102, 205]
        by = {r.client_id: r for r in replies}
        assert sorted(by) == [0, 1, 2] and by[0].update is not None and by[1].update is not None
        assert by[2].update is None and "node unavailable" in by[2].error  # answered for by the SuperLink
        grid.sent.clear()
        evals = t.evaluate_clients(2, {})  # nothing new joined: no query
        assert all(kind != MessageType.QUERY for kind, _ in grid.sent)
        assert sorted(e.local["accuracy"] for e in evals) == [0.0, 1.0]
    finally:
        TaskIdentity.run_id = None
        TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.mark.slow
def test_train_engine_flower_from_the_cli_writes_the_run_folder_like_inprocess(tmp_path):
    """``edgefm train --engine flower``: progress lines from the run folder, then the summary,
    report and tokenizer ``edgefm train`` always writes, with Flower's log beside them."""
    from typer.testing import CliRunner

    from edgefm.api import open_run
    from edgefm.cli import app

    run = tmp_path / "run"
    sets = ["--set", *[x for x in TINY if not x.startswith(("rounds=", "clients="))], "rounds=2", "clients=2"]
    result = CliRunner().invoke(app, ["train", "--engine", "flower", "--out", str(run), *sets])
    assert result.exit_code == 0, result.output
    assert "round   1: acc" in result.output and "round   2: acc" in result.output
    done = open_run(run)
    assert done.summary["rounds"] == 2 and done.summary["final_accuracy"] == rows(run / "metrics.jsonl")[-1]["accuracy"]
    assert (
        done.report.is_file()
        and (run / "tokenizer").is_dir()
        and "Successfully started run" in (run / "flower.log").read_text()
    )


def test_federation_config_shares_the_gpus_among_the_actors_that_run_at_once():
    """Goal 6's plumbing, testable without a GPU: each simulated node asks Ray for an equal share
    of the GPUs the outline found (none with device=cpu), and Ray is started with all of them."""
    from edgefm.fl.flower_sim import federation_config

    cfg = config.load(None, [*TINY, "flower.parallel=2", "flower.client_cpus=1"])
    assert federation_config(cfg, 8, 1) == (
        "num-supernodes=8 client-resources-num-cpus=1 client-resources-num-gpus=0.5 "
        "init-args-num-cpus=2 init-args-num-gpus=1"
    )
    assert "client-resources-num-gpus=1.0 " in federation_config(cfg, 8, 4)  # a node never asks for more than one
    assert "client-resources-num-gpus=0.0 " in federation_config(cfg, 3, 0)


LIGHT_LAUNCHER = """
import json, sys
from edgefm import api
from edgefm.fl.events import Callbacks

class Probe(Callbacks):
    seen = []
    def on_run_start(self, rounds, start):
        self.seen.append("torch" in sys.modules)
    def on_round_end(self, summary):
        self.seen.append("torch" in sys.modules)

prepared = api.prepare(None, sys.argv[2:], out=sys.argv[1])
before, probe = "torch" in sys.modules, Probe()
api.execute(prepared, probe)
print(json.dumps({"prepared": before, "during": probe.seen, "outline": prepared.outline.clients}))
"""


@pytest.mark.slow
def test_the_launcher_of_a_flower_run_holds_no_model_and_fails_bad_input_in_one_line(tmp_path):
    """``engine=flower``: the scenario is built and checked in a child process, so the launcher
    (which only follows the run folder) never imports torch while the ServerApp and the actors
    train; the run folder still gets its tokenizer (saved by the server) and a summary with the
    outline's figures; and a config the child cannot build is the same one-line error, with
    nothing written."""
    import subprocess
    import sys

    run = tmp_path / "run"
    sets = [*[x for x in TINY if not x.startswith(("rounds=", "clients="))], "rounds=2", "clients=2", "engine=flower"]
    got = subprocess.run(
        [sys.executable, "-c", LIGHT_LAUNCHER, str(run), *sets], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert got.returncode == 0, got.stderr[-2000:]
    seen = json.loads(got.stdout.strip().splitlines()[-1])
    assert seen == {"prepared": False, "during": [False, False, False], "outline": 2}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["parameters_total"] > summary["parameters_trainable"] > 0 and len(summary["devices"]) == 2
    assert (
        sum(map(sum, summary["label_mix"]["clients"])) > 0 and (run / "tokenizer" / "tokenizer_config.json").is_file()
    )
    from edgefm import api

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,0\n")
    with pytest.raises(EdgefmError, match=r"^data.path .*bad.csv: no column 'lab'; expected one of text, label$"):
        api.prepare(None, [*sets, "data.name=csv", f"data.path={bad}", "data.label_column=lab"], out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_server_waits_for_the_launchers_verdict_and_stops_when_it_is_gone(tmp_path):
    import subprocess
    import sys
    import threading

    from edgefm.fl.flower import VERDICT, Verdicts

    def ask(v: Verdicts, rnd: int) -> bool | None:
        """should_stop in a thread: a broken wait fails the test instead of hanging it."""
        answer: list[bool] = []
        t = threading.Thread(target=lambda: answer.append(v.should_stop({"round": rnd})), daemon=True)
        t.start()
        t.join(timeout=10)
        return answer[0] if answer else None

    v = Verdicts(tmp_path, os.getpid())
    timer = threading.Timer(0.3, lambda: (tmp_path / VERDICT).write_text(json.dumps({"round": 1, "stop": False})))
    timer.start()
    t0 = time.monotonic()
    assert ask(v, 1) is False and time.monotonic() - t0 >= 0.25  # it waited for the verdict
    (tmp_path / VERDICT).write_text(json.dumps({"round": 2, "stop": True}))
    assert ask(v, 2) is True
    (tmp_path / VERDICT).write_text(json.dumps({"abort": True}))  # the launcher was interrupted
    assert ask(v, 3) is True
    (tmp_path / VERDICT).unlink()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert ask(Verdicts(tmp_path, int(gone.stdout)), 4) is True  # no launcher: stop, not hang


@pytest.mark.slow
def test_an_interrupted_flower_run_stops_after_the_round_in_hand_and_leaves_nothing_running(tmp_path):
    """Ctrl-C in the launcher: the server ends after the round in hand (the abort verdict), Ray
    and the SuperLink shut down, no verdict file is left, and the checkpoint resumes."""
    import psutil

    from edgefm.fl import checkpoint, flower_sim

    class Interrupt(Recorder):
        def on_round_end(self, summary):
            super().on_round_end(summary)
            raise KeyboardInterrupt

    t0 = time.time()
    cfg = config.load(None, [*TINY, "rounds=4"])
    with pytest.raises(KeyboardInterrupt):
        flower_sim.run_simulation(cfg, tmp_path, Interrupt())
    assert 1 <= checkpoint.load(tmp_path).round < 4 and not list(tmp_path.glob(".flower-*"))
    names = ("flower-superlink", "flower-superexec", "flwr-simulation", "flwr run", "ray::", "raylet", "gcs_server")
    deadline = time.monotonic() + 30
    while True:
        left = []
        for p in psutil.process_iter(["cmdline", "create_time"]):
            with contextlib.suppress(psutil.Error, TypeError):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.info["create_time"] >= t0 and any(n in cmd for n in names):
                    left.append(cmd[:80])
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not left, left

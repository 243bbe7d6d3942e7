"""The same Strategy on Flower: the simulation engine agrees with the in-process one; a node that
crashes is dropped, not fatal; and a real deployment (SuperLink + 2 SuperNodes on 127.0.0.1 +
``flwr run``) finishes a 2-round run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefm import config
from edgefm.fl.simulation import Engine

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


def _misaddressed():
    from edgefm.fl.flower import FlowerTransport

    class Misaddressed(FlowerTransport):
        """The test seam: client 1's round-1 training task names another client, so its node raises."""

        def _message(self, cid, rnd, content, kind):
            if cid == 1 and rnd == 1 and kind == "train":
                content["task"]["client"] = 99
            return super()._message(cid, rnd, content, kind)

    return Misaddressed


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_flower_simulation_matches_inprocess_and_drops_a_crashing_node(tmp_path):
    from edgefm.fl import flower
    from edgefm.fl.scenario import build

    cfg = config.load(None, TINY)
    inproc = Engine(build(cfg)).run()
    fl_dir = tmp_path / "b"
    fl_dir.mkdir()
    out = flower.run_simulation(cfg, fl_dir)
    a, b = inproc["ledger"].rounds, out["ledger"].rounds
    assert [r["accuracy"] for r in a] == pytest.approx([r["accuracy"] for r in b], abs=1e-6)
    assert [r["bytes_up"] for r in a] == [r["bytes_up"] for r in b]
    assert [r["client_acc_mean"] for r in a] == pytest.approx([r["client_acc_mean"] for r in b], abs=1e-6)
    assert all(r["wire_bytes_up"] >= r["bytes_up"] > 0 for r in rows(fl_dir / "clients.jsonl"))
    # client 1's node fails its round-1 task (a real exception on the node): dropped and logged;
    # the run goes on
    crash_dir = tmp_path / "c"
    crash_dir.mkdir()
    out = flower.run_simulation(cfg, crash_dir, transport=_misaddressed())
    first = [r for r in rows(crash_dir / "clients.jsonl") if r["round"] == 1]
    status = {r["client"]: r["status"] for r in first}
    assert status == {0: "ok", 1: "dropped", 2: "ok"}
    assert "task for client 99 reached partition 1" in next(r["reason"] for r in first if r["client"] == 1)
    assert out["ledger"].rounds[0]["dropped"] == 1 and len(out["ledger"].rounds) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_deployment_superlink_two_supernodes_flwr_run(tmp_path):
    """Only loopback addresses; every process is bounded in time and killed at the end."""
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "edgefm-test"\n\n[superlink.edgefm-test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "HF_HUB_OFFLINE": "1",
    }
    from edgefm.data.sources import data_dir

    env["EDGEFM_DATA_DIR"] = str(data_dir())
    procs = []

    def start(*cmd: str, log: str) -> None:
        procs.append(
            subprocess.Popen(
                cmd,
                env=env,
                cwd=tmp_path,
                stdout=open(tmp_path / log, "w"),  # noqa: SIM115 - lives as long as the process
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    try:
        start(
            str(bin_dir / "flower-superlink"),
            "--insecure",
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            ":flwr-in-memory:",
            log="superlink.log",
        )
        time.sleep(4)
        for k in range(2):
            start(
                str(bin_dir / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--node-config",
                f"partition-id={k} num-partitions=2",
                log=f"node{k}.log",
            )
        time.sleep(3)
        run_dir = tmp_path / "run"
        overrides = " ".join(x for x in TINY if not x.startswith("clients=")) + " clients=2"
        result = subprocess.run(
            [
                str(bin_dir / "flwr"),
                "run",
                str(ROOT / "configs" / "flower_app"),
                "edgefm-test",
                "--stream",
                "--run-config",
                f"edgefm-config='{ROOT / 'configs' / 'tiny.yaml'}' edgefm-set='{overrides}' edgefm-run-dir='{run_dir}'",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert (run_dir / "metrics.jsonl").is_file(), result.stdout[-3000:] + result.stderr[-3000:]
        done = rows(run_dir / "metrics.jsonl")
        assert [r["round"] for r in done] == [1, 2] and all(r["accepted"] == 2 for r in done)
        assert all(r["bytes_up"] > 0 for r in done)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow
def test_raffm_subnetworks_on_flower_match_inprocess(tmp_path):
    """Per-client subnetwork specs travel in the task config; declined devices are never contacted."""
    from edgefm.fl import flower
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
    out = flower.run_simulation(cfg, tmp_path)
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
    from edgefm.fl import flower
    from edgefm.fl.scenario import build

    cfg = config.load(None, [*TINY, "rounds=3", "algorithm.name=fedms", "algorithm.stage1_rounds=1"])
    sc = build(cfg)
    inproc = Engine(sc).run()
    out = flower.run_simulation(cfg, tmp_path)
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
    from edgefm.fl import flower
    from edgefm.fl.scenario import build
    from test_lm import TINY as LM

    cfg = config.load(
        None, [*LM, "clients=3", "model.families=[llama, gpt2]", "model.finetune=lora", "flower.round_timeout=120"]
    )
    inproc = Engine(build(cfg)).run()
    out = flower.run_simulation(cfg, tmp_path)
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
    from edgefm.fl import flower
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
        out = flower.run_simulation(cfg, tmp_path / str(n))
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

"""``engine=flower``: a run on Flower's simulation runtime, submitted with ``flwr run``.

Flower 1.41 deprecates ``flwr.simulation.run_simulation``; a simulation is a run like any
other, submitted with ``flwr run APP CONNECTION`` to a SuperLink started with ``--simulation``
(Flower's "local simulation": the SuperLink's runtime starts the ServerApp and simulates
``num-supernodes`` nodes on Ray, each given ``partition-id`` K of N). edgefm does exactly that:

- it starts that SuperLink itself (``fl/loopback.py``, the command Flower's managed local
  SuperLink runs, on free 127.0.0.1 ports and a ``FLWR_HOME`` of its own) rather than Flower's
  detached one on fixed ports, so two runs never share it and it ends with the run;
- ``flwr run configs/flower_app CONNECTION --stream --federation-config "num-supernodes=N
  client-resources-num-cpus=C ..." --run-config "edgefm-config=... edgefm-launched=true"``
  submits edgefm's Flower App (the same ServerApp and ClientApp a deployment runs); Flower's
  log goes to ``run_dir/flower.log``;
- the ServerApp runs in another process, so the caller's callbacks (progress bars, tracking,
  a tenant's stop rule) follow the run folder as the server writes it: ``clients.jsonl`` and
  ``metrics.jsonl`` lines become ``on_client_end`` and ``on_round_end`` events, and after each
  round the caller's ``should_stop`` is written to a verdict file the server waits for
  (``flower.Verdicts``), so a stop lands after the same round as in-process;
- the result (ledger, which clients keep private state on their nodes) is read back from the
  metadata of the checkpoint the server saved; a failure on the server comes back as its
  one-line reason;
- the launcher holds no scenario and imports no torch (``fl/outline.py``): the ServerApp and
  the client actors build their own, and only they need the model.

Resources: each simulated node gets ``flower.client_cpus`` CPUs and, with CUDA present and
``device`` not ``cpu``, an equal share of the GPUs; ``flower.parallel`` nodes (default: as many
as the cores allow) run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgefm import EdgefmError, config
from edgefm.fl import checkpoint
from edgefm.fl.events import Callbacks, sample_clients
from edgefm.fl.ledger import Ledger
from edgefm.fl.loopback import Loopback
from edgefm.fl.outline import Outline

CONFIG_KEY = "edgefm-config"  # run_config / message key holding the resolved YAML config
RUN_DIR_KEY = "edgefm-run-dir"
SET_KEY = "edgefm-set"  # space-separated dotted overrides, as --set takes them
# set by edgefm's own launcher (engine=flower, this module), not by hand
LAUNCHED_KEY, RESUME_KEY, TRANSPORT_KEY = "edgefm-launched", "edgefm-resume", "edgefm-transport"
VERDICT, ERROR = ".flower-verdict.json", ".flower-error"  # files in the run folder the two sides share
POLL_S = 0.1
GRACE_S = 30.0  # how long an interrupted run may take to end its round and shut Ray down


class Follower:
    """Turns the lines the server appends to a run folder into the caller's callback events."""

    def __init__(self, run_dir: Path, cfg: config.RunConfig, clients: int, callbacks: Callbacks, start: int):
        self.run_dir, self.cfg, self.clients, self.cb = run_dir, cfg, clients, callbacks
        self.done_round = start - 1  # the last round whose end the callbacks saw
        self.started = start - 1  # the last round whose start they saw
        self.seen: set[tuple[int, int]] = set()
        self.stopped = False  # the caller's stop rule ended the run early
        self.offsets = {"clients.jsonl": 0, "metrics.jsonl": 0}

    def _new_rows(self, name: str) -> list[dict[str, Any]]:
        path = self.run_dir / name
        if not path.is_file():
            return []
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < self.offsets[name]:
                self.offsets[name] = 0  # rewritten (a resume trims it to the checkpoint's rounds)
            fh.seek(self.offsets[name])
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.offsets[name] += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def _start(self, rnd: int) -> None:
        while self.started < rnd:
            self.started += 1
            self.cb.on_round_start(
                self.started, sample_clients(self.cfg.seed, self.started, self.clients, self.cfg.fraction)
            )

    def poll(self) -> None:
        summaries = self._new_rows("metrics.jsonl")
        # read after the metrics: the engine writes a round's client lines before its metrics line,
        # so every round in ``summaries`` has all its client lines here
        for row in self._new_rows("clients.jsonl"):
            rnd, cid = int(row["round"]), int(row["client"])
            if rnd > self.done_round and (rnd, cid) not in self.seen:
                self._start(rnd)
                self.seen.add((rnd, cid))
                self.cb.on_client_end(rnd, cid, row)
        for summary in summaries:
            rnd = int(summary["round"])
            if rnd <= self.done_round:
                continue
            self._start(rnd)
            self.cb.on_round_end(summary)
            self.done_round = rnd
            if rnd < self.cfg.rounds:  # the server waits for this before its next round
                self.stopped = bool(self.cb.should_stop(summary))
                verdict(self.run_dir, {"round": rnd, "stop": self.stopped})


def verdict(run_dir: Path, value: dict[str, Any]) -> None:
    """Write the verdict file whole (the server may read it at any moment)."""
    tmp = run_dir / (VERDICT + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(run_dir / VERDICT)


def federation_config(cfg: config.RunConfig, nodes: int, gpus: int) -> str:
    """Flower's simulation settings for ``cfg``: nodes, CPUs and GPUs per node and in all
    (``gpus``: the CUDA devices the run may use)."""
    parallel = cfg.flower.parallel or max(1, (os.cpu_count() or 1) // cfg.flower.client_cpus)
    share = min(1.0, gpus / parallel)
    return (
        f"num-supernodes={nodes} client-resources-num-cpus={cfg.flower.client_cpus} "
        f"client-resources-num-gpus={share} init-args-num-cpus={cfg.flower.client_cpus * parallel} "
        f"init-args-num-gpus={gpus}"
    )


def run_simulation(
    cfg: config.RunConfig,
    run_dir: Path,
    callbacks: Callbacks | None = None,
    resume: bool = False,
    outline: Outline | None = None,
    transport: str = "",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` on Flower's simulation runtime into ``run_dir`` (see the module docstring).
    ``outline``: the scenario's (``fl/outline.py``: how many clients take part, GPUs); when not
    given the scenario is built here to find it; ``transport``: a ``FlowerTransport`` subclass
    as ``module:attribute`` (a test seam; the module must be importable by the server, e.g. on
    ``PYTHONPATH``)."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if outline is None:
        from edgefm.fl.outline import outline as outline_of
        from edgefm.fl.scenario import build

        outline = outline_of(build(cfg))
    clients = outline.clients
    (run_dir / "config.yaml").write_text(config.dump(cfg))  # what the server reads
    for name in (VERDICT, ERROR):
        (run_dir / name).unlink(missing_ok=True)
    start = 1
    if resume:  # trimmed to the checkpoint as the server will trim them, so the follower starts at their end
        saved = checkpoint.meta(run_dir)
        checkpoint.check_resumable(saved)  # before anything starts
        start = saved.round + 1
        checkpoint.rewrite_files(run_dir, saved.ledger)
    cb = callbacks or Callbacks()
    follower = Follower(run_dir, cfg, clients, cb, start)
    if resume:  # what is already in the folder was seen when it was written
        follower.offsets = {k: _size(run_dir / k) for k in follower.offsets}
    run_config = (
        f"{CONFIG_KEY}='{run_dir / 'config.yaml'}' {RUN_DIR_KEY}='{run_dir}' {LAUNCHED_KEY}={os.getpid()} "
        f"{RESUME_KEY}={str(resume).lower()} {TRANSPORT_KEY}='{transport}'"
    )
    cb.on_run_start(cfg.rounds, start)
    log = run_dir / "flower.log"
    submitted = _size(log)  # this run's lines of flower.log start here
    home = tempfile.TemporaryDirectory(prefix="edgefm-flower-")
    # relative paths in the config resolve where the caller runs, as in-process
    with home, _terminate_as_interrupt(), Loopback(Path(home.name), simulation=True, cwd=Path.cwd()) as lb:
        lb.start_superlink(wait_s=0.5)
        proc = lb.submit(run_config, federation_config(cfg, clients, outline.gpus), log)
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            while proc.poll() is None:
                follower.poll()
                if deadline is not None and time.monotonic() > deadline:
                    raise EdgefmError(f"the Flower run took over {timeout_s:.0f} s; see {log}")
                if (run_dir / ERROR).is_file():  # the server failed: Flower may take a while to notice
                    break
                time.sleep(POLL_S)
            follower.poll()
        finally:
            if proc.poll() is None:  # interrupted, timed out or failed: stop the run as Flower does
                _stop(lb, proc, run_dir, submitted)
            (run_dir / VERDICT).unlink(missing_ok=True)
    return _result(run_dir, cfg, follower.done_round if follower.stopped else cfg.rounds)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``timeout``, a job scheduler) ends the run as Ctrl-C does: the server stops after
    the round in hand and the SuperLink goes with the launcher (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(lb: Loopback, proc, run_dir: Path, submitted: int) -> None:
    """End a run the launcher gave up on (interrupted, timed out): an ``abort`` verdict, so the
    server stops after the round in hand and the runtime shuts Ray down; failing that,
    ``flwr stop RUN_ID`` as Flower stops a run; failing that, the submitting process is killed."""
    verdict(run_dir, {"abort": True})
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=GRACE_S)
    with open(run_dir / "flower.log", "rb") as fh:
        fh.seek(submitted)
        found = re.findall(rb"Successfully started run (\d+)", fh.read())
    if proc.poll() is None and found:
        with contextlib.suppress(subprocess.TimeoutExpired):
            lb.flwr("stop", found[-1].decode(), lb.connection, timeout=GRACE_S)
            proc.wait(timeout=GRACE_S)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _result(run_dir: Path, cfg: config.RunConfig, last: int) -> dict[str, Any]:
    """What the server saved, once it reached round ``last`` (its ledger, which clients keep
    private state; the global state stays in the checkpoint: ``checkpoint.load``), else its
    one-line reason. Read without torch, as Ray shuts down."""
    error = run_dir / ERROR
    if error.is_file():
        reason = error.read_text().strip()
        error.unlink()
        raise EdgefmError(f"the Flower run failed: {reason}")
    (run_dir / VERDICT).unlink(missing_ok=True)
    if not checkpoint.exists(run_dir):
        raise EdgefmError(f"the Flower run ended without finishing a round; see {run_dir / 'flower.log'}")
    saved = checkpoint.meta(run_dir)
    if saved.round != last:
        raise EdgefmError(
            f"the Flower run stopped after round {saved.round} of {cfg.rounds}; see {run_dir / 'flower.log'}"
        )
    return {
        "ledger": Ledger.from_state(saved.ledger),
        "private": saved.private,
        "private_on_nodes": saved.private_on_nodes,
    }

"""The Python API: what the command line does, from a script or a notebook.

    import edgefm

    run = edgefm.train("configs/tiny.yaml", overrides=["rounds=2"], out="runs/tiny")
    run.metrics            # one row per round (pandas), run.clients: one per client per round
    run.summary["final_accuracy"], run.report, run.state()

``train`` writes exactly what ``edgefm train`` writes (config.yaml, the tokenizer, metrics.jsonl,
clients.jsonl, the checkpoint, summary.json, report.html); the CLI is a thin layer over
``prepare`` and ``execute`` that adds progress bars and tables. ``robust`` is ``edgefm robust``.
Errors are :class:`edgefm.EdgefmError` with the one-line message the CLI prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefm import EdgefmError, config
from edgefm.config import RunConfig
from edgefm.fl.outline import Outline

__all__ = ["Run", "Prepared", "Robustness", "prepare", "execute", "train", "open_run", "robust"]


@dataclass(frozen=True)
class Run:
    """A finished run folder."""

    dir: Path

    @property
    def config(self) -> RunConfig:
        return config.load(self.dir / "config.yaml")

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.dir / "summary.json").read_text())

    @property
    def report(self) -> Path:
        return self.dir / "report.html"

    @property
    def metrics(self):
        """One row per round: the test metrics, bytes, FLOPs, simulated and wall seconds."""
        return _frame(self.dir / "metrics.jsonl")

    @property
    def clients(self):
        """The ledger: one row per client per round (status, bytes, FLOPs, seconds, joules, dollars)."""
        return _frame(self.dir / "clients.jsonl")

    def state(self) -> dict[str, Any]:
        """The global state after the last finished round (tensors by name)."""
        from edgefm.fl import checkpoint

        return checkpoint.load(self.dir, "run").state


def _frame(path: Path):
    import pandas as pd

    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def open_run(run_dir: str | Path) -> Run:
    """A run folder written by ``train`` or ``edgefm train``."""
    run = Run(Path(run_dir))
    if not (run.dir / "summary.json").is_file():
        raise EdgefmError(f"{str(run.dir)!r}: no summary.json in it; expected a finished run folder")
    return run


@dataclass
class Prepared:
    """A run ready to train (nothing written yet): its config, folder, outline (``fl.outline``)
    and built scenario; none for ``engine=flower``, whose ServerApp and client actors build
    their own (the scenario was built and checked in a child process, which has ended)."""

    cfg: RunConfig
    dir: Path
    outline: Outline
    scenario: Any = None  # fl.scenario.Scenario
    resume: bool = False
    extended: bool = False

    @classmethod
    def of(cls, cfg: RunConfig, run_dir: Path, scenario, resume: bool = False, extended: bool = False) -> Prepared:
        """A run whose scenario is built here (the in-process engine; tenants)."""
        from edgefm.fl.outline import outline

        return cls(cfg, run_dir, outline(scenario), scenario, resume, extended)


def _config(source: str | Path | RunConfig | dict | None, overrides: list[str]) -> RunConfig:
    if isinstance(source, RunConfig):
        return config.loads(config.dump(source), overrides) if overrides else source
    if isinstance(source, dict):
        return config.loads(config.yaml.safe_dump(source, sort_keys=False), overrides)  # tier order matters
    return config.load(Path(source) if source is not None else None, overrides)


def prepare(
    source: str | Path | RunConfig | dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    resume: str | Path | None = None,
    name: str | None = None,
) -> Prepared:
    """Check everything that can fail and build the scenario (``engine=flower``: in a child
    process, see ``fl/outline.py``). ``source``: a YAML path, a RunConfig, a dict, or None (the
    defaults). ``resume``: a run folder to finish (``overrides`` may then only raise ``rounds``,
    which extends it). Without ``out`` the run goes to ``runs/<name>-<algorithm>-seed<seed>-<time>``
    (name: the config file's stem, else run)."""
    overrides = list(overrides)
    if resume is None:
        cfg = _config(source, overrides)  # a bad config fails before torch is even imported
    from edgefm.fl import checkpoint

    if resume is not None:
        run_dir = Path(resume)
        cfg = checkpoint.run_config(run_dir, "--resume")
        if overrides:
            cfg = _extended(run_dir, cfg, overrides)
    else:
        stem = name or (Path(source).stem if isinstance(source, str | Path) else "run")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(out) if out else Path("runs") / f"{stem}-{cfg.algorithm.name}-seed{cfg.seed}-{stamp}"
        if run_dir.exists() and not run_dir.is_dir() or any(p.is_file() for p in run_dir.parents):
            raise EdgefmError(f"--out {str(run_dir)!r}: a file is in the way; expected a folder path")
        if checkpoint.exists(run_dir):
            raise EdgefmError(
                f"--out {str(run_dir)!r} already holds a run; expected a new folder (or use --resume {run_dir})"
            )
    resumed, extended = resume is not None, bool(overrides) and resume is not None
    if cfg.engine == "flower":
        from edgefm.fl.outline import preflight

        return Prepared(cfg, run_dir, preflight(cfg), None, resumed, extended)
    from edgefm.fl.scenario import build

    return Prepared.of(cfg, run_dir, build(cfg), resumed, extended)


def _extended(run_dir: Path, cfg: RunConfig, overrides: list[str]) -> RunConfig:
    from edgefm.fl import checkpoint

    keys = sorted({o.split("=", 1)[0].strip() for o in overrides} - {"rounds"})
    if keys:
        raise EdgefmError(
            f"--set {keys[0]} with --resume: only rounds=N (to extend the run); a resumed run keeps the rest of its saved config"
        )
    new = config.loads(config.dump(cfg), overrides)
    done = checkpoint.meta(run_dir).round
    if new.rounds < done:
        raise EdgefmError(f"rounds: {new.rounds}; the run has already finished {done} rounds; expected at least {done}")
    return new


def execute(prepared: Prepared, callbacks=None) -> Run:
    """Train a prepared run into its folder and write its summary and report. ``callbacks``
    (``fl.events.Callbacks``) see every round, and their ``should_stop`` may end it early."""
    from edgefm.fl import tracking

    p, cfg, run_dir = prepared, prepared.cfg, prepared.dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if not p.resume:
        (run_dir / "config.yaml").write_text(config.dump(cfg))
        if p.scenario is not None:  # to use the models outside edgefm (a Flower run's ServerApp saves it)
            p.scenario.workbench.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
        for stale in ("metrics.jsonl", "clients.jsonl", "evals.jsonl", "tracking.json"):
            (run_dir / stale).unlink(missing_ok=True)
    elif p.extended:
        (run_dir / "config.yaml").write_text(config.dump(cfg))  # the extended run resumes as such later
    tracker = tracking.attach(cfg, run_dir, callbacks)
    callbacks = tracker or callbacks
    if cfg.engine == "flower":
        try:
            from edgefm.fl.flower_sim import run_simulation
        except ImportError:
            raise EdgefmError("engine=flower needs Flower: pip install -c constraints.txt -e '.[flower]'") from None
        run_simulation(cfg, run_dir, callbacks, resume=p.resume, outline=p.outline)
    else:
        from edgefm.fl.simulation import Engine

        Engine(p.scenario, callbacks).run(run_dir, resume=p.resume)
    from edgefm.report.html import finish_run

    finish_run(run_dir, p.outline)
    if tracker is not None:
        tracker.close()
    return Run(run_dir)


def parameter_counts(prepared: Prepared) -> dict[str, int]:
    return dict(prepared.outline.parameters)


def train(
    source: str | Path | RunConfig | dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks=None,
) -> Run:
    """``edgefm train``: prepare, then execute. Returns the finished :class:`Run`."""
    return execute(prepare(source, overrides, out, resume), callbacks)


@dataclass(frozen=True)
class Robustness:
    """What ``robust`` measured and where it wrote it."""

    path: Path
    result: dict[str, Any]

    @property
    def table(self):
        """One row per suite (and perturbation): n, accuracy, attack success rate, macro-F1, drop."""
        import pandas as pd

        return pd.DataFrame(self.result["results"])


def robust(
    run: str | Path | None = None,
    model: str | Path | None = None,
    zero_shot: bool = False,
    suites: list[str] = ("advglue-sst2", "sst2", "flipkart"),
    perturbations: list[str] = (),
    seed: int = 0,
    limit: int | None = None,
    out: str | Path | None = None,
    predictions: str | Path | None = None,
) -> Robustness:
    """``edgefm robust``: judge a run, a model folder, a file of answers or the zero-shot baseline; writes
    robustness.json beside the run (else under runs/, or to ``out``) and adds a section to the
    run's report."""
    from edgefm.market import jsonio
    from edgefm.robustness import runner

    if out is not None:
        jsonio.check_path(out)  # before minutes of judging
    chosen = [x for x in (run, model, predictions) if x is not None] + (["zero-shot"] if zero_shot else [])
    if len(chosen) != 1:
        raise EdgefmError("give exactly one of --run RUN_DIR, --model DIR, --predictions FILE or --zero-shot")
    result = runner.run(
        run=Path(run) if run else None, model=Path(model) if model else None, zero_shot=zero_shot,
        suites=list(suites), perturbations=list(perturbations), seed=seed, limit=limit,
        predictions=Path(predictions) if predictions else None,
    )  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default = (
        Path(run) / "robustness.json"
        if run
        else Path("runs") / f"robust-{Path(chosen[0]).name}-{stamp}" / "robustness.json"
    )
    target = Path(out) if out else default
    jsonio.write_json(target, result)
    if run:
        from edgefm.report.html import write_report

        write_report([Path(run)], Path(run) / "report.html")
    return Robustness(target, result)

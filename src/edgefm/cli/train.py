"""Training commands: ``demo``, ``train`` (in-process or on Flower, fresh or resumed) and ``report``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edgefm import EdgefmError
from edgefm.cli.app import SET_HELP, app, console, fail, overrides


class RichProgress:
    """Renders engine events as progress bars: rounds, and clients within the round."""

    def __init__(self, progress: Progress, stop: Callable[[dict], bool] | None = None):
        self.p = progress
        self.stop = stop
        self.rounds_task: Any = None
        self.clients_task: Any = None

    def on_run_start(self, rounds: int, start_round: int) -> None:
        self.rounds_task = self.p.add_task("rounds", total=rounds, completed=start_round - 1)
        self.clients_task = self.p.add_task("clients", total=1, visible=False)

    def on_round_start(self, rnd: int, clients: list[int]) -> None:
        self.p.reset(self.clients_task, total=len(clients), visible=True, description=f"round {rnd} clients")

    def on_client_end(self, rnd: int, client_id: int, row: dict) -> None:
        self.p.advance(self.clients_task)

    def on_round_end(self, summary: dict) -> None:
        self.p.advance(self.rounds_task)
        acc, log_ppl = summary.get("accuracy"), summary.get("log_ppl")
        if log_ppl is not None:
            tail = f"log-ppl {log_ppl:.4f} (ppl {summary['ppl']:.1f}, token acc {summary['token_acc']:.4f})"
        else:
            tail = f"acc {acc:.4f}" if acc is not None else "no eval"
        self.p.console.print(
            f"round {summary['round']:>3}: {tail}  up {summary['bytes_up'] / 1e6:.2f} MB  "
            f"sim {summary['sim_round_s']:.1f} s  wall {summary['wall_s']:.1f} s",
            highlight=False,
        )

    def should_stop(self, summary: dict) -> bool:
        return self.stop is not None and self.stop(summary)


def _run(cfg_path: Path | None, overrides: list[str], out: Path | None, resume: Path | None, name: str) -> Path:
    from edgefm import api

    with console.status("loading data and model"):  # every check that can fail happens before anything is written
        prepared = api.prepare(cfg_path, overrides, out, resume, name=cfg_path.stem if cfg_path else name)
    run = _execute(prepared)
    _print_summary(run.summary, run.dir)
    return run.dir


def _execute(prepared, stop: Callable[[dict], bool] | None = None):
    """Train a prepared run with progress bars (``api.execute``); Ctrl-C names the resume command."""
    from edgefm import api

    cfg, run_dir, counts = prepared.cfg, prepared.dir, api.parameter_counts(prepared)
    console.print(
        f"[bold]{cfg.algorithm.name}[/] on {prepared.outline.dataset} with {cfg.model.name} "
        f"({counts['trainable']:,} of {counts['total']:,} parameters trainable), {prepared.outline.clients} "
        f"client(s), {cfg.rounds} rounds, seed {cfg.seed} -> {run_dir}",
        highlight=False,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    columns += [TextColumn("left"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        try:
            return api.execute(prepared, RichProgress(progress, stop))
        except KeyboardInterrupt:  # the checkpoint holds every finished round
            progress.stop()
            console.print(f"interrupted: continue from the last finished round with  edgefm train --resume {run_dir}")
            raise typer.Exit(code=130) from None


def _print_summary(s: dict, run_dir: Path) -> None:
    table = Table(title=f"{s['name']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if s.get("task") == "lm":
        rows = [
            ("final test log-perplexity", s["final_log_ppl"]),
            ("final test perplexity", s["final_ppl"]),
            ("final test token accuracy", s["final_token_acc"]),
            ("mean client log-perplexity", s["client_log_ppl_mean"]),
            ("worst client log-perplexity", s["client_log_ppl_max"]),
        ]
    else:
        rows = [
            ("final global accuracy", s["final_accuracy"]),
            ("mean client accuracy", s["client_acc_mean"]),
            ("worst client accuracy", s["client_acc_min"]),
        ]
    rows += [
        ("trainable parameters (%)", s.get("trainable_percent")),
        ("upload MB per client per round", s["upload_mb_per_client_round"]),
        ("total MB up / down", f"{s['bytes_up'] / 1e6:.2f} / {s['bytes_down'] / 1e6:.2f}"),
        ("device GFLOPs per round", s["flops_per_round"] / 1e9),
        ("simulated seconds per round", s["sim_seconds_per_round"]),
        ("energy (J)", s["joules"]),
        ("wall seconds", s["wall_seconds"]),
    ]
    for label, value in rows:
        table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"report: {run_dir / 'report.html'}", highlight=False)


@app.command()
def demo(
    extra: list[str] | None = typer.Argument(None, metavar="[KEY=VALUE]...", help="More overrides."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: runs/demo-...)."),
) -> None:
    """Federated LoRA fine-tuning of MiniLM on SST-2 over 10 heterogeneous devices (configs/demo.yaml)."""
    try:
        from edgefm.config import DEMO

        _run(None, [*DEMO, *overrides(set_, extra)], out, None, "demo")
    except EdgefmError as exc:
        fail(str(exc))


@app.command()
def train(
    config_file: str | None = typer.Argument(None, metavar="CONFIG", help="YAML config (defaults if omitted)."),
    extra: list[str] | None = typer.Argument(None, metavar="[KEY=VALUE]...", help="More overrides."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: runs/<config>-<algorithm>-...)."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Finish an interrupted run from its folder (with --set rounds=N: extend it)."
    ),
    engine: str | None = typer.Option(None, "--engine", help="inprocess (default) or flower (Flower simulation)."),
) -> None:
    """Train with a config: federated, local-only or centralized, as the config says."""
    extra = list(extra or [])
    if engine is not None:
        extra.append(f"engine={engine}")
    if config_file is not None and "=" in config_file and not Path(config_file).exists():
        extra.insert(0, config_file)  # `train --set a=1 b=2` with no config: b=2 landed here
        config_file = None
    if config_file is None and not set_ and not extra and resume is None:
        fail(
            "no config: expected a config file (e.g. edgefm train configs/demo.yaml) or --set overrides; edgefm demo runs the demo"
        )
    from edgefm.fl import tenants

    try:
        if tenants.is_tenants_file(Path(config_file) if config_file else None):
            if resume is not None:
                fail("--resume: resume each tenant's run folder on its own")
            _run_tenants(Path(config_file), overrides(set_, extra), out)
            return
        _run(Path(config_file) if config_file else None, overrides(set_, extra), out, resume, "train")
    except EdgefmError as exc:
        fail(str(exc))


def _run_tenants(path: Path, sets: list[str], out: Path | None) -> None:
    """Several tenants over one device population and one edge server (``fl/tenants.py``)."""
    from edgefm import api
    from edgefm.fl import tenants
    from edgefm.fl.scenario import build
    from edgefm.report.html import headline, read_run

    chosen, population, seed = tenants.load(path, sets)
    out = out or Path("runs") / f"{path.stem}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    tenants.check_free(out, chosen)
    with console.status("loading data and models"):
        scenarios = [build(t.cfg, tenants.devices_of(t, population), owners=t.devices) for t in chosen]
    last = tenants.share_edge([sc.strategy for sc in scenarios])
    results = []
    for k, (t, sc) in enumerate(zip(chosen, scenarios, strict=True)):
        console.print(f"[bold]tenant {t.name}[/]: devices {t.devices}", highlight=False)
        run = read_run(_execute(api.Prepared.of(t.cfg, out / t.name, sc), stop=tenants.finished(t)).dir)
        last[k] = len(run["rounds"])
        results.append(tenants.outcome(t, run["rounds"], headline(run)[0]))
    (out / "tenants.json").write_text(json.dumps({"seed": seed, "tenants": results}, indent=2))
    from edgefm.report.tenants import write_tenants_report

    page = write_tenants_report(out, results)
    table = Table(title=f"{len(chosen)} tenants, {len(population)} devices, one edge server")
    for col in ("tenant", "metric", "final", "target", "reached at (sim s)", "deadline", "met"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["name"],
            r["metric"],
            f"{r['final']:.4f}",
            f"{r['target']:g}",
            "-" if r["target_seconds"] is None else f"{r['target_seconds']:.1f} (round {r['target_round']})",
            f"{r['deadline']:g}",
            "yes" if r["deadline_met"] else "no",
        )
    console.print(table)
    console.print(f"tenants: {out / 'tenants.json'}; page: {page}", highlight=False)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="One run, or several to compare."),
    out: Path | None = typer.Option(
        None, "--out", help="HTML file (default: RUN_DIR/report.html, or runs/compare-<time>/compare.html for several)."
    ),
) -> None:
    """Write one self-contained HTML page for a run, or comparing several."""
    from edgefm.report.html import write_report

    try:
        # never into the current folder: beside the run, or a folder of its own under runs/
        compare = Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}" / "compare.html"
        target = out or (run_dirs[0] / "report.html" if len(run_dirs) == 1 else compare)
        path = write_report(run_dirs, target)
    except EdgefmError as exc:
        fail(str(exc))
    console.print(f"report: {path}", highlight=False)

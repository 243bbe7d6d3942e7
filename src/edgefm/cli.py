"""The ``edgefm`` command line (typer + rich). The only module, with ``report/``, that talks to a person.

Every user error (bad config value, missing file, unknown name) is one line on stderr and exit
code 2, with no traceback and nothing written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: weights ship in packages
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from edgefm import EdgefmError, __version__  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Foundation models at the network edge.")
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgefm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log rejected and dropped updates."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


class RichProgress:
    """Renders engine events as progress bars: rounds, and clients within the round."""

    def __init__(self, progress: Progress):
        self.p = progress
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
        acc = summary.get("accuracy")
        tail = f"acc {acc:.4f}" if acc is not None else "no eval"
        self.p.console.print(
            f"round {summary['round']:>3}: {tail}  up {summary['bytes_up'] / 1e6:.2f} MB  "
            f"sim {summary['sim_round_s']:.1f} s  wall {summary['wall_s']:.1f} s",
            highlight=False,
        )


def _run(cfg_path: Path | None, overrides: list[str], out: Path | None, resume: Path | None, name: str) -> Path:
    from edgefm import config
    from edgefm.fl.scenario import build

    if resume is not None:
        from edgefm.fl import checkpoint

        try:
            cfg = checkpoint.run_config(resume, "--resume")
        except EdgefmError as exc:
            fail(str(exc))
        if overrides:
            fail("--set cannot be combined with --resume: a resumed run keeps its saved config")
        run_dir = resume
    else:
        cfg = config.load(cfg_path, overrides)
        stem = cfg_path.stem if cfg_path else name
        run_dir = out or Path("runs") / f"{stem}-{cfg.algorithm.name}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / "checkpoint.pt").exists():
            fail(f"--out {str(run_dir)!r} already holds a run; expected a new folder (or use --resume {run_dir})")
    with console.status("loading data and model"):
        scenario = build(cfg)  # every check that can fail happens before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        (run_dir / "config.yaml").write_text(config.dump(cfg))
        for stale in ("metrics.jsonl", "clients.jsonl"):
            (run_dir / stale).unlink(missing_ok=True)
    from edgefm.fl.simulation import Engine
    from edgefm.report.html import build_summary, read_run, write_report

    counts = {
        "total": scenario.workbench.parameter_counts()["total"],
        "trainable": scenario.strategy.trainable_parameters(scenario.workbench),
    }
    console.print(
        f"[bold]{cfg.algorithm.name}[/] on {scenario.bundle.name} with {cfg.model.name} "
        f"({counts['trainable']:,} of {counts['total']:,} parameters trainable), {len(scenario.clients)} client(s), "
        f"{cfg.rounds} rounds, seed {cfg.seed} -> {run_dir}",
        highlight=False,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        if cfg.engine == "flower":
            if not scenario.strategy.flower_ready:
                fail(f"algorithm {cfg.algorithm.name!r} does not run on the Flower engine yet; use engine=inprocess")
            try:
                from edgefm.fl.flower import run_simulation
            except ImportError:
                fail("engine=flower needs Flower: pip install -c constraints.txt -e '.[flower]'")

            run_simulation(cfg, run_dir, RichProgress(progress), resume=resume is not None)
        else:
            Engine(scenario, RichProgress(progress)).run(run_dir, resume=resume is not None)
    run = read_run(run_dir)
    extra = {
        "parameters_total": counts["total"],
        "parameters_trainable": counts["trainable"],
        "trainable_percent": 100.0 * counts["trainable"] / counts["total"],
        "devices": [d.to_dict() for d in scenario.devices],
    }
    summary = build_summary(run, extra)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    run["summary"] = summary
    write_report([run_dir], run_dir / "report.html")
    _print_summary(summary, run_dir)
    return run_dir


def _print_summary(s: dict, run_dir: Path) -> None:
    table = Table(title=f"{s['name']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("final global accuracy", s["final_accuracy"]),
        ("mean client accuracy", s["client_acc_mean"]),
        ("worst client accuracy", s["client_acc_min"]),
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


SET_HELP = "Override a config value: --set key=value (dotted keys, repeatable), e.g. --set rounds=3."


def _overrides(set_: list[str], extra: list[str] | None) -> list[str]:
    """``--set a=1 b=2`` reaches us as one option value plus trailing arguments: take both."""
    for item in extra or []:
        if "=" not in item:
            fail(f"unexpected argument {item!r}; expected key=value overrides (e.g. rounds=3)")
    return [*set_, *(extra or [])]


@app.command()
def demo(
    extra: list[str] | None = typer.Argument(None, metavar="[KEY=VALUE]...", help="More overrides."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: runs/demo-...)."),
) -> None:
    """Federated LoRA fine-tuning of MiniLM on SST-2 over 10 heterogeneous devices (configs/demo.yaml)."""
    try:
        _run(None, _overrides(set_, extra), out, None, "demo")
    except EdgefmError as exc:
        fail(str(exc))


@app.command()
def train(
    config_file: str | None = typer.Argument(None, metavar="CONFIG", help="YAML config (defaults if omitted)."),
    extra: list[str] | None = typer.Argument(None, metavar="[KEY=VALUE]...", help="More overrides."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: runs/<config>-<algorithm>-...)."),
    resume: Path | None = typer.Option(None, "--resume", help="Finish an interrupted run from its folder."),
    engine: str | None = typer.Option(None, "--engine", help="inprocess (default) or flower (Flower simulation)."),
) -> None:
    """Train with a config: federated, local-only or centralized, as the config says."""
    extra = list(extra or [])
    if engine is not None:
        extra.append(f"engine={engine}")
    if config_file is not None and "=" in config_file and not Path(config_file).exists():
        extra.insert(0, config_file)  # `train --set a=1 b=2` with no config: b=2 landed here
        config_file = None
    try:
        _run(Path(config_file) if config_file else None, _overrides(set_, extra), out, resume, "train")
    except EdgefmError as exc:
        fail(str(exc))


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="One run, or several to compare."),
    out: Path | None = typer.Option(None, "--out", help="HTML file (default: RUN_DIR/report.html or compare.html)."),
) -> None:
    """Write one self-contained HTML page for a run, or comparing several."""
    from edgefm.report.html import write_report

    try:
        target = out or (run_dirs[0] / "report.html" if len(run_dirs) == 1 else Path("compare.html"))
        path = write_report(run_dirs, target)
    except EdgefmError as exc:
        fail(str(exc))
    console.print(f"report: {path}", highlight=False)


@app.command()
def robust(
    run: Path | None = typer.Option(None, "--run", help="A run folder from edgefm train."),
    model: Path | None = typer.Option(None, "--model", help="A local transformers sequence-classification folder."),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="The zero-shot MiniLM embedding classifier."),
    suite: str = typer.Option("advglue-sst2,sst2,flipkart", "--suite", help="Comma-separated suites (or anli:PATH)."),
    perturb: str = typer.Option("", "--perturb", help="Also perturb each suite: typo,synonym,distract."),
    seed: int = typer.Option(0, "--seed", help="Seed of the perturbations."),
    limit: int | None = typer.Option(None, "--limit", help="Judge only the first N examples of each suite."),
    out: Path | None = typer.Option(None, "--out", help="robustness.json (default: in the run folder, or ./)."),
) -> None:
    """Adversarial and out-of-distribution evaluation; adds a section to the run's report."""
    from edgefm.robustness import runner

    chosen = [x for x in (run, model) if x is not None] + ([Path("zero-shot")] if zero_shot else [])
    if len(chosen) != 1:
        fail("give exactly one of --run RUN_DIR, --model DIR or --zero-shot")
    try:
        result = runner.run(
            run=run,
            model=model,
            zero_shot=zero_shot,
            suites=[x for x in suite.split(",") if x],
            perturbations=[x for x in perturb.split(",") if x],
            seed=seed,
            limit=limit,
        )
    except EdgefmError as exc:
        fail(str(exc))
    target = out or ((run / "robustness.json") if run else Path("robustness.json"))
    _write_json(target, result)
    table = Table(title=f"robustness of {result['model']}")
    for col in ("suite", "n", "accuracy", "ASR", "macro-F1", "drop from clean"):
        table.add_column(col, justify="right")
    for r in result["results"]:
        if "skipped" in r:
            table.add_row(r["suite"], "—", "skipped", "", "", r["skipped"][:40])
            continue
        asr = r.get("attack_success_rate")
        drop = r.get("drop_from_clean")
        table.add_row(
            r["suite"],
            str(r["n"]),
            f"{r['accuracy']:.4f}",
            "" if asr is None else f"{asr:.1f}",
            f"{r['macro_f1']:.4f}",
            "" if drop is None else f"{drop:.1f}",
        )
    console.print(table)
    if run is not None:
        from edgefm.report.html import write_report

        write_report([run], run / "report.html")
        console.print(f"report: {run / 'report.html'} (robustness section added)", highlight=False)
    console.print(f"robustness: {target}", highlight=False)


market_app = typer.Typer(no_args_is_help=True, help="Markets: pricing, incentives and auctions (numpy only).")
app.add_typer(market_app, name="market")


def _parse_pair(text: str, option: str, names: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 0 for v in values):
        fail(f"{option} {text!r}: expected {names} as non-negative integers, e.g. 1000,4")
    return values


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)  # never a half-written result


@market_app.command("lmaas")
def market_lmaas(
    instance: Path | None = typer.Option(
        None, "--instance", help="Instance JSON to solve (or to write with --generate)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Result JSON: prices, choices, durations, profits."),
    generate: str | None = typer.Option(None, "--generate", help="N_CUSTOMERS,N_MODELS: write a random instance."),
    seed: int = typer.Option(0, "--seed", help="Seed for --generate."),
) -> None:
    """Large-Model-as-a-Service pricing: IMP prices for the seller, RSR choices for customers."""
    import numpy as np

    from edgefm.market import lmaas

    try:
        if generate is not None:
            if instance is None:
                fail("--generate needs --instance FILE.json to write the instance to")
            n, m = _parse_pair(generate, "--generate", "N_CUSTOMERS,N_MODELS")
            if m < 1:
                fail(f"--generate {generate!r}: expected at least one model")
            inst = lmaas.generate(n, m, np.random.default_rng(seed))
            _write_json(instance, inst.to_dict())
            console.print(f"instance: {instance} ({n} customers, {m} models, seed {seed})", highlight=False)
            if out is None:
                return
        elif instance is None:
            fail("give --instance FILE.json (or --generate N_CUSTOMERS,N_MODELS --instance FILE.json)")
        inst = lmaas.Instance.load(instance)
        result = lmaas.solve(inst)
    except EdgefmError as exc:
        fail(str(exc))
    renting = sum(c >= 0 for c in result["choices"])
    table = Table(title=f"LMaaS: {inst.n_customers} customers, {inst.n_models} models")
    for col in ("model", "accuracy", "cost/h", "price/h", "customers"):
        table.add_column(col, justify="right")
    for j in range(inst.n_models):
        table.add_row(
            str(j),
            f"{inst.accuracy[j]:.3f}",
            f"{inst.cost[j]:.3f}",
            f"{result['prices'][j]:.3f}",
            str(result["choices"].count(j)),
        )
    console.print(table)
    console.print(
        f"seller profit {result['seller_profit']:.4f}; {renting} of {inst.n_customers} customers rent; "
        f"{result['iterations']} price moves in {result['solve_seconds']:.3f} s",
        highlight=False,
    )
    if out is not None:
        _write_json(out, result)
        console.print(f"result: {out}", highlight=False)


@market_app.command("aeria")
def market_aeria(
    instance: Path | None = typer.Option(
        None, "--instance", help="Instance JSON to run (or to write with --generate)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Outcome JSON: winners, payments, plans, revenue."),
    seed: int = typer.Option(0, "--seed", help="Seed of the auction's randomness (and of --generate)."),
    variant: str = typer.Option("threshold", "--variant", help="threshold (universally truthful) or consensus."),
    generate: int | None = typer.Option(None, "--generate", help="N_USERS: write a random instance."),
    workload: str = typer.Option("resnet50", "--workload", help="Workload for --generate (see docs/aeria.md)."),
) -> None:
    """AERIA auction for edge inference: partitioning, consensus target, cost sharing."""
    import numpy as np

    from edgefm.market import aeria

    try:
        if generate is not None:
            if instance is None:
                fail("--generate needs --instance FILE.json to write the instance to")
            if generate < 0:
                fail(f"--generate {generate}: expected a non-negative number of users")
            inst = aeria.generate(generate, workload, np.random.default_rng(seed))
            _write_json(instance, inst.to_dict())
            console.print(f"instance: {instance} ({generate} users, {workload}, seed {seed})", highlight=False)
            if out is None:
                return
        elif instance is None:
            fail("give --instance FILE.json (or --generate N_USERS --workload NAME --instance FILE.json)")
        inst = aeria.Instance.load(instance)
        outcome = aeria.run_auction(inst, seed, variant)
    except EdgefmError as exc:
        fail(str(exc))
    console.print(
        f"{len(outcome.winners)} of {inst.n_users} users win ({outcome.admitted} admitted); revenue "
        f"{outcome.revenue:.4f} (F2 {outcome.f2:.4f}, target {outcome.target:.4f}); EIP paid "
        f"{outcome.eip_payment:.4f}; {outcome.seconds * 1e3:.1f} ms",
        highlight=False,
    )
    if out is not None:
        _write_json(out, outcome.to_dict())
        console.print(f"outcome: {out}", highlight=False)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A finished raffm run folder."),
    budget: list[str] = typer.Option(..., "--budget", help="A device tier (e.g. low_end_phone) or full; repeatable."),
    out: Path | None = typer.Option(None, "--out", help="Also write the table as JSON here."),
    spp: bool = typer.Option(False, "--spp", help="Reorder by salience before cutting (a model trained without SPP)."),
) -> None:
    """Cut a trained RaFFM model to a device's budget, without retraining: accuracy, size, FLOPs."""
    from edgefm.algorithms.raffm import export_subnetworks

    try:
        with console.status("cutting subnetworks"):
            result = export_subnetworks(run_dir, budget, spp=spp)
    except EdgefmError as exc:
        fail(str(exc))
    table = Table(title=f"{run_dir.name}: subnetworks on {result['dataset']}")
    for col in ("budget", "FFN width", "Q/K width", "parameters", "MB", "GFLOPs/example", "accuracy", "fits"):
        table.add_column(col, justify="left" if col == "budget" else "right")
    for r in result["subnetworks"]:
        table.add_row(
            r["budget"],
            f"{sum(r['ffn_width']) / len(r['ffn_width']):.0f}",
            f"{sum(r['qk_width']) / len(r['qk_width']):.0f}",
            f"{r['params']:,}",
            f"{r['size_mb']:.1f}",
            f"{r['flops_per_example'] / 1e9:.3f}",
            f"{r['accuracy']:.4f}",
            "yes" if r["fits"] else "no",
        )
    console.print(table)
    if out is not None:
        _write_json(out, result)
        console.print(f"table: {out}", highlight=False)


@app.command()
def experts(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A finished fedms run folder (experts=mixture)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the breakdown as JSON here."),
) -> None:
    """Per client, a FedMS mixture against its own experts: global, local, the better of the two, the gate."""
    from edgefm.algorithms.fedms import diagnose_run

    try:
        with console.status("evaluating the experts"):
            result = diagnose_run(run_dir)
    except EdgefmError as exc:
        fail(str(exc))
    table = Table(title=f"{run_dir.name}: experts on each client's local test split (round {result['round']})")
    cols = ("acc_global", "acc_local", "oracle", "acc_mixture", "gate_local")
    for col in ("client", "examples", "global expert", "local expert", "better of two", "mixture", "gate w_local"):
        table.add_column(col, justify="right")
    for r in result["clients"]:
        table.add_row(str(r["client"]), str(r["n_test"]), *(f"{r[c]:.3f}" for c in cols))
    for label in ("mean", "worst"):
        table.add_row(label, "", *(f"{result[label][c]:.3f}" for c in cols))
    console.print(table)
    if out is not None:
        _write_json(out, result)
        console.print(f"breakdown: {out}", highlight=False)


def run() -> None:  # pragma: no cover - console entry for `python -m edgefm`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""Commands on a finished run folder, for every method alike (the Strategy decides what each
means): ``export`` (the models a run ended with, cut to device budgets) and ``experts`` (a
mixture of experts against its own experts, per client)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgefm import EdgefmError
from edgefm.cli.app import app, console, fail, seed_option, write_json

STANDARD = ("model", "budget", "params", "size_mb", "flops_per_example")


def _cell(value) -> str | None:
    """A method's own fact about an exported model, as a table cell (None: JSON only)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return f"{sum(value) / len(value):g}"  # e.g. per-layer widths: their mean
    return None


@app.command()
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run folder from edgefm train."),
    budget: list[str] = typer.Option(
        ["full"],
        "--budget",
        help="full (as trained), a device tier such as low_end_phone, or a width such as 50% (methods with "
        "elastic models); repeatable.",
    ),
    client: list[int] = typer.Option(
        [], "--client", help="Only this client's own model (runs with per-client models); repeatable."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="A folder: each model as a save_pretrained folder DIR/MODEL-BUDGET (transformers loads it) and "
        "the table as DIR/models.json. A path ending in .json: the table only.",
    ),
    adapter: bool = typer.Option(
        False, "--adapter", help="Keep LoRA apart: DIR/MODEL-BUDGET/base plus a peft adapter folder (else merged)."
    ),
    spp: str = typer.Option(
        "",
        "--spp",
        help="Order by salience before cutting (RaFFM): weight (the paper's SPP) or activation (statistics "
        "of the clients' own data); default: as trained.",
    ),
) -> None:
    """The models a run ended with, cut to device budgets without retraining: accuracy, size, FLOPs;
    with --out DIR, written as folders transformers and peft load."""
    from edgefm.fl import trained

    table_only = out is None or out.suffix == ".json"
    if out is not None and not table_only and (out.is_file() or any(p.is_file() for p in out.parents)):
        fail(f"--out {str(out)!r}: a file is in the way; expected a folder (or a .json path for the table)")
    if adapter and table_only:
        fail("--adapter: writes model folders; expected --out DIR")
    try:
        with console.status("loading the run"):
            run = trained.open_run(run_dir)
        with console.status("cutting, measuring and writing the models" if not table_only else "cutting the models"):
            result = trained.export(
                run, budget, client or None, reorder=spp, save_to=None if table_only else out, adapter=adapter
            )
    except EdgefmError as exc:
        fail(str(exc))
    if out is not None and not table_only:
        out = out / "models.json"
    rows = result["models"]
    # the task's figures (accuracy; log-perplexity...) and whatever else the method says about its
    # models (e.g. RaFFM's widths), where it fits a cell
    extra = [k for k in rows[0] if k not in STANDARD and all(_cell(r.get(k)) is not None for r in rows)]
    table = Table(title=f"{run_dir.name} ({result['algorithm']}): exported models on {result['dataset']}")
    for col in ["model", "budget", "parameters", "MB", "GFLOPs/example", *extra]:
        table.add_column(col, justify="left" if col in ("model", "budget") else "right")
    for r in rows:
        cells = [r["model"], r["budget"], f"{r['params']:,}", f"{r['size_mb']:.1f}"]
        cells += [f"{r['flops_per_example'] / 1e9:.3f}", *(_cell(r[k]) for k in extra)]
        table.add_row(*cells)
    console.print(table)
    if out is not None:
        write_json(out, result)
        console.print(f"table: {out}", highlight=False)


@app.command()
def experts(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run of a mixture-of-experts method (fedms)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the breakdown as JSON here."),
) -> None:
    """Per client, a mixture against its own experts: global, local, the better of the two, the gate."""
    from edgefm.fl import trained

    try:
        with console.status("evaluating the experts"):
            result = trained.expert_breakdown(trained.open_run(run_dir))
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
        write_json(out, result)
        console.print(f"breakdown: {out}", highlight=False)


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A language-model run (task lm)."),
    prompt: str = typer.Option(..., "--prompt", help="The text to continue."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens", help="Tokens to generate."),
    client: int | None = typer.Option(None, "--client", help="This client's model (default: the run's first)."),
    seed: int = typer.Option(
        0, "--seed", callback=seed_option, help="Seed of the sampling: the same seed, the same text."
    ),
) -> None:
    """Continue a prompt with a trained language model, to see what it learned."""
    from edgefm.fl import trained

    if max_new_tokens < 1:
        fail(f"--max-new-tokens {max_new_tokens}: expected at least 1")
    try:
        with console.status("loading the run"):
            run = trained.open_run(run_dir)
        result = trained.generate(run, prompt, max_new_tokens, client, seed)
    except EdgefmError as exc:
        fail(str(exc))
    console.print(f"[dim]{result['model']}, seed {seed}:[/] [bold]{prompt}[/]{result['continuation']}", highlight=False)

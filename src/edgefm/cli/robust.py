"""``edgefm robust``: adversarial and out-of-distribution evaluation of a run, a model folder or zero-shot MiniLM."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgefm import EdgefmError
from edgefm.cli.app import app, console, fail, seed_option


@app.command()
def robust(
    run: Path | None = typer.Option(None, "--run", help="A run folder from edgefm train."),
    model: Path | None = typer.Option(None, "--model", help="A local transformers sequence-classification folder."),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="The zero-shot MiniLM embedding classifier."),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="A CSV or JSONL of a model's answers (idx, answer) to one --suite."
    ),
    suite: str = typer.Option("advglue-sst2,sst2,flipkart", "--suite", help="Comma-separated suites (or anli:PATH)."),
    perturb: str = typer.Option("", "--perturb", help="Also perturb each suite: typo,synonym,distract."),
    seed: int = typer.Option(0, "--seed", callback=seed_option, help="Seed of the perturbations."),
    limit: int | None = typer.Option(None, "--limit", help="Judge only the first N examples of each suite."),
    out: Path | None = typer.Option(
        None, "--out", help="robustness.json (default: in the run folder, or runs/robust-<model>-<time>/)."
    ),
) -> None:
    """Adversarial and out-of-distribution evaluation; adds a section to the run's report."""
    from edgefm import api

    try:
        judged = api.robust(
            run=run, model=model, zero_shot=zero_shot, predictions=predictions, suites=[x for x in suite.split(",") if x],
            perturbations=[x for x in perturb.split(",") if x], seed=seed, limit=limit, out=out,
        )  # fmt: skip
    except EdgefmError as exc:
        fail(str(exc))
    result, target = judged.result, judged.path
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
        console.print(f"report: {run / 'report.html'} (robustness section added)", highlight=False)
    console.print(f"robustness: {target}", highlight=False)

"""The page of a multi-tenant run (``edgefm train TENANTS.yaml``): one panel per tenant (its
headline metric against simulated seconds, its target and its deadline), the tenants' table,
and a link to each tenant's own report."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from edgefm.report import plots
from edgefm.report.html import headline, img_tag, read_run, table_html, write_page

LABELS = {"accuracy": "accuracy", "log_ppl": "log-perplexity"}


def panels(runs: list[dict[str, Any]], results: list[dict[str, Any]], path: Path) -> Path:
    fig, axes = plots.plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.0), squeeze=False)
    for k, (ax, run, r) in enumerate(zip(axes[0], runs, results, strict=True)):
        metric = headline(run)[0]
        rows = [x for x in run["rounds"] if metric in x]
        ax.plot([x["sim_elapsed_s"] for x in rows], [x[metric] for x in rows], marker="o", color=plots.colour(k))
        ax.axhline(r["target"], ls="--", color="grey", lw=1, label="target")
        ax.axvline(r["deadline"], ls=":", color="k", lw=1, label="deadline")
        ax.set(title=r["name"], xlabel="simulated s", ylabel=LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return plots.save(fig, path)


def write_tenants_report(out: Path, results: list[dict[str, Any]]) -> Path:
    """``out/report.html`` from the tenants' run folders ``out/NAME`` and their outcomes."""
    runs = [read_run(out / r["name"]) for r in results]
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "tenant": f"<a href='{html.escape(r['name'])}/report.html'>{html.escape(r['name'])}</a>",
            "metric": r["metric"],
            "final": r["final"],
            "target": r["target"],
            "reached at": "—"
            if r["target_seconds"] is None
            else f"{r['target_seconds']:.1f} s (round {r['target_round']})",
            "deadline": f"{r['deadline']:g} s",
            "met": "yes" if r["deadline_met"] else "no",
            "devices": len(r["devices"]),
        }
        for r in results
    ]
    table = table_html(rows, list(rows[0]), raw=("tenant",))
    title = f"{len(results)} tenants, one edge server"
    body = [
        f"<h1>edgefm — {html.escape(title)}</h1>",
        "<p>Each tenant's headline metric against its simulated clock; dashed: its target, dotted: its deadline.</p>",
        img_tag(panels(runs, results, out / "plots" / "tenants.png")),
        table,
    ]
    return write_page(out / "report.html", title, body)

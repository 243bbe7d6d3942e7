"""Matplotlib figures of one or several runs (headless: the Agg backend)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Run = dict[str, Any]  # {"name", "rounds": [...], "clients": [...], "summary": {...}}


def _evaluated(run: Run, metric: str) -> list[dict]:
    return [r for r in run["rounds"] if metric in r]


LABELS = {"accuracy": "accuracy", "log_ppl": "log-perplexity (mean token NLL)"}


def metric_per_round(
    runs: list[Run], path: Path, metric: str = "accuracy", client_metric: str = "client_acc_mean"
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        rows = _evaluated(run, metric)
        ax.plot([r["round"] for r in rows], [r[metric] for r in rows], marker="o", label=f"{run['name']} global")
        if rows and client_metric in rows[0]:
            ax.plot(
                [r["round"] for r in rows],
                [r[client_metric] for r in rows],
                ls="--",
                label=f"{run['name']} client mean",
            )
    label = LABELS.get(metric, metric)
    ax.set(xlabel="round", ylabel=label, title=f"{label.split(' (')[0].capitalize()} per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def metric_per_second(runs: list[Run], path: Path, metric: str = "accuracy") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        rows = _evaluated(run, metric)
        ax.plot([r["sim_elapsed_s"] for r in rows], [r[metric] for r in rows], marker="o", label=run["name"])
    label = LABELS.get(metric, metric)
    ax.set(
        xlabel="simulated seconds (slowest device per round)",
        ylabel=label,
        title=f"{label.split(' (')[0].capitalize()} per simulated second",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def bytes_per_round(runs: list[Run], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / (2 * len(runs))
    for k, run in enumerate(runs):
        rounds = [r["round"] for r in run["rounds"]]
        up = [r["bytes_up"] / 1e6 for r in run["rounds"]]
        down = [r["bytes_down"] / 1e6 for r in run["rounds"]]
        off = (2 * k - len(runs)) * width
        ax.bar([x + off for x in rounds], up, width, label=f"{run['name']} up")
        ax.bar([x + off + width for x in rounds], down, width, label=f"{run['name']} down")
    ax.set(xlabel="round", ylabel="MB", title="Bytes up / down per round (all clients)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(fig, path)


def device_costs(run: Run, path: Path) -> Path:
    """Per-device simulated seconds and joules, summed over the run."""
    seconds: dict[int, float] = defaultdict(float)
    joules: dict[int, float] = defaultdict(float)
    tiers: dict[int, str] = {}
    for row in run["clients"]:
        seconds[row["client"]] += row["seconds"]
        joules[row["client"]] += row["joules"]
        tiers[row["client"]] = row["tier"]
    ids = sorted(seconds)
    short = {
        "low_end_phone": "low phone",
        "high_end_phone": "high phone",
        "embedded_gpu": "board",
        "laptop": "laptop",
        "edge_server": "server",
        "datacenter": "datacenter",
    }
    labels = [f"{i} {short.get(tiers[i], tiers[i])}" for i in ids]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.bar(range(len(ids)), [seconds[i] for i in ids], color="tab:blue")
    a1.set(title="Simulated seconds per device", ylabel="s")
    a2.bar(range(len(ids)), [joules[i] for i in ids], color="tab:orange")
    a2.set(title="Energy per device", ylabel="J")
    for ax in (a1, a2):
        ax.set_xticks(range(len(ids)), labels, fontsize=7, rotation=45, ha="right")
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

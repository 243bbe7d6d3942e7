"""Matplotlib figures of one or several runs (headless: the Agg backend). A run keeps its
colour (``run["color"]``) in every figure of a comparison; rounds are whole numbers on every axis."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Run = dict[str, Any]  # {"name", "rounds": [...], "clients": [...], "summary": {...}}


def _evaluated(run: Run, metric: str) -> list[dict]:
    return [r for r in run["rounds"] if metric in r]


LABELS = {"accuracy": "accuracy", "log_ppl": "log-perplexity (mean token NLL)"}
PALETTE = plt.get_cmap("tab10").colors


def colour(k: int) -> tuple:
    """The k-th run's colour, the same in every figure."""
    return PALETTE[k % len(PALETTE)]


def _rounds_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def metric_per_round(
    runs: list[Run], path: Path, metric: str = "accuracy", client_metric: str = "client_acc_mean"
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        rows = _evaluated(run, metric)
        c = run.get("color")
        ax.plot(
            [r["round"] for r in rows], [r[metric] for r in rows], marker="o", color=c, label=f"{run['name']} global"
        )
        if rows and client_metric in rows[0]:
            ax.plot(
                [r["round"] for r in rows],
                [r[client_metric] for r in rows],
                ls="--",
                color=c,
                label=f"{run['name']} client mean",
            )
    label = LABELS.get(metric, metric)
    ax.set(xlabel="round", ylabel=label, title=f"{label.split(' (')[0].capitalize()} per round")
    _rounds_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def metric_per_second(runs: list[Run], path: Path, metric: str = "accuracy") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        rows = _evaluated(run, metric)
        x, y = [r["sim_elapsed_s"] for r in rows], [r[metric] for r in rows]
        ax.plot(x, y, marker="o", color=run.get("color"), label=run["name"])
    label = LABELS.get(metric, metric)
    ax.set(
        xlabel="simulated seconds (slowest device per round)",
        ylabel=label,
        title=f"{label.split(' (')[0].capitalize()} per simulated second",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def bytes_per_round(runs: list[Run], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / (2 * len(runs))
    for k, run in enumerate(runs):
        rounds = [r["round"] for r in run["rounds"]]
        up = [r["bytes_up"] / 1e6 for r in run["rounds"]]
        down = [r["bytes_down"] / 1e6 for r in run["rounds"]]
        off = (2 * k - len(runs)) * width
        c = run.get("color")
        ax.bar([x + off for x in rounds], up, width, color=c, label=f"{run['name']} up")
        ax.bar([x + off + width for x in rounds], down, width, color=c, alpha=0.45, label=f"{run['name']} down")
    ax.set(xlabel="round", ylabel="MB", title="Megabytes up / down per round (all clients)")
    _rounds_axis(ax)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return save(fig, path)


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
    return save(fig, path)


def loss_per_round(runs: list[Run], path: Path) -> Path | None:
    """The clients' mean training loss per round (weighted by their examples); None if no run
    reports one."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    drawn = False
    for run in runs:
        total: dict[int, float] = defaultdict(float)
        weight: dict[int, float] = defaultdict(float)
        for row in run["clients"]:
            loss = row.get("client_train_loss")
            if row.get("status") == "ok" and isinstance(loss, int | float) and loss == loss:
                total[row["round"]] += loss * row["num_examples"]
                weight[row["round"]] += row["num_examples"]
        rounds = sorted(r for r in total if weight[r] > 0)
        if rounds:
            ax.plot(
                rounds, [total[r] / weight[r] for r in rounds], marker="o", color=run.get("color"), label=run["name"]
            )
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="round", ylabel="training loss", title="Clients' training loss per round (example-weighted)")
    _rounds_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def label_mix(mix: list[list[int]], names: list[str], path: Path) -> Path:
    """Each client's training examples per label, stacked (the partition's skew at a glance)."""
    fig, ax = plt.subplots(figsize=(10, 3.2))
    bottom = [0] * len(mix)
    for j, name in enumerate(names):
        heights = [row[j] if j < len(row) else 0 for row in mix]
        ax.bar(range(len(mix)), heights, bottom=bottom, color=colour(j), label=name)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set(xlabel="client", ylabel="training examples", title="Each client's label mix")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, ncol=min(len(names), 6))
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def client_metric(values: dict[int, float], tiers: dict[int, str], path: Path, label: str) -> Path:
    """One bar per client: its own metric at the last evaluation."""
    ids = sorted(values)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.bar(range(len(ids)), [values[i] for i in ids], color="tab:green")
    ax.set_xticks(range(len(ids)), [f"{i} {tiers.get(i, '')}" for i in ids], fontsize=7, rotation=45, ha="right")
    ax.set(ylabel=label, title=f"Each client's {label} on its own test split (last evaluation)")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

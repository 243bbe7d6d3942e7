"""Human units and headers for the report's tables: 7.089e+11 FLOPs reads "709 GFLOPs",
``upload_mb_per_client_round`` reads "Upload / client / round (MB)", and a missing or
non-finite value reads "—", never NaN."""

from __future__ import annotations

import html
import math
from typing import Any


def _scaled(value: float, unit: str, steps: tuple[tuple[float, str], ...]) -> str:
    for factor, prefix in steps:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def flops(v: float) -> str:
    return _scaled(v, "FLOPs", ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")))


def nbytes(v: float) -> str:
    return _scaled(v, "B", ((1e9, "G"), (1e6, "M"), (1e3, "k")))


def seconds(v: float) -> str:
    if abs(v) >= 3600:
        return f"{v / 3600:.3g} h"
    if abs(v) >= 60:
        return f"{v / 60:.3g} min"
    return f"{v:.3g} s"


def joules(v: float) -> str:
    return _scaled(v, "J", ((1e6, "M"), (1e3, "k")))


def dollars(v: float) -> str:
    return f"${v:.3g}" if abs(v) < 1 else f"${v:,.2f}"


def integer(v: float) -> str:
    return f"{int(round(v)):,}"


def ratio(v: float) -> str:
    return f"{v:.3f}"


def plain(v: float) -> str:
    return f"{v:.4g}"


# column -> (header, formatter); columns not listed keep their name and a 4-digit float
COLUMNS: dict[str, tuple[str, Any]] = {
    "name": ("Run", None),
    "algorithm": ("Method", None),
    "dataset": ("Data", None),
    "model": ("Model", None),
    "seed": ("Seed", None),
    "rounds": ("Rounds", integer),
    "round": ("Round", integer),
    "final_accuracy": ("Accuracy", ratio),
    "accuracy": ("Accuracy", ratio),
    "client_acc_mean": ("Client acc. mean", ratio),
    "client_acc_min": ("Client acc. min", ratio),
    "final_log_ppl": ("Log-perplexity", ratio),
    "log_ppl": ("Log-perplexity", ratio),
    "final_ppl": ("Perplexity", plain),
    "ppl": ("Perplexity", plain),
    "final_token_acc": ("Token acc.", ratio),
    "token_acc": ("Token acc.", ratio),
    "client_log_ppl_mean": ("Client log-ppl mean", ratio),
    "client_log_ppl_max": ("Client log-ppl worst", ratio),
    "upload_mb_per_client_round": ("Upload / client / round", lambda v: nbytes(v * 1e6)),
    "flops_per_round": ("Compute / round", flops),
    "flops": ("Compute", flops),
    "sim_seconds_per_round": ("Simulated time / round", seconds),
    "sim_round_s": ("Simulated round", seconds),
    "sim_elapsed_s": ("Simulated so far", seconds),
    "seconds": ("Simulated time", seconds),
    "joules": ("Energy", joules),
    "dollars": ("Cost", dollars),
    "wall_seconds": ("Wall time", seconds),
    "wall_s": ("Wall time", seconds),
    "bytes_up": ("Up", nbytes),
    "bytes_down": ("Down", nbytes),
    "participants": ("Sampled", integer),
    "accepted": ("Accepted", integer),
    "rejected": ("Rejected", integer),
    "dropped": ("Dropped", integer),
    "num_examples": ("Examples", integer),
    "device": ("Device", None),
    "tier": ("Tier", None),
    "train_loss": ("Train loss", plain),
}


def header(column: str) -> str:
    return COLUMNS.get(column, (column.replace("_", " "), None))[0]


def cell(column: str, value: Any) -> str:
    """One table cell's text, escaped."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    fmt = COLUMNS.get(column, (None, None))[1]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(str(value))
    if fmt is None:
        return html.escape(str(value)) if isinstance(value, int) else plain(value)
    return html.escape(fmt(float(value)))

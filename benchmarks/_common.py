"""Shared helpers: machine facts and writing a JSON + markdown table pair."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines for rows of dicts (columns from the first row)."""
    if not rows:
        return []
    cols = list(rows[0])

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows
    ]


def write(name: str, title: str, rows: list[dict[str, Any]], meta: dict[str, Any], notes: str = "") -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "meta": meta, "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"# {title}",
        "",
        f"Machine: {payload['machine']['cpu_cores']} cores, torch {payload['machine']['torch']}, "
        f"{payload['machine']['date']}. Settings: " + ", ".join(f"{k}={v}" for k, v in meta.items()),
        "",
    ]
    lines += table(rows)
    if notes:
        lines += ["", notes]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path

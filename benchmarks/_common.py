"""Shared helpers: machine facts and writing a JSON + markdown table pair."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]


def train_run(overrides: list[str], out: Path, config: str | None = None) -> dict[str, Any]:
    """``edgefm train [CONFIG]`` in a subprocess into ``out``; a folder that already holds a
    summary is reused, so long grids can be built up across sessions."""
    if not (out / "summary.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "edgefm.cli",
            "train",
            *([config] if config else []),
            "--out",
            str(out),
            *[a for o in overrides for a in ("--set", o)],
        ]
        subprocess.run(["rm", "-rf", str(out)], check=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads((out / "summary.json").read_text())


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
        return f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)

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

"""What a comparison page adds: the config keys that differ between runs, and mean ± std of
runs that differ only by seed."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from edgefm.report import units


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_diff(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per config key whose value differs between the runs (``name`` excluded)."""
    flat = [_flat(r["config"]) for r in runs]
    keys = sorted({k for f in flat for k in f} - {"name"})
    rows = []
    for k in keys:
        values = [json.dumps(f.get(k), default=str) if k in f else "—" for f in flat]
        if len(set(values)) > 1:
            rows.append({"key": k, **{r["label"]: v for r, v in zip(runs, values, strict=True)}})
    return rows


def seed_groups(runs: list[dict[str, Any]], figures: list[str]) -> list[dict[str, Any]]:
    """Runs whose configs differ only by ``seed`` (and ``name``), as mean ± std of each figure."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        key = json.dumps({k: v for k, v in _flat(r["config"]).items() if k not in ("seed", "name")}, sort_keys=True,
                         default=str)  # fmt: skip
        groups[key].append(r)
    rows = []
    for members in groups.values():
        if len(members) < 2:
            continue
        row: dict[str, Any] = {"runs": ", ".join(m["label"] for m in members), "seeds": len(members)}
        for f in figures:
            vals = [m["summary"].get(f) for m in members]
            vals = [v for v in vals if isinstance(v, int | float) and v == v]
            row[f] = f"{units.cell(f, float(np.mean(vals)))} ± {units.cell(f, float(np.std(vals)))}" if vals else None
        rows.append(row)
    return rows

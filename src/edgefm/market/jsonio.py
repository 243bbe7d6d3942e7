"""Reading and writing JSON (market instances, results), with one-line errors (numpy-free, torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefm import EdgefmError


def read_json(path: str | Path, error: type[Exception]) -> Any:
    """Parsed JSON of an instance file; ``error`` (the market's InstanceError) names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise error(f"instance file {str(path)!r} does not exist; expected a JSON instance")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"instance file {str(path)!r} is not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise error(f"instance file {str(path)!r} is not text (a binary file?); expected a JSON instance") from None


def check_path(path: str | Path, error: type[Exception] = EdgefmError) -> None:
    """An output file path with no folder at it and no file above it."""
    path = Path(path)
    if path.is_dir() or any(p.is_file() for p in path.parents):
        raise error(f"--out {str(path)!r}: a folder or a file is in the way; expected a file path")


def write_json(path: str | Path, payload: Any, error: type[Exception] = EdgefmError) -> None:
    """Valid JSON (no NaN or Infinity), written atomically: all of it or nothing."""
    path = Path(path)
    check_path(path, error)
    try:
        text = json.dumps(payload, indent=1, allow_nan=False)
    except ValueError:
        raise error(
            f"{str(path)!r}: the result holds NaN or infinity, which JSON cannot carry; nothing written"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

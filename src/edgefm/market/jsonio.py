"""Reading and writing market instances as JSON, with one-line errors (numpy-free, torch-free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def write_json(path: str | Path, payload: Any) -> None:
    Path(path).write_text(json.dumps(payload))

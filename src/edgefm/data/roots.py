"""Where the shared datasets live: standard library only, so a process that imports no data
library (the launcher of a Flower run, ``fl/loopback.py``) can name the folder for its children."""

from __future__ import annotations

import os
from pathlib import Path

from edgefm import EdgefmError


def data_roots() -> list[Path]:
    """Folders that may hold the named datasets, in order: ``$EDGEFM_DATA_DIR``, then the first
    ``shared/data`` beside or above the cwd, then one above the installed source tree."""
    roots = [Path(os.environ["EDGEFM_DATA_DIR"])] if os.environ.get("EDGEFM_DATA_DIR") else []
    here = Path.cwd().resolve()
    for parent in (here, *here.parents):
        found = [c for c in (parent / "shared" / "data", parent.parent / "shared" / "data") if c.is_dir()]
        if found:
            roots.append(found[0])
            break
    # Also look relative to the installed source tree (tests run from anywhere).
    roots += [p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()][:1]
    return list(dict.fromkeys(roots))


def data_dir() -> Path:
    """The first folder of :func:`data_roots` (``$EDGEFM_DATA_DIR`` when set)."""
    roots = data_roots()
    if not roots:
        raise EdgefmError("cannot find the shared data folder; set EDGEFM_DATA_DIR to the folder holding sst2/")
    return roots[0]

"""edgefm: foundation models at the network edge.

Federated fine-tuning on heterogeneous devices, the markets around them, and robustness
evaluation, all reading one shared model of the edge (see ARCHITECTURE.md).
"""

__version__ = "0.1.0"


class EdgefmError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""


_API = ("train", "robust", "open_run", "prepare", "execute", "Run")


def __getattr__(name: str):
    """``edgefm.train`` and the rest of ``edgefm.api``, imported on first use (so reading a
    config never imports torch)."""
    if name in _API:
        from edgefm import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgefm' has no attribute {name!r}")

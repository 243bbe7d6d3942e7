"""edgefm: foundation models at the network edge.

Federated fine-tuning on heterogeneous devices, the markets around them, and robustness
evaluation, all reading one shared model of the edge (see ARCHITECTURE.md).
"""

__version__ = "0.1.0"


class EdgefmError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""

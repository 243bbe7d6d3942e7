"""``python -m edgefm``: the command line."""

from edgefm.cli import app

app()

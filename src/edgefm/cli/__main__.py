"""``python -m edgefm.cli``."""

from edgefm.cli import app

app()

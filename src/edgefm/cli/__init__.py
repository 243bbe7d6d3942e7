"""The ``edgefm`` command line (typer + rich). The only package, with ``report/``, that talks to a
person: ``app.py`` holds the app and what commands share; each other module adds commands.

Every user error (bad config value, missing file, unknown name) is one line on stderr and exit
code 2, with no traceback and nothing written.
"""

from edgefm.cli import config_cmd, market, robust, runs, train  # noqa: F401 - each module adds its commands
from edgefm.cli.app import app

__all__ = ["app"]

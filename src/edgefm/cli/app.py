"""The typer app every command hangs on, and what the commands share: one-line errors (exit
code 2, no traceback, nothing written), override parsing and atomic JSON output."""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: weights ship in packages
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from edgefm import EdgefmError, __version__  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Foundation models at the network edge.")
console = Console()
err_console = Console(stderr=True)
SET_HELP = "Override a config value: --set key=value (dotted keys, repeatable), e.g. --set rounds=3."


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgefm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log rejected and dropped updates."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def seed_option(value: int) -> int:
    """A ``--seed`` callback: numpy's generators take no negative seeds."""
    if value < 0:
        fail(f"--seed {value}: expected a non-negative integer")
    return value


def overrides(set_: list[str], extra: list[str] | None) -> list[str]:
    """``--set a=1 b=2`` reaches us as one option value plus trailing arguments: take both."""
    for item in extra or []:
        if "=" not in item:
            fail(f"unexpected argument {item!r}; expected key=value overrides (e.g. rounds=3)")
    return [*set_, *(extra or [])]


def check_out(path: Path) -> None:
    """An output file path with no folder at it and no file above it (checked before any work)."""
    from edgefm.market import jsonio

    try:
        jsonio.check_path(path)
    except EdgefmError as exc:
        fail(str(exc))


def write_json(path: Path, payload: dict) -> None:
    """Valid JSON written atomically (``market/jsonio.py``), or a one-line error and nothing written."""
    from edgefm.market import jsonio

    try:
        jsonio.write_json(path, payload)
    except EdgefmError as exc:
        fail(str(exc))

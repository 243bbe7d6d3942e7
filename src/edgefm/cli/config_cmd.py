"""``edgefm config``: the reference of every config key, and a config resolved with its defaults."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgefm import EdgefmError
from edgefm.cli.app import SET_HELP, app, console, fail, overrides

config_app = typer.Typer(no_args_is_help=True, help="Every config key, and a config with its defaults filled in.")
app.add_typer(config_app, name="config")


@config_app.command("keys")
def keys(
    markdown: bool = typer.Option(False, "--markdown", help="Print docs/config.md instead of a table."),
    grep: str | None = typer.Argument(None, metavar="[TEXT]", help="Only keys whose name (or method) contains TEXT."),
) -> None:
    """Every key: type, default, allowed values and meaning (algorithm keys name their methods)."""
    from edgefm import config_reference as R

    if markdown:
        print(R.markdown(), end="")
        return
    table = Table(show_lines=False)
    for col in ("key", "type", "default", "allowed", "meaning"):
        table.add_column(col, overflow="fold")
    for k in R.all_keys():
        if grep is None or grep in k.key or grep in k.methods:
            table.add_row(k.key, k.type, k.default, k.allowed, f"({k.methods}) {k.meaning}" if k.methods else k.meaning)
    console.print(table)


@config_app.command("show")
def show(
    config_file: Path | None = typer.Argument(None, metavar="[CONFIG]", help="YAML config (defaults if omitted)."),
    extra: list[str] | None = typer.Argument(None, metavar="[KEY=VALUE]...", help="More overrides."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """The config a run would use: the file, the overrides and every default, as YAML."""
    from edgefm import config

    if config_file is not None and "=" in str(config_file) and not config_file.exists():
        extra, config_file = [str(config_file), *(extra or [])], None
    try:
        print(config.dump(config.load(config_file, overrides(set_, extra))), end="")
    except EdgefmError as exc:
        fail(str(exc))

"""``medmim-eval new adapter NAME [--dir DIR]``: start a third-party adapter package."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("new")
def new() -> None:
    """Start a plugin package (see docs/plugins.md)."""


@new.command("adapter")
@click.argument("name")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=None,
              help="Folder to write the package into (default ./medmim-NAME); must be new or empty.")
def adapter(name: str, folder: Path | None) -> None:
    """Write an installable adapter package: entry point, adapter module, README and a conformance test."""
    from medmim_eval.scaffold import new_adapter

    out = new_adapter(name, folder)
    click.echo(f"wrote {out}/ (the '{name}' adapter). Next:\n"
               f"  pip install -e {out}\n"
               f"  medmim-eval list adapters\n"
               f"  cd {out} && pytest")

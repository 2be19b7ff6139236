"""``medmim-eval leaderboard``: Table-1-style tables from run directories."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["rich", "markdown"]), default="rich", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout.")
def leaderboard(run_dirs: tuple[Path, ...], fmt: str, output: Path | None) -> None:
    """Show the scores of one or more run directories (rows: models; columns: tasks, C and O)."""
    from medmim_eval.leaderboard import build_tables, cells_from_runs, print_rich, to_markdown

    tables = build_tables(cells_from_runs(list(run_dirs)))
    if not tables:
        click.echo("no scored samples in these run directories", err=True)
        return
    if fmt == "markdown":
        text = to_markdown(tables)
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            click.echo(text, nl=False)
        return
    if output:
        from rich.console import Console

        with output.open("w", encoding="utf-8") as handle:
            print_rich(tables, Console(file=handle, width=200))
    else:
        print_rich(tables)

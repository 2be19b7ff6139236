"""``medmim-eval leaderboard``: Table-1-style tables and exports from run directories."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from medmim_eval.leaderboard import LeaderboardView

FORMATS = ("rich", "markdown", "csv", "json", "latex", "html")
DEFAULT_MAX_RECORDS = 200


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="rich", show_default=True,
              help="rich/markdown tables; csv/json long format (one row per model x task x kind); "
              "latex booktabs table; html self-contained report with per-sample drill-down.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout.")
@click.option("--ci", is_flag=True, help="Show the 95% cluster-bootstrap interval of every value.")
@click.option("--chance", is_flag=True,
              help="Closed columns show chance-normalised accuracy (0 = chance, 100 = perfect) instead of accuracy.")
@click.option("--shortcuts", is_flag=True,
              help="Closed columns only: the text-only shortcut baselines (longest/shortest option, question "
              "overlap, majority letter) per column, then each model's margin over the best of them.")
@click.option("--by-source", is_flag=True, help="Split every task by source dataset (e.g. EMBED vs LUMIERE).")
@click.option("--with-paper", is_flag=True,
              help="Add the paper's reported Table 1 rows (marked as reported, never ranked) to the Med-MIM table.")
@click.option("--vs-paper", is_flag=True,
              help="Show each model that is a paper model (by registry name, e.g. gpt-4o) beside its reported "
              "row, with the difference.")
@click.option("--paper-table", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A copy of the paper's table to use instead of the bundled one (its dagger rows are checked).")
@click.option("--controls", is_flag=True,
              help="Add the image controls (TASK@blind, @noimage, @shuffle, @single): each control's score, its paired "
              "difference from the standard run with a 95% interval, and whether each model uses the images "
              "(rich, markdown, json and html).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="HTML: data directory to reload tasks from for prompts and image thumbnails "
              "(default: $MEDMIM_DATA_DIR, config, ~/.local/share/medmim-eval).")
@click.option("--max-records", type=click.IntRange(min=0), default=DEFAULT_MAX_RECORDS, show_default=True,
              help="HTML: sample records listed per model x task (0 = none).")
@click.pass_context
def leaderboard(ctx: click.Context, run_dirs: tuple[Path, ...], fmt: str, output: Path | None, ci: bool,
                chance: bool, shortcuts: bool, by_source: bool, with_paper: bool, vs_paper: bool, paper_table: Path | None,
                controls: bool, data_dir: Path | None, max_records: int) -> None:
    """Show the scores of one or more run directories (rows: models; columns: tasks, C and O).

    The footer names the metric definitions behind the numbers and warns when the runs differ.
    """
    from medmim_eval.leaderboard import build_view

    if controls and fmt in ("csv", "latex"):
        raise click.UsageError(f"--controls is shown in the rich, markdown, json and html formats, not {fmt}")
    view = build_view(list(run_dirs), ci=ci, chance=chance, by_source=by_source, with_paper=with_paper,
                      vs_paper=vs_paper, paper_file=paper_table, controls=controls,
                      shortcuts=shortcuts)
    if not view.tables:
        what = "no per-source cells (no samples.jsonl to recompute them from)" if by_source else "no scored samples"
        click.echo(f"{what} in these run directories", err=True)
        return
    if fmt == "rich":
        _print_rich(view, output)
        return
    options = {}
    if fmt == "html":
        from medmim_eval.cli.context import get_host
        from medmim_eval.datadir import DataPaths

        options = {"host": get_host(ctx), "data": DataPaths.resolve(data_dir), "max_records": max_records}
    from medmim_eval.exports import render

    text = render(fmt, view, **options)
    if output:
        from medmim_eval.cli.output_files import write_output_file

        write_output_file(output, text, "--output")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _print_rich(view: "LeaderboardView", output: Path | None) -> None:
    from medmim_eval.leaderboard import print_rich

    if output:
        import io

        from rich.console import Console

        from medmim_eval.cli.output_files import write_output_file

        text = io.StringIO()
        print_rich(view.tables, Console(file=text, width=200), ci=view.ci, footer=view.footer)
        _print_controls(view, Console(file=text, width=200))
        write_output_file(output, text.getvalue(), "--output")
    else:
        print_rich(view.tables, ci=view.ci, footer=view.footer)
        _print_controls(view, None)


def _print_controls(view: "LeaderboardView", console: object | None) -> None:
    if view.controls is not None:
        from medmim_eval.control_view import print_rich as print_controls

        print_controls(view.controls, console)

"""``medmim-eval compare``: the regression gate between a baseline and a candidate run directory.

Computation lives in :mod:`medmim_eval.compare`, the renderers (a rich table, Markdown for a CI
comment or job summary, JSON) in :mod:`medmim_eval.exports.compare_export`; this module parses
options. Exit status: 0 pass, 1 significant regression beyond ``--max-drop``, 2 not comparable (or a
user error, which the CLI also reports with status 2).
"""
from __future__ import annotations

from pathlib import Path

import click

from medmim_eval.compare_stats import DEFAULT_ALPHA, DEFAULT_MAX_DROP
from medmim_eval.exports.compare_export import (  # noqa: F401  (the renderers; importable from here as before)
    CHANGES_TITLE, DASH, DIRECTIONS, HEADERS, JSON_VERSION, change_line, gate_line, power_line, print_rich,
    summary_line, to_dict, to_json, to_markdown,
)
from medmim_eval.power import DEFAULT_POWER
from medmim_eval.stats import DEFAULT_RESAMPLES


@click.command()
@click.argument("baseline_dir", type=click.Path(path_type=Path))
@click.argument("candidate_dir", type=click.Path(path_type=Path))
@click.option("--model", "models", multiple=True, metavar="BASE_ID=CAND_ID",
              help="Pair these models (repeatable). Default: ids present in both runs, or the only model of each.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=DEFAULT_MAX_DROP, show_default=True, metavar="POINTS",
              help="A cell (and the overall closed row) regresses when its delta is below -POINTS and significant.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_ALPHA,
              show_default=True, help="Significance level; the bootstrap CI is at 1-alpha.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the paired bootstrap.")
@click.option("--resamples", type=click.IntRange(min=100), default=DEFAULT_RESAMPLES, show_default=True,
              help="Bootstrap resamples.")
@click.option("--power", "power", is_flag=False, flag_value=DEFAULT_POWER, default=None,
              type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="[POWER]",
              help=f"Show per cell the smallest difference the test detects with this power (bare flag: {DEFAULT_POWER:g}).")
@click.option("--force", is_flag=True, help="Compare what pairs even when the runs are not comparable (and say so).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every cell and flip) instead of the table.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown (for a CI comment) instead of the table.")
@click.option("--write-json", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON to a file.")
@click.option("--write-markdown", type=click.Path(dir_okay=False, path_type=Path), help="Also write the Markdown to a file.")
@click.option("--max-flips", type=click.IntRange(min=0), default=50, show_default=True,
              help="Flips listed per direction in the table and Markdown (JSON lists all).")
@click.option("--across-definitions", is_flag=True,
              help="The two runs hold the same outputs scored under two definitions (a run and its `medmim-eval "
              "rescore`): compare them despite the different definitions and list every sample whose outcome changed.")
@click.pass_context
def compare(ctx: click.Context, baseline_dir: Path, candidate_dir: Path, models: tuple[str, ...], max_drop: float,
            alpha: float, seed: int, resamples: int, power: float | None, force: bool, as_json: bool, as_markdown: bool,
            write_json: Path | None, write_markdown: Path | None, max_flips: int, across_definitions: bool) -> None:
    """Compare CANDIDATE_DIR with BASELINE_DIR sample by sample; the CI gate for new checkpoints.

    \b
    Exit status:
      0  no significant drop beyond --max-drop points (pass)
      1  a significant regression (closed: McNemar p < alpha; open: CI below 0)
      2  not comparable (metric definitions, sample sets, errored records) or bad input
    """
    from medmim_eval.cli.output_files import write_output_file
    from medmim_eval.compare import compare_runs
    from medmim_eval.compare_stats import CompareSettings
    from medmim_eval.errors import MedmimError

    if as_json and as_markdown:
        raise MedmimError("choose one of --json and --markdown for stdout (--write-json/--write-markdown add files)")
    settings = CompareSettings(max_drop=max_drop, alpha=alpha, seed=seed, n_resamples=resamples, force=force,
                               power=power)
    comparison = compare_runs(baseline_dir, candidate_dir, settings, list(models) or None,
                              across_definitions=across_definitions)
    for problem in comparison.problems:
        prefix = "warning: forced past: " if comparison.forced else ""
        click.echo(prefix + problem.line, err=True)
    if write_json:
        write_output_file(write_json, to_json(comparison), "--write-json")
    if write_markdown:
        write_output_file(write_markdown, to_markdown(comparison, max_flips), "--write-markdown")
    if as_json:
        click.echo(to_json(comparison), nl=False)
    elif as_markdown:
        click.echo(to_markdown(comparison, max_flips), nl=False)
    elif comparison.cells:
        print_rich(comparison, max_flips=max_flips)
    ctx.exit(comparison.exit_code)

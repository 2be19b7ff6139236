"""``medmim-eval rescore``: recompute extraction and scores of a finished run from its stored outputs."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from medmim_eval.cli.context import get_host


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--extractor", default="rule", show_default=True, metavar="rule|llm=openai:MODEL[,base_url=URL]",
              help="How closed answers are extracted: the current versioned rule alone, or the rule and then an LLM "
              "judge for the answers it leaves unparseable (the only model a rescore may call; verdicts the source "
              "run holds from the same judge are kept).")
@click.option("--open-metrics", "open_metrics", multiple=True, metavar="KEY=VALUE[,...]",
              help="Open-score definition, as for `run` (then $MEDMIM_OPEN_METRICS applies too). Default: the source "
              "run's definition, as recorded in its manifest.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="New run directory. Default: RUN_DIR.rescore-<tag> beside it (the tag names the definition). "
              "The source run is never written to.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory, read only for records written before extraction rule v3 (they did not store "
              "their options).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the response cache (the extraction judge's answers).")
@click.option("--quiet", "-q", is_flag=True, help="No leaderboard.")
@click.pass_context
def rescore(ctx: click.Context, run_dir: Path, extractor: str, open_metrics: tuple[str, ...], output: Path | None,
            data_dir: Path | None, no_cache: bool, quiet: bool) -> None:
    """Rescore RUN_DIR's stored answers under the current extraction rule and the given definitions.

    No evaluated model is called: every answer comes from RUN_DIR/samples.jsonl. The new records,
    results.json and a manifest naming the new definitions and the source run go to a new run
    directory, which `leaderboard` and `compare` read like any other (`compare RUN_DIR NEW
    --across-definitions` lists the samples whose outcome changed).
    """
    from medmim_eval.datadir import DataPaths
    from medmim_eval.extract_judge import parse_extractor
    from medmim_eval.metrics import OpenMetricsConfig
    from medmim_eval.rescore import RescoreOptions, rescore_run

    options = RescoreOptions(
        source=run_dir, output=output,
        open_metrics=OpenMetricsConfig.parse(open_metrics) if open_metrics else None,
        extractor=parse_extractor(extractor), data=DataPaths.resolve(data_dir) if data_dir else None,
        use_cache=not no_cache, argv=["medmim-eval", *sys.argv[1:]],
    )
    summary = rescore_run(options, get_host(ctx))
    for note in summary.notes:
        click.echo(f"note: {note}", err=True)
    if not quiet:
        from medmim_eval.leaderboard import build_view, print_rich

        view = build_view([summary.output])
        print_rich(view.tables, footer=view.footer)
    judge = summary.judge
    if judge is not None and judge.asked:
        click.echo(f"extraction judge: asked about {judge.asked} answer(s) ({judge.from_cache} from cache): "
                   f"{judge.decided} decided, {judge.none} none, {judge.invalid} invalid, {judge.failed} failed", err=True)
    carried = f", {summary.carried_errors} errored record(s) carried over unscored" if summary.carried_errors else ""
    click.echo(f"rescored {summary.closed} closed and {summary.open} open answer(s) of {run_dir} without calling a "
               f"model; {summary.changed} changed outcome{carried} -> {summary.output}", err=True)

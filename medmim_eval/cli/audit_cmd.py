"""``medmim-eval audit``: checks of the benchmark data itself, one subcommand per check.

``audit benchmark`` prints the benchmark card (:mod:`medmim_eval.benchmark_card`); ``audit
contamination`` (:mod:`medmim_eval.cli.audit_contamination`) the training-data overlap. A new check is
one more ``@audit.command()`` function here, or a module whose command is added with
``audit.add_command``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from medmim_eval.cli.audit_contamination import contamination
from medmim_eval.cli.context import get_host

if TYPE_CHECKING:
    from medmim_eval.benchmark_card import BenchmarkCard


@click.group()
def audit() -> None:
    """Audit benchmark data: letter bias, text-only shortcuts, reuse, training-data overlap (no model is called)."""


audit.add_command(contamination)


@audit.command()
@click.option("--tasks", "-t", "task_spec", default="all", show_default=True,
              help="Tasks, groups or Med-MIM .json files, comma-separated (closed/open both read).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (default: $MEDMIM_DATA_DIR, config, ~/.local/share/medmim-eval).")
@click.option("--format", "fmt", type=click.Choice(("rich", "json")), default="rich", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout.")
@click.pass_context
def benchmark(ctx: click.Context, task_spec: str, data_dir: Path | None, fmt: str, output: Path | None) -> None:
    """The benchmark card per task: gold letters, option counts, image-set reuse, repeated ids,
    items per source and the text-only shortcut baselines. Images are not needed; a task whose
    benchmark file is missing is reported and left out."""
    from medmim_eval.benchmark_card import benchmark_card
    from medmim_eval.datadir import DataPaths, cache_dir
    from medmim_eval.errors import DataError, MedmimError
    from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

    host = get_host(ctx)
    context = TaskContext(data=DataPaths.resolve(data_dir), cache_dir=cache_dir())
    loaded, notes = {}, []
    for selection in select_tasks(task_spec, host):
        try:
            loaded[selection.label] = load_selection(selection, host, context).samples
        except (DataError, OSError) as exc:
            notes.append(f"{selection.label}: not loaded: {str(exc).splitlines()[0]}")
    if not loaded:
        raise MedmimError("no task could be loaded: " + "; ".join(notes)
                          + " (`medmim-eval data status` says where to get the files)")
    card = benchmark_card(loaded)
    card.notes = notes
    if fmt == "json":
        text = card.model_dump_json(indent=2) + "\n"
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text, encoding="utf-8")
            click.echo(f"wrote {output}", err=True)
        else:
            click.echo(text, nl=False)
        return
    from rich.console import Console

    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as handle:
            print_card(card, Console(file=handle, width=200))
    else:
        print_card(card, Console())


def print_card(card: "BenchmarkCard", console: object) -> None:
    """The card as two rich tables: composition, then the closed-question shortcuts."""
    from rich.table import Table

    from medmim_eval.leaderboard import fmt
    from medmim_eval.shortcuts import SHORTCUT_RULES

    composition = Table(title="Benchmark card: composition")
    for header in ("task", "closed", "open", "gold letters", "options per item", "image sets (reused / items on them / max)",
                   "repeated ids (ids / items)", "items per source"):
        composition.add_column(header, overflow="fold")
    for t in card.tasks:
        composition.add_row(
            t.task, str(t.n_closed), str(t.n_open), " ".join(f"{k}:{v}" for k, v in t.gold_letters.items()) or "—",
            " ".join(f"{k}:{v}" for k, v in t.option_counts.items()) or "—",
            f"{t.image_sets} ({t.image_sets_reused} / {t.items_on_reused_image_sets} / {t.max_items_per_image_set})",
            f"{t.repeated_ids} / {t.items_with_repeated_ids}", " ".join(f"{k}:{v}" for k, v in t.sources.items()))
    shortcuts = Table(title="Closed questions: accuracy (%) without looking at an image")
    for header in ("task", "chance", "best letter", *SHORTCUT_RULES, "best shortcut"):
        shortcuts.add_column(header, justify="right")
    for t in card.tasks:
        if not t.n_closed:
            continue
        best = f"{t.best_letter} ({fmt(t.best_letter_share)})" if t.best_letter else "—"
        shortcuts.add_row(t.task, fmt(t.chance), best, *(fmt(t.shortcuts.get(r)) for r in SHORTCUT_RULES),
                          f"{t.best_shortcut} {fmt(t.best_shortcut_accuracy)}" if t.best_shortcut else "—")
    console.print(composition)  # type: ignore[attr-defined]
    console.print(shortcuts)  # type: ignore[attr-defined]
    console.print(f"Ties: {card.definitions.get('ties')}; majority = the task's most frequent gold letter "  # type: ignore[attr-defined]
                  "(best letter share = its accuracy where every item offers it).")
    for note in card.notes:
        console.print(f"note: {note}")  # type: ignore[attr-defined]

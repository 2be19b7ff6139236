"""``medmim-eval audit contamination``: benchmark items that appear in training data (rich, JSON or HTML)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from medmim_eval.cli.context import get_host

if TYPE_CHECKING:
    from medmim_eval.contamination import ContaminationAudit

def _paths(text: str) -> list[Path]:
    return [Path(p.strip()).expanduser() for p in text.split(",") if p.strip()]


@click.command()
@click.option("--train", "train_spec", required=True, metavar="FILE_OR_DIR[,...]",
              help="Training files (Med-MIM chat JSON, LLaVA-Med JSON/JSONL) or folders of them, comma-separated.")
@click.option("--tasks", "-t", "task_spec", default="all", show_default=True,
              help="Tasks, groups or Med-MIM .json files, comma-separated (closed and open items both audited).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (default: $MEDMIM_DATA_DIR, config, ~/.local/share/medmim-eval).")
@click.option("--train-images", type=click.Path(file_okay=False, path_type=Path),
              help="Folder the training files' image paths are relative to (default: the data folder of each item's "
              "source, else the training file's folder).")
@click.option("--criterion", default="image_set", show_default=True,
              help="The flags, comma-separated, any of which makes an item contaminated (what run "
              "--exclude-contaminated leaves out): image_set, any_image, question, answer, question_answer, ngram13.")
@click.option("--format", "fmt", type=click.Choice(("rich", "json", "html")), default="rich", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout.")
@click.pass_context
def contamination(ctx: click.Context, train_spec: str, task_spec: str, data_dir: Path | None,
                  train_images: Path | None, criterion: str, fmt: str, output: Path | None) -> None:
    """Benchmark items whose image set, any image, question or answer appears in the training data.

    Images match by content where both files are here (SHA-256, or pHash and dHash near duplicates) and
    by relative path where either is absent. Text matches after normalisation (whole question, whole
    answer, or a shared 13-gram). `--format json -o AUDIT.json` feeds `run --exclude-contaminated`.
    """
    from medmim_eval.contamination import CRITERION_FLAGS, audit
    from medmim_eval.datadir import DataPaths, cache_dir
    from medmim_eval.errors import DataError, MedmimError
    from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks
    from medmim_eval.training_data import read_training

    flags = tuple(f.strip() for f in criterion.split(",") if f.strip())
    unknown = [f for f in flags if f not in CRITERION_FLAGS]
    if unknown or not flags:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'}; give some of {', '.join(CRITERION_FLAGS)}",
                                 param_hint="--criterion")
    host = get_host(ctx)
    data = DataPaths.resolve(data_dir)
    specs = _paths(train_spec)
    if not specs:
        raise click.UsageError("--train needs at least one file or folder")
    context = TaskContext(data=data, cache_dir=cache_dir())
    loaded, notes, task_files = {}, [], set()
    for selection in select_tasks(task_spec, host):
        try:
            task = load_selection(selection, host, context)
        except (DataError, OSError) as exc:
            notes.append(f"{selection.label}: not loaded: {str(exc).splitlines()[0]}")
            continue
        loaded[selection.label] = task.samples
        task_files.update(p.resolve() for p in task.files)
    if not loaded:
        raise MedmimError("no task could be loaded: " + "; ".join(notes)
                          + " (`medmim-eval data status` says where to get the files)")
    # A training folder holding the audited benchmark files (the release's folder) does not count them as training.
    items, files = read_training(specs, data, train_images, leave_out=task_files)
    report = audit(loaded, items, files, flags)
    report.notes = notes + report.notes
    if fmt == "rich":
        from rich.console import Console

        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            with output.open("w", encoding="utf-8") as handle:
                print_audit(report, Console(file=handle, width=200))
        else:
            print_audit(report, Console())
        return
    if fmt == "json":
        text = report.model_dump_json(indent=2) + "\n"
    else:
        from medmim_eval.exports.html_contamination import standalone_html

        text = standalone_html(report)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def print_audit(report: "ContaminationAudit", console: object) -> None:
    """The audit as one rich table (count and % per flag), then example keys and notes."""
    from rich.table import Table

    from medmim_eval.contamination import LABELS

    files = ", ".join(Path(f["path"]).name for f in report.train_files)
    table = Table(title=f"Contamination audit: benchmark items found in {report.train_items} training items ({files})")
    table.add_column("task")
    table.add_column("items", justify="right")
    for header in LABELS.values():
        table.add_column(header, justify="right")
    table.add_column("images here / absent", justify="right")
    for t in report.tasks:
        table.add_row(t.task, str(t.n_items), *(f"{t.counts.get(f, 0)} ({t.percent.get(f, 0.0):.1f}%)" for f in LABELS),
                      f"{t.images.get('here', 0)} / {t.images.get('absent', 0)}")
    console.print(table)  # type: ignore[attr-defined]
    for t in report.tasks:
        if t.examples.get("contaminated"):
            console.print(f"{t.task}: e.g. {', '.join(t.examples['contaminated'][:3])}",  # type: ignore[attr-defined]
                          highlight=False, markup=False)
    console.print(f"contaminated = {report.definitions.get('contaminated')}; images: "  # type: ignore[attr-defined]
                  f"{report.definitions.get('image_identity')} (pHash <= {report.definitions.get('phash_max')}, "
                  f"dHash <= {report.definitions.get('dhash_max')} of 64 bits). `--format json` lists every key.",
                  highlight=False, markup=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)  # type: ignore[attr-defined]

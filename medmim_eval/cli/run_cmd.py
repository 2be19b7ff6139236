"""``medmim-eval run``: evaluate models on tasks into a resumable run directory."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from medmim_eval.cli.context import get_host
from medmim_eval.errors import MedmimError

if TYPE_CHECKING:
    from medmim_eval.distributed import RankGroup
    from medmim_eval.plugins import PluginHost
    from medmim_eval.run_setup import PreparedRun, RunOptions

DEFAULT_RUNS_DIR = "runs"


def _default_output(models: str, tasks: str) -> Path:
    """A directory named after the models and tasks, so rerunning the same command resumes."""
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{models}__{tasks}").strip("_")
    if len(slug) > 80:
        from medmim_eval.schema import content_hash

        slug = f"{slug[:60]}-{content_hash(slug, 10)}"
    return Path(DEFAULT_RUNS_DIR) / slug


def _read_models_file(path: Path) -> list[object]:
    import yaml

    from medmim_eval.adapter import spec_from_mapping

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MedmimError(f"{path}: cannot read the models file ({exc})") from None
    items = data.get("models") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise MedmimError(f"{path}: expected a list of models (or a mapping with 'models:')")
    return [spec_from_mapping(item, f"{path}: model {i + 1}") for i, item in enumerate(items)]


@click.command()
@click.option("--models", "-m", "models_text", default=None, metavar="SPEC[,SPEC...]",
              help="Models: ADAPTER[:TARGET][,key=value...], e.g. random or "
              "openai:gpt-4o,base_url=http://127.0.0.1:8000/v1; 'all' = every registered baseline/model.")
@click.option("--models-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML list of model specs (strings or {adapter, target, options, label}).")
@click.option("--tasks", "-t", "tasks_text", required=True, metavar="TASK[,TASK...]",
              help="Tasks or groups (held-in, held-out, all, synth), optionally with :closed/:open, or a Med-MIM JSON path.")
@click.option("--as", "as_task", metavar="TASK",
              help="Evaluate the one Med-MIM JSON file in --tasks under a benchmark task's name, so views show it "
              "in that column (e.g. --as held-out-odir for a file built by mim-odir; its card already says so).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory. Default: runs/<models>__<tasks>. Rerunning into it resumes.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (med-mim/, vqa-rad/, odir/, ...). Default: $MEDMIM_DATA_DIR, config, ~/.local/share/medmim-eval.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples of each task and kind.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for baselines and sampling.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Sampling temperature (0 = greedy). Seeded with --seed (each repeat with its own seed).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Run the evaluation K times with seeds SEED..SEED+K-1 into OUTPUT/repeat-1..K (each an ordinary, "
              "resumable run) and report per cell the mean and spread across repeats and the items whose outcome "
              "flips (OUTPUT/repeats.json). Meant with --temperature > 0.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight per model (adapters that allow it).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--skip-missing", is_flag=True, help="Skip samples whose images are missing or unreadable (counted in the manifest).")
@click.option("--open-metrics", "open_metrics", multiple=True, metavar="KEY=VALUE[,...]",
              help="Open-score definition: components=bertscore+bleu+rougeL, bertscore.model=NAME|PATH|minilm, "
              "bertscore.layer=N, bertscore.idf, bertscore.rescale, bleu.tokenize, bleu.smooth, rouge.stemmer "
              "(default: bert-score's roberta-large L17; also $MEDMIM_OPEN_METRICS).")
@click.option("--extractor", default="rule", show_default=True, metavar="rule|llm=openai:MODEL[,base_url=URL]",
              help="How closed answers are extracted: the versioned rule alone, or the rule and then an LLM judge on an "
              "OpenAI-compatible server for the answers the rule leaves unparseable (asked for one option letter or "
              "'none'; both verdicts recorded per sample; the judge is part of the metric definition).")
@click.option("--allow-credentialed-upload", is_flag=True,
              help="Allow images of credentialed datasets (MS-CXR-T/MIMIC, EMBED) to go to a non-local endpoint.")
@click.option("--exclude", "exclude_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Leave out the samples whose keys this file lists (one per line); the run scores the rest, records "
              "the excluded keys in its manifest and views mark its cells as a clean subset.")
@click.option("--exclude-contaminated", "audit_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Leave out the items an `audit contamination --format json` file flags as contaminated (see --exclude).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the response cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no leaderboard.")
@click.pass_context
def run(ctx: click.Context, models_text: str | None, models_file: Path | None, tasks_text: str, as_task: str | None,
        output: Path | None,
        data_dir: Path | None, limit: int | None, seed: int, temperature: float, repeat: int,
        concurrency: int | None, max_new_tokens: int,
        skip_missing: bool, open_metrics: tuple[str, ...], extractor: str, allow_credentialed_upload: bool,
        no_cache: bool, quiet: bool, exclude_file: Path | None = None, audit_file: Path | None = None) -> None:
    """Evaluate MODELS on TASKS; resumable, every sample recorded in OUTPUT/samples.jsonl.

    \b
    Data-parallel over processes or GPUs (rank 0 merges, scores and prints):
      torchrun --nproc_per_node 4 -m medmim_eval run ...
      accelerate launch --num_processes 4 -m medmim_eval run ...
    """
    from medmim_eval.adapter import GenerationSettings, parse_model_specs
    from medmim_eval.datadir import DataPaths
    from medmim_eval.distributed import RankGroup
    from medmim_eval.extract_judge import parse_extractor
    from medmim_eval.metrics import OpenMetricsConfig
    from medmim_eval.run_setup import RunOptions
    from medmim_eval.tasks_api import select_tasks

    if not models_text and not models_file:
        raise click.UsageError("give --models SPEC[,SPEC...] or --models-file FILE")
    if exclude_file and audit_file:
        raise click.UsageError("give --exclude KEYS_FILE or --exclude-contaminated AUDIT.json, not both")
    from medmim_eval import exclusion

    exclude = (exclusion.read_keys_file(exclude_file) if exclude_file else
               exclusion.read_audit(audit_file) if audit_file else None)
    host = get_host(ctx)
    specs = parse_model_specs(models_text) if models_text else []
    if models_file:
        specs.extend(_read_models_file(models_file))  # type: ignore[arg-type]
    options = RunOptions(
        models=specs,
        tasks=select_tasks(tasks_text, host, as_task=as_task),
        output=output or _default_output(models_text or models_file.stem, tasks_text),  # type: ignore[union-attr]
        data=DataPaths.resolve(data_dir),
        limit=limit,
        seed=seed,
        concurrency=concurrency,
        skip_missing=skip_missing,
        use_cache=not no_cache,
        settings=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
        open_metrics=OpenMetricsConfig.parse(open_metrics),
        allow_credentialed_upload=allow_credentialed_upload,
        extractor=parse_extractor(extractor),
        argv=["medmim-eval", *sys.argv[1:]],
        exclude=exclude,
    )
    group = RankGroup()  # connects the ranks when launched by torchrun / accelerate launch
    try:
        if repeat == 1:
            _run(options, host, group, quiet)
        else:
            _run_repeats(options, host, group, quiet, repeat)
    finally:
        group.close()


def _run_repeats(options: "RunOptions", host: "PluginHost", group: "RankGroup", quiet: bool, k: int) -> None:
    """K ordinary runs with consecutive seeds into OUTPUT/repeat-N, then the spread across them."""
    from dataclasses import replace

    from medmim_eval.repeats import repeat_dir, summarize, summary_lines, write_summary

    if group.is_main:
        click.echo(f"--repeat {k}: {k} runs with seeds {options.seed}..{options.seed + k - 1} into "
                   f"{options.output}/repeat-1..{k} ({k}x the requests of one run)", err=True)
        if options.settings.temperature == 0:
            click.echo("note: --temperature 0 is greedy decoding; repeats of a deterministic model give the same "
                       "answers (only seeded baselines and non-deterministic backends vary)", err=True)
    runs = []
    failures: list[str] = []
    for i in range(1, k + 1):
        seed = options.seed + i - 1
        one = replace(options, output=repeat_dir(options.output, i), seed=seed,
                      settings=replace(options.settings, seed=seed))
        if group.is_main:
            click.echo(f"repeat {i}/{k} (seed {seed}) -> {one.output}", err=True)
        try:
            _run(one, host, group, quiet=True)
        except MedmimError as exc:  # errors in one repeat do not stop the others; a rerun finishes them
            failures.append(f"repeat {i}: {exc}")
        runs.append(one.output)
    if not group.is_main:
        return
    if failures:
        raise MedmimError("; ".join(failures) + "; rerun the same command to finish (nothing done is lost)")
    cells = summarize(runs)
    settings = {"k": k, "seeds": [options.seed + i for i in range(k)], **options.settings.as_dict()}
    settings.pop("seed", None)
    path = write_summary(options.output, runs, cells, settings)
    if not quiet:
        for line in summary_lines(cells, k):
            click.echo(line)
    click.echo(f"repeat summary -> {path}", err=True)


def _run(options: "RunOptions", host: "PluginHost", group: "RankGroup", quiet: bool) -> None:
    """Prepare (every rank), evaluate (each rank its share), report (rank 0)."""
    from medmim_eval.run_setup import prepare_run
    from medmim_eval.runner import run_prepared

    prepared, error = None, None
    try:
        prepared = prepare_run(options, host)
    except Exception as exc:  # every rank learns of it instead of waiting
        error = exc
    group.check("checking models, tasks and images", error)
    main_rank = group.is_main
    if main_rank:
        for name, reason in prepared.unavailable:
            click.echo(f"skipping model '{name}': {reason}", err=True)
        _say_circular_cost(prepared)
    assert prepared is not None
    summary = run_prepared(prepared, host, _display(quiet or not main_rank), group)
    if not main_rank:
        click.echo(f"[rank {group.rank}] {summary.computed} computed ({summary.from_cache} from cache), "
                   f"{summary.errors} errors; records merged by rank 0 into {options.output}", err=True)
        return

    for label, skipped in summary.skipped.items():
        click.echo(f"skipped in {label}: {skipped.get('samples', 0)} samples "
                   f"({skipped.get('missing_images', 0)} missing, {skipped.get('unreadable_images', 0)} unreadable images)", err=True)
    if not quiet:
        from medmim_eval.leaderboard import build_view, print_rich

        view = build_view([options.output])
        print_rich(view.tables, footer=view.footer)
    ranks = f" on {group.world_size} ranks" if group.distributed else ""
    click.echo(
        f"{summary.computed} computed{ranks} ({summary.from_cache} from cache), {summary.reused} already done, "
        f"{summary.errors} errors -> {options.output}",
        err=True,
    )
    judge = summary.judge
    if judge is not None and judge.asked:
        click.echo(f"extraction judge: asked about {judge.asked} answer(s) the rule left unparseable "
                   f"({judge.from_cache} from cache): {judge.decided} decided, {judge.none} none, "
                   f"{judge.invalid} invalid replies, {judge.failed} failed requests", err=True)
        if judge.failed:
            click.echo(f"warning: {judge.failed} judge request(s) failed; those answers stay unparseable (reason in "
                       "each record); rerun the same command to ask again", err=True)
    if summary.too_many_images:
        click.echo(f"{summary.too_many_images} sample(s) not evaluated: more images than the model accepts "
                   "(recorded as TooManyImagesError, never truncated; counted in the leaderboard footer)", err=True)
    for line in summary.contract_errors.values():
        click.echo(f"contract error: {line}", err=True)
    if summary.contract_errors and not (summary.model_failures or summary.errors):
        raise MedmimError(f"{len(summary.contract_errors)} adapter(s) broke the adapter contract (above); fix the "
                          "plugin (or report it to its author): rerunning cannot help")
    if summary.model_failures or summary.errors:
        broke = (f"{len(summary.contract_errors)} adapter(s) broke the adapter contract (above; a rerun cannot "
                 "fix those); " if summary.contract_errors else "")
        failed = f"{len(summary.model_failures)} model(s) failed to load; " if summary.model_failures else ""
        raise MedmimError(f"{broke}{failed}{summary.errors} sample(s) ended in errors; rerun the same command to "
                          "retry them")


def _say_circular_cost(prepared: "PreparedRun") -> None:
    """Before any model is called: what each ``TASK@circular`` costs (one request per rotation)."""
    from medmim_eval.circular import CIRCULAR, cost_line

    for task in prepared.tasks:
        if task.selection.control == CIRCULAR:
            click.echo(cost_line(task.selection.label, task.samples, len(prepared.models)), err=True)


def _display(quiet: bool):  # type: ignore[no-untyped-def]
    from medmim_eval.progress import PlainDisplay, QuietDisplay, RichDisplay

    if quiet:
        return QuietDisplay()
    return RichDisplay() if sys.stderr.isatty() else PlainDisplay()

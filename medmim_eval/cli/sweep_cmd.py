"""``medmim-eval sweep``: every (model, task) cell as its own resumable run, on local processes, Ray or Slurm."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from medmim_eval.cli.context import get_host
from medmim_eval.errors import MedmimError

DEFAULT_SWEEPS_DIR = "sweeps"


@click.command()
@click.option("--models", "-m", "models_text", default=None, metavar="SPEC[,SPEC...]",
              help="Models, as for `run` ('all' = every registered baseline and every paper model that can run).")
@click.option("--models-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML list of model specs, as for `run`.")
@click.option("--tasks", "-t", "tasks_text", required=True, metavar="TASK[,TASK...]",
              help="Tasks or groups, as for `run`; every task is its own cell.")
@click.option("--executor", "-x", "executor_text", default="local", show_default=True,
              metavar="local[,gpus=N,cpus=N]|ray[:ADDRESS][,retries=N]|slurm[,partition=P,time=MIN,...]",
              help="Where cells run: processes on this machine, Ray tasks, or Slurm jobs through submitit "
              "(options: partition, time, account, qos, constraint, mem_gb, exclude, array=1, array_parallelism, "
              "folder, cluster=local).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Sweep directory (one run directory per cell under cells/). Default: sweeps/<models>__<tasks>. "
              "Rerunning into it skips finished cells and resumes the others.")
@click.option("--gpus", "gpu_overrides", multiple=True, metavar="MODEL=N",
              help="GPUs for a model's cells instead of what its registry entry says (repeatable).")
@click.option("--cpus-per-cell", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU cores reserved for each cell.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory, as for `run`.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples of each task and kind.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight per model (adapters that allow it).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--skip-missing", is_flag=True, help="Skip samples whose images are missing or unreadable.")
@click.option("--open-metrics", "open_metrics", multiple=True, metavar="KEY=VALUE[,...]", help="As for `run`.")
@click.option("--extractor", default="rule", show_default=True, help="As for `run`.")
@click.option("--allow-credentialed-upload", is_flag=True, help="As for `run`.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the response cache.")
@click.option("--plain", is_flag=True, help="Plain status lines instead of the live bar (the default when stderr is not a terminal).")
@click.option("--quiet", "-q", is_flag=True, help="Only failures and the final line; no live view, no leaderboard.")
@click.pass_context
def sweep(ctx: click.Context, models_text: str | None, models_file: Path | None, tasks_text: str, executor_text: str,
          output: Path | None, gpu_overrides: tuple[str, ...], cpus_per_cell: int, data_dir: Path | None,
          limit: int | None, seed: int, concurrency: int | None, max_new_tokens: int, skip_missing: bool,
          open_metrics: tuple[str, ...], extractor: str, allow_credentialed_upload: bool, no_cache: bool,
          plain: bool, quiet: bool) -> None:
    """Evaluate MODELS x TASKS as separate cells, each an ordinary run directory, spread over an executor.

    \b
    Each cell gets the GPUs its model needs (registry entry; tp x dp for vLLM; none for API models
    and baselines). Rerun the same command to skip finished cells and resume the rest; a failed cell
    is reported with its log and the others go on. SWEEP/sweep.json lists every cell,
    SWEEP/leaderboard.md and SWEEP/report.html merge them.
    \b
      medmim-eval sweep -m all -t held-in,held-out -x ray:auto
      medmim-eval sweep -m internvl2-8b,mantis-8b -t all -x slurm,partition=gpu,time=240
    """
    from medmim_eval.adapter import parse_model_specs
    from medmim_eval.cli.run_cmd import _default_output, _read_models_file
    from medmim_eval.datadir import DataPaths
    from medmim_eval.sweep.driver import SweepSettings, run_sweep
    from medmim_eval.sweep.executors import ExecutorSpec
    from medmim_eval.sweep.resources import parse_gpu_overrides

    if not models_text and not models_file:
        raise click.UsageError("give --models SPEC[,SPEC...] or --models-file FILE")
    host = get_host(ctx)
    specs = parse_model_specs(models_text) if models_text else []
    if models_file:
        specs.extend(_read_models_file(models_file))  # type: ignore[arg-type]
    executor = ExecutorSpec.parse(executor_text)
    default = _default_output(models_text or models_file.stem, tasks_text)  # type: ignore[union-attr]
    sweep_dir = (output or Path(DEFAULT_SWEEPS_DIR) / default.name).resolve()
    passthrough = [f"--seed={seed}", f"--max-new-tokens={max_new_tokens}", f"--extractor={extractor}"]
    if data_dir is not None:
        passthrough.append(f"--data-dir={data_dir.resolve()}")
    if limit is not None:
        passthrough.append(f"--limit={limit}")
    if concurrency is not None:
        passthrough.append(f"--concurrency={concurrency}")
    passthrough += [f"--open-metrics={m}" for m in open_metrics]
    passthrough += [flag for flag, on in (("--skip-missing", skip_missing), ("--no-cache", no_cache),
                                          ("--allow-credentialed-upload", allow_credentialed_upload)) if on]
    view = "quiet" if quiet else "plain" if plain or not sys.stderr.isatty() else "rich"
    settings = SweepSettings(
        specs=specs, tasks_text=tasks_text, sweep_dir=sweep_dir, executor=executor, data=DataPaths.resolve(data_dir),
        passthrough=passthrough, limit=limit, seed=seed, cpus_per_cell=cpus_per_cell,
        gpu_overrides=parse_gpu_overrides(gpu_overrides), view=view, argv=["medmim-eval", *sys.argv[1:]],
    )
    summary = run_sweep(settings, host)
    for name, reason in summary.unavailable:
        click.echo(f"skipping model '{name}': {reason}", err=True)
    if not quiet and (sweep_dir / "leaderboard.md").is_file():
        from medmim_eval.leaderboard import build_view, print_rich

        merged = build_view([c.run_dir for c in summary.cells if (c.run_dir / "results.json").is_file()])
        print_rich(merged.tables, footer=merged.footer)
    skipped = summary.count("skipped")
    ran = summary.count("done")
    click.echo(f"sweep: {ran} cell(s) run, {skipped} already finished, {len(summary.failed)} failed -> {sweep_dir} "
               "(sweep.json, leaderboard.md, report.html)", err=True)
    if summary.failed:
        lines = "\n".join(f"  {c.key}: {c.error} (log: {c.log})" for c in summary.failed)
        raise MedmimError(f"{len(summary.failed)} cell(s) failed:\n{lines}\nthe other cells are kept; "
                          "rerun the same command to resume the failed ones")

"""``medmim-eval train``: fine-tune a checkpoint with a registered recipe."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from medmim_eval.cli.context import get_host
from medmim_eval.errors import MedmimError

EPILOG = """\b
Overrides (KEY=VALUE, space- or comma-separated): see `medmim-eval train --options`.
Rerunning the same command on an unfinished OUTPUT resumes from its last checkpoint.
Several GPUs (the paper's setting, 4 GPUs):
  accelerate launch --config_file "$(medmim-eval train --config zero2)" -m medmim_eval \\
      train sft-llava --data a.json,b.json --base /models/mantis --output out/med-mantis
Data parallel on CPU (no MPI needed): accelerate launch --multi_gpu --num_processes 2 -m medmim_eval train ...
(or torchrun --nproc_per_node 2 -m medmim_eval train ...); accelerate's --cpu runs one process without MPI.
"""


def _paths(text: str | None) -> list[Path]:
    return [Path(p.strip()).expanduser() for p in (text or "").split(",") if p.strip()]


def _print_options(host: Any) -> None:
    """The overrides of every recipe that declares them, recipes sharing a table listed together."""
    from medmim_eval.registry import resolve_callable

    tables: dict[Any, list[str]] = {}
    for name in host.recipes.entries:
        entry = host.recipes.get(name)
        if entry.option_help is not None:
            tables.setdefault(entry.option_help, []).append(name)
    for ref, names in tables.items():
        click.echo(f"training options (KEY=VALUE; defaults of {' / '.join(names)}):")
        for key, line, default in resolve_callable(ref)():
            click.echo(f"  {key:<24} {line} [default: {default}]")


def _config_path(host: Any, name: str) -> Path:
    from importlib.resources import files

    for recipe in host.recipes.entries:
        package, _, folder = host.recipes.get(recipe).configs.partition(":")
        if package:
            path = files(package).joinpath(folder, f"{name}.yaml")
            if path.is_file():
                return Path(str(path))
    raise MedmimError(f"no shipped accelerate config {name!r}; choose zero2, zero3 or fsdp")


@click.command(epilog=EPILOG)
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--data", "data_text", metavar="FILE.json[,FILE.json...]", help="Med-MIM JSON training files.")
@click.option("--base", type=click.Path(path_type=Path), help="The checkpoint folder to fine-tune.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the trained model (and of the resumable checkpoints while training).")
@click.option("--restart", is_flag=True, help="Discard OUTPUT's checkpoints (or finished model) and train anew.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory holding the source images of official instruction files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.option("--options", "show_options", is_flag=True, help="List the KEY=VALUE training options and exit.")
@click.option("--config", "config_name", type=click.Choice(["zero2", "zero3", "fsdp"]),
              help="Print the path of a shipped accelerate config (4 GPUs) and exit.")
@click.pass_context
def train(ctx: click.Context, recipe: str | None, overrides: tuple[str, ...], data_text: str | None,
          base: Path | None, output: Path | None, restart: bool, data_dir: Path | None, quiet: bool,
          show_options: bool, config_name: str | None) -> None:
    """Fine-tune with RECIPE (see `medmim-eval list recipes`); OUTPUT then runs as hf-llava:OUTPUT."""
    if show_options:
        _print_options(get_host(ctx))
        return
    if config_name:
        click.echo(str(_config_path(get_host(ctx), config_name)))
        return
    if not recipe:
        raise click.UsageError("give a RECIPE (medmim-eval list recipes)")
    host = get_host(ctx)
    entry = host.recipes.get(recipe)
    data = _paths(data_text)
    if "data" in entry.needs and not data:
        raise click.UsageError(f"recipe {recipe} needs --data FILE.json[,FILE.json...]")
    if "base" in entry.needs and base is None:
        raise click.UsageError(f"recipe {recipe} needs --base CHECKPOINT_FOLDER")
    if output is None:
        raise click.UsageError("give --output DIR (where the trained model goes)")
    from medmim_eval.datadir import DataPaths
    from medmim_eval.recipes_api import TrainRequest, parse_overrides

    request = TrainRequest(recipe=recipe, recipe_version=entry.version, output=output, data=data, base=base,
                           overrides=parse_overrides(list(overrides)), restart=restart,
                           data_paths=DataPaths.resolve(data_dir), progress=not quiet,
                           rich=sys.stderr.isatty(), host=host)
    entry.load_recipe()(request)

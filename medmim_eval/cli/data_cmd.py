"""``medmim-eval data``: where the benchmark data is and what is missing."""
from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Inspect the benchmark data and build Med-MIM data from raw datasets."""


@data.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Data directory to inspect.")
@click.pass_context
def status(ctx: click.Context, data_dir: Path | None) -> None:
    """Per task: benchmark file present, images present/missing, and where to get what is missing."""
    from medmim_eval.cli.context import get_host
    from medmim_eval.datadir import DataPaths, cache_dir
    from medmim_eval.errors import DataError
    from medmim_eval.images import check_images
    from medmim_eval.medmim_format import source_of
    from medmim_eval.registry import resolve_callable
    from medmim_eval.tasks_api import TaskContext

    host = get_host(ctx)
    paths = DataPaths.resolve(data_dir)
    click.echo(f"data directory: {paths.root}  (from {paths.origin['root']})")
    for name in sorted(paths.folders):
        folder = paths.folder(name)
        mark = "present" if folder.is_dir() else "absent"
        click.echo(f"  {name + '/':<10} {folder}  [{mark}; {paths.origin.get(name)}]")
    context = TaskContext(data=paths, cache_dir=cache_dir())
    needed: set[str] = set()
    access: dict[str, str] = {}
    click.echo("")
    for name, entry in host.tasks.entries.items():  # registration order: the benchmark's tasks first
        if entry.generated:
            continue
        builder = ""
        if entry.data is not None:
            access.update(entry.data.access)
            builder = entry.data.builder
            path = Path(resolve_callable(entry.data.file)(context))
            if not path.is_file():
                click.echo(f"{name:<22} benchmark file missing: {path}")
                needed.add(next(iter(entry.data.access), ("med-mim", ""))[0])
                continue
        try:
            samples = entry.load_loader()(context).samples
        except DataError as exc:
            click.echo(f"{name:<22} benchmark file invalid: {str(exc).splitlines()[0]}")
            continue
        check = check_images(samples, decode=False)
        total = check.checked
        missing = len(check.missing)
        runnable = "runnable" if missing == 0 else "not runnable"
        click.echo(f"{name:<22} {len(samples)} items; images {total - missing}/{total} present -> {runnable}")
        if missing:
            folders = sorted({f for s in samples for f in [source_of(s.metadata.get('source_tag', ''))[1]] if f
                              and any(p in check.missing for p in s.image_paths)})
            needed.update(folders)
            if folders or builder:
                where = ", ".join(folders) or "the task's own image folder"
                click.echo(f"{'':<22} missing images come from: {where}"
                           + (f"; builder: medmim-eval data build {builder}" if builder else ""))
    if needed:
        click.echo("\nwhere to get what is missing:")
        for name in sorted(needed):
            click.echo(f"  {name}: {access.get(name, 'no plugin says where to obtain it')}")
            click.echo(f"  {'':<{len(name)}}  -> place under {paths.folder(name)} (or set the folder in the config / environment)")


@data.command()
@click.argument("name")
@click.option("--source", required=True, type=click.Path(path_type=Path), help="Folder (or file) of the raw dataset.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Build at most N items per kind (builder-specific).")
@click.option("--option", "extra", multiple=True, metavar="KEY=VALUE", help="Builder-specific setting (repeatable).")
@click.option("--skip-missing", is_flag=True,
              help="Leave out what lacks its raw images (mim-odir: those patients) and count it in the dataset card, "
              "instead of stopping.")
@click.pass_context
def build(ctx: click.Context, name: str, source: Path, out: Path, seed: int, limit: int | None, extra: tuple[str, ...],
          skip_missing: bool) -> None:
    """Build Med-MIM data NAME from a raw dataset; validated, with a dataset card, never partial."""
    from medmim_eval.builders_api import BuildOptions, run_builder
    from medmim_eval.cli.context import get_host
    from medmim_eval.errors import MedmimError

    entry = get_host(ctx).builders.get(name)
    settings = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise MedmimError(f"--option {item!r}: expected KEY=VALUE")
        settings[key.strip()] = value.strip()
    options = BuildOptions(name=name, source=source, out=out, seed=seed, limit=limit, extra=settings,
                           skip_missing=skip_missing)
    card = run_builder(entry.load_builder(), options, entry.version)
    total = sum(c["n"] for c in card["counts"])
    click.echo(f"{name}: {total} items, {card['images']} images -> {out} (card: {out / 'DATASET_CARD.md'})")
    for stem in card["files"]:
        click.echo(f"  run it: medmim-eval run --models random --tasks {out / (stem + '.json')}")


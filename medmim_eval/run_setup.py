"""Everything a run checks before any model is called: model names, task data, images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medmim_eval.adapter import GenerationSettings, ModelSpec
from medmim_eval.datadir import DataPaths, cache_dir
from medmim_eval.errors import DataError, MedmimError
from medmim_eval.images import check_images
from medmim_eval.metrics import OpenMetricsConfig, OpenScorer
from medmim_eval.plugins import PluginHost
from medmim_eval.registry import AdapterEntry
from medmim_eval.schema import Sample
from medmim_eval.tasks_api import LoadedTask, TaskContext, TaskSelection, load_selection

ALL_MODELS = "all"


@dataclass
class RunOptions:
    models: list[ModelSpec]
    tasks: list[TaskSelection]
    output: Path
    data: DataPaths
    limit: int | None = None
    seed: int = 0
    concurrency: int | None = None
    skip_missing: bool = False
    use_cache: bool = True
    cache_dir: Path = field(default_factory=cache_dir)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    open_metrics: OpenMetricsConfig = field(default_factory=OpenMetricsConfig)
    argv: list[str] = field(default_factory=list)


@dataclass
class PreparedTask:
    selection: TaskSelection
    loaded: LoadedTask
    samples: list[Sample]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedRun:
    options: RunOptions
    models: list[tuple[ModelSpec, AdapterEntry]]
    tasks: list[PreparedTask]
    scorer: OpenScorer


def expand_all(specs: list[ModelSpec], host: PluginHost) -> list[ModelSpec]:
    """``all`` stands for every registered adapter marked ``include_in_all``."""
    expanded: list[ModelSpec] = []
    for spec in specs:
        if spec.adapter == ALL_MODELS and spec.target is None:
            expanded.extend(ModelSpec(name) for name in host.adapters if host.adapters.get(name).include_in_all)
        else:
            expanded.append(spec)
    return expanded


def resolve_models(specs: list[ModelSpec], host: PluginHost) -> list[tuple[ModelSpec, AdapterEntry]]:
    resolved = []
    seen: dict[str, ModelSpec] = {}
    for spec in expand_all(specs, host):
        entry = host.adapters.get(spec.adapter)
        if entry.target == "required" and not spec.target:
            raise MedmimError(f"model '{spec}' needs a target: {entry.example or spec.adapter + ':TARGET'}")
        if spec.model_id in seen:
            raise MedmimError(
                f"two models are both named '{spec.model_id}' ({seen[spec.model_id]} and {spec}); "
                "give one a different label=NAME"
            )
        seen[spec.model_id] = spec
        resolved.append((spec, entry))
    if not resolved:
        raise MedmimError("no model to run; `medmim-eval list adapters` shows them")
    return resolved


def prepare_run(options: RunOptions, host: PluginHost) -> PreparedRun:
    """Resolve models, load and validate every task, check every image.

    Raises:
        UnknownNameError, DataError, MedmimError: before any model is built or called.
    """
    models = resolve_models(options.models, host)
    context = TaskContext(data=options.data, cache_dir=options.cache_dir, seed=options.seed)
    prepared: list[PreparedTask] = []
    for selection in options.tasks:
        loaded = load_selection(selection, host, context)
        samples = _limit(loaded.samples, options.limit)
        prepared.append(PreparedTask(selection, loaded, samples))

    problems: list[str] = []
    for task in prepared:
        check = check_images(task.samples)
        if not check.bad_paths:
            continue
        missing, unreadable = len(check.missing), len(check.unreadable)
        if options.skip_missing:
            kept = [s for s in task.samples if check.sample_ok(s)]
            task.skipped = {"missing_images": missing, "unreadable_images": unreadable,
                            "samples": len(task.samples) - len(kept)}
            task.samples = kept
            continue
        detail = []
        if missing:
            example = next(iter(check.missing))
            detail.append(f"{missing} of {check.checked} images missing (e.g. {example})")
        for path, reason in list(check.unreadable.items())[:3]:
            detail.append(f"unreadable image {path} ({reason})")
        if unreadable > 3:
            detail.append(f"... {unreadable - 3} more unreadable")
        problems.append(f"{task.selection.label}: " + "; ".join(detail))
    if problems:
        raise DataError(
            "\n".join(problems)
            + "\nNo model was called. Get the missing data (`medmim-eval data status` says where), "
            "fix or remove the unreadable files, or pass --skip-missing to run the rest."
        )
    scorer = OpenScorer(options.open_metrics)
    if any(s.kind == "open" for task in prepared for s in task.samples):
        scorer.ensure_ready()  # a metric that cannot load fails here, before any model is called
    return PreparedRun(options, models, prepared, scorer)


def _limit(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first ``limit`` samples of each kind, in file order."""
    if limit is None:
        return samples
    counts: dict[str, int] = {}
    kept = []
    for sample in samples:
        if counts.get(sample.kind, 0) < limit:
            kept.append(sample)
            counts[sample.kind] = counts.get(sample.kind, 0) + 1
    return kept

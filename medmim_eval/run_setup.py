"""Everything a run checks before any model is called: model names, task data, images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medmim_eval import exclusion
from medmim_eval.adapter import GenerationSettings, ModelSpec, parse_model_specs
from medmim_eval.datadir import DataPaths, cache_dir
from medmim_eval.distributed import rank_info
from medmim_eval.errors import DataError, MedmimError, UnknownNameError
from medmim_eval.images import check_images
from medmim_eval.metrics import OpenMetricsConfig, OpenScorer
from medmim_eval.plugins import PluginHost
from medmim_eval.records import ensure_run_dir
from medmim_eval.registry import AdapterEntry, ModelEntry, unknown_name_message
from medmim_eval.schema import Sample
from medmim_eval.tasks_api import LoadedTask, TaskContext, TaskSelection, load_selection
from medmim_eval.weights import find_weights

if TYPE_CHECKING:
    from medmim_eval.exclusion import Exclusion
    from medmim_eval.extract_judge import ExtractionJudge, JudgeSpec

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
    allow_credentialed_upload: bool = False
    extractor: "JudgeSpec | None" = None  # the LLM judge of --extractor llm=...; None: the rule alone
    argv: list[str] = field(default_factory=list)
    exclude: "Exclusion | None" = None  # run --exclude / --exclude-contaminated (medmim_eval.exclusion)


@dataclass
class PreparedTask:
    selection: TaskSelection
    loaded: LoadedTask
    samples: list[Sample]
    skipped: dict[str, int] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)  # keys left out by options.exclude


@dataclass
class PreparedRun:
    options: RunOptions
    models: list[tuple[ModelSpec, AdapterEntry]]
    tasks: list[PreparedTask]
    scorer: OpenScorer
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    judge: "ExtractionJudge | None" = None  # built on rank 0 only (the rank that scores)


def route_for(entry: ModelEntry, host: PluginHost, extra: tuple[tuple[str, str], ...] = ()) -> tuple[ModelSpec | None, str]:
    """The first route of a named model whose prerequisites are met, or (None, every reason)."""
    reasons = []
    for template in entry.routes:
        if "{weights}" in template:
            folder, looked = find_weights(entry.name, entry.weights)
            if folder is None:
                reasons.append(f"{template.split(':')[0]}: no weights (looked in {looked})")
                continue
            template = template.replace("{weights}", str(folder))
        (spec,) = parse_model_specs(template)
        if spec.adapter not in host.adapters:
            reasons.append(f"{spec.adapter}: adapter not installed")
            continue
        reason = host.adapters.get(spec.adapter).missing_prerequisite(spec.target, spec.option_dict)
        if reason:
            reasons.append(f"{spec.adapter}: {reason}")
            continue
        options = dict(spec.options)
        options.update(extra)
        options.setdefault("label", entry.name)
        return ModelSpec(spec.adapter, spec.target, tuple(options.items())), ""
    return None, "; ".join(reasons) or "no route registered"


def resolve_models(specs: list[ModelSpec], host: PluginHost) -> tuple[list[tuple[ModelSpec, AdapterEntry]], list[tuple[str, str]]]:
    """Specs -> (runnable models with their adapter entries, unavailable named models with why).

    ``all`` expands to the baselines and every paper model that can run here; a named model or an
    explicit adapter that cannot run is an error naming what is missing.
    """
    expanded: list[ModelSpec] = []
    unavailable: list[tuple[str, str]] = []
    for spec in specs:
        if spec.adapter == ALL_MODELS and spec.target is None:
            expanded.extend(ModelSpec(n) for n in host.adapters if host.adapters.get(n).include_in_all)
            for name in host.models:
                entry = host.models.get(name)
                if not entry.paper:
                    continue
                route, reason = route_for(entry, host)
                if route is None:
                    unavailable.append((name, reason))
                else:
                    expanded.append(route)
        elif spec.adapter in host.models and spec.adapter not in host.adapters and spec.target is None:
            route, reason = route_for(host.models.get(spec.adapter), host, spec.options)
            if route is None:
                raise MedmimError(f"model '{spec.adapter}' cannot run here: {reason}")
            expanded.append(route)
        else:
            expanded.append(spec)
    resolved = []
    seen: dict[str, ModelSpec] = {}
    for spec in expanded:
        if spec.adapter not in host.adapters and spec.adapter in host.models:
            raise MedmimError(f"'{spec.adapter}' is a named model and takes no target; use --models {spec.adapter}")
        if spec.adapter not in host.adapters:
            raise UnknownNameError(unknown_name_message("adapter", spec.adapter, host.adapters.names() + host.models.names()))
        entry = host.adapters.get(spec.adapter)
        if entry.target == "required" and not spec.target:
            raise MedmimError(f"model '{spec}' needs a target: {entry.example or spec.adapter + ':TARGET'}")
        reason = entry.missing_prerequisite(spec.target, spec.option_dict)
        if reason:
            raise MedmimError(f"model '{spec.model_id}' cannot run here: {reason}")
        problem = entry.option_problem(spec.option_dict)  # the declared options, for adapters that declare them
        if problem:
            raise MedmimError(f"model '{spec.model_id}': {problem}")
        if spec.model_id in seen:
            raise MedmimError(
                f"two models are both named '{spec.model_id}' ({seen[spec.model_id]} and {spec}); "
                "give one a different label=NAME"
            )
        seen[spec.model_id] = spec
        resolved.append((spec, entry))
    if not resolved:
        raise MedmimError("no model to run; `medmim-eval list adapters` shows them")
    return resolved, unavailable


def prepare_run(options: RunOptions, host: PluginHost) -> PreparedRun:
    """Resolve models, load and validate every task, check every image.

    Raises:
        UnknownNameError, DataError, MedmimError: before any model is built or called (also for an
            output folder that cannot be created or written).
    """
    models, unavailable = resolve_models(options.models, host)
    context = TaskContext(data=options.data, cache_dir=options.cache_dir, seed=options.seed)
    prepared: list[PreparedTask] = []
    for selection in options.tasks:
        loaded = load_selection(selection, host, context)
        kept, excluded = exclusion.split(loaded.samples, options.exclude)
        prepared.append(PreparedTask(selection, loaded, _limit(kept, options.limit), excluded=excluded))
    if options.exclude is not None:
        exclusion.check_used(options.exclude, sum(len(t.excluded) for t in prepared))

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
    if options.extractor is not None:
        from medmim_eval.extract_judge import check_judge

        check_judge(options.extractor, host)
    if not options.allow_credentialed_upload:
        _guard_credentialed_data(models, prepared)
        if options.extractor is not None:
            _guard_judge(options.extractor, host, prepared)
    ensure_run_dir(options.output)  # after the input checks (bad input leaves no folder behind), before any metric loads
    copy = options.output / exclusion.AUDIT_COPY
    if options.exclude is not None and options.exclude.audit is not None and rank_info().is_main and not copy.exists():
        copy.write_text(options.exclude.audit.model_dump_json(indent=2) + "\n", encoding="utf-8")  # for the HTML report
    # The open metrics load in the runner once it knows an open answer is left to score (a
    # finished run resumes without them), still before any model is called.
    scorer = OpenScorer(options.open_metrics)
    judge = None
    if options.extractor is not None and rank_info().is_main:
        from medmim_eval.extract_judge import ExtractionJudge

        judge = ExtractionJudge(options.extractor, host)  # an unreachable judge fails here, before any model runs
    return PreparedRun(options, models, prepared, scorer, unavailable, judge)


def _limit(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first ``limit`` items of each kind, in file order (every rotation of a ``@circular`` item kept)."""
    if limit is None:
        return samples
    items: dict[str, list[str]] = {}
    kept = []
    for sample in samples:
        seen = items.setdefault(sample.kind, [])
        item = sample.metadata.get("item_key", sample.key)
        if item in seen[-1:] or len(seen) < limit:
            kept.append(sample)
            if item not in seen[-1:]:
                seen.append(item)
    return kept


# Sources under a data-use agreement that forbids sharing images with third parties.
CREDENTIALED_SOURCES = {"MS-CXR-T": "MIMIC-CXR / MS-CXR-T (PhysioNet credentialed access)", "EMBED": "EMBED (data-use agreement)"}


def _guard_credentialed_data(models: list[tuple[ModelSpec, AdapterEntry]], tasks: list[PreparedTask]) -> None:
    """Refuse, before any request, to send credentialed images to an endpoint off this machine."""
    sources = {s.source for task in tasks for s in task.samples if s.source in CREDENTIALED_SOURCES}
    if not sources:
        return
    for spec, entry in models:
        host = entry.remote_host(spec.target, spec.option_dict)
        if host:
            names = ", ".join(CREDENTIALED_SOURCES[s] for s in sorted(sources))
            raise MedmimError(
                f"refusing to send {names} images to {host} for model '{spec.model_id}': their data-use agreements "
                "forbid sharing with third parties. Use a local endpoint, or pass --allow-credentialed-upload if your "
                "agreement covers this service"
            )


def _guard_judge(judge: "JudgeSpec", host: PluginHost, tasks: list[PreparedTask]) -> None:
    """The judge sees replies and option texts (no images); refuse those of credentialed data off this machine too."""
    from medmim_eval.extract_judge import judge_remote_host

    sources = {s.source for task in tasks for s in task.samples if s.source in CREDENTIALED_SOURCES and s.kind == "closed"}
    remote = judge_remote_host(judge, host) if sources else None
    if remote:
        names = ", ".join(CREDENTIALED_SOURCES[s] for s in sorted(sources))
        raise MedmimError(
            f"refusing to send replies and options of {names} to {remote} for the extraction judge '{judge.name}': "
            "their data-use agreements forbid sharing with third parties. Use a local judge endpoint, or pass "
            "--allow-credentialed-upload if your agreement covers this service"
        )

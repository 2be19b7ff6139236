"""Building and updating ``manifest.json``: what ran, with which code, data, plugins and settings."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medmim_eval import __version__
from medmim_eval.errors import MedmimError, os_error_reason
from medmim_eval.extract import EXTRACTION_RULE_VERSION
from medmim_eval.plugins import PluginHost
from medmim_eval.records import MANIFEST_FILE
from medmim_eval.run_reader import read_manifest  # noqa: F401  (the one reader; importable from here as before)
from medmim_eval.schema import (
    Invocation,
    ModelInfo,
    PluginFailureRecord,
    PluginRecord,
    RunManifest,
    TaskInfo,
)

PACKAGES = ("pydantic", "pluggy", "click", "rich", "pillow", "rouge-score", "sacrebleu",
            "torch", "transformers", "vllm", "openai", "bert-score")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# Definitions of figures reported beside the scores (baselines, chance, the controls view): they never
# change a model's score, so they neither block a resume nor make two runs incomparable.
REPORTING_ONLY = ("shortcuts", "chance", "controls")
CHANCE_DEFINITION = {
    "level": "closed: mean over the cell's scored items of 100/k, k = the item's option count",
    "normalised": "100 x (accuracy - chance) / (100 - chance)",
}


def metric_definitions(open_definition: dict[str, Any], judge_definition: dict[str, Any] | None = None) -> dict[str, Any]:
    """The definitions recorded in the manifest and results; ``extraction_judge`` only for judged runs."""
    from medmim_eval import control_view, shortcuts

    metrics: dict[str, Any] = {"extraction_rule_version": EXTRACTION_RULE_VERSION, "open": open_definition,
                               "shortcuts": shortcuts.definition(), "chance": dict(CHANCE_DEFINITION),
                               "controls": control_view.definition()}
    if judge_definition is not None:
        metrics["extraction_judge"] = judge_definition
    return metrics


def _comparable(definition: dict[str, Any]) -> dict[str, Any]:
    """A definition without package versions, the judge's endpoint or the :data:`REPORTING_ONLY`
    entries: a patch upgrade or another judge address does not block a resume, and the text-only
    baselines, chance levels and control views (recomputed at every scoring or view) never change a
    model's score."""
    open_part = {k: v for k, v in (definition.get("open") or {}).items() if k != "versions"}
    out = {**{k: v for k, v in definition.items() if k not in REPORTING_ONLY}, "open": open_part}
    if isinstance(definition.get("extraction_judge"), dict):
        out["extraction_judge"] = {k: v for k, v in definition["extraction_judge"].items() if k != "endpoint"}
    return out


def start_manifest(run_dir: Path, argv: list[str], seed: int, generation: dict[str, object], host: PluginHost,
                   open_definition: dict[str, Any], judge_definition: dict[str, Any] | None = None) -> RunManifest:
    """The existing manifest with a new invocation, or a fresh one.

    Raises:
        MedmimError: when the run directory was scored under another metric definition.
    """
    metrics = metric_definitions(open_definition, judge_definition)
    existing = read_manifest(run_dir)
    if existing is not None and existing.metrics and _comparable(existing.metrics) != _comparable(metrics):
        raise MedmimError(
            f"{run_dir} was scored with another metric definition ({_difference(existing.metrics, metrics)}); "
            "use another --output, or the same --open-metrics and --extractor as before"
        )
    manifest = existing or RunManifest(
        run_id=uuid.uuid4().hex[:12],
        created_at=now(),
        harness_version=__version__,
        seed=seed,
        generation=generation,
    )
    manifest.harness_version = __version__
    manifest.git_commit = git_commit()
    manifest.seed = seed
    manifest.generation = generation
    manifest.metrics = metrics
    manifest.packages = package_versions()
    manifest.host = {"python": sys.version.split()[0], "platform": platform.platform(),
                     "machine": platform.machine(), "cpus": os.cpu_count()}
    manifest.plugins = [
        PluginRecord(name=p.name, distribution=p.distribution, version=p.version, hooks=p.hooks)
        for p in host.plugins.values()
    ]
    manifest.plugin_failures = [
        PluginFailureRecord(name=f.name, distribution=f.distribution, error=f.error) for f in host.failures
    ]
    manifest.invocations.append(Invocation(started_at=now(), argv=argv))
    return manifest


def add_model(manifest: RunManifest, info: ModelInfo) -> None:
    """Record a model; refuse a different model under a name this run directory already holds."""
    for i, existing in enumerate(manifest.models):
        if existing.id == info.id:
            if existing.fingerprint != info.fingerprint:
                raise MedmimError(
                    f"model '{info.id}' in this run directory was evaluated with a different "
                    f"fingerprint ({existing.fingerprint} vs {info.fingerprint}); use another --output, "
                    "or give this model a different label=NAME"
                )
            manifest.models[i] = info
            return
    manifest.models.append(info)


def add_task(manifest: RunManifest, info: TaskInfo) -> None:
    """Record a task; refuse changed task data under a name this run directory already holds."""
    for i, existing in enumerate(manifest.tasks):
        if existing.name == info.name:
            if existing.sha256 != info.sha256:
                raise MedmimError(
                    f"the data of task '{info.name}' changed since this run directory was written "
                    f"(sha256 {existing.sha256[:12]} vs {info.sha256[:12]}); use another --output"
                )
            if sorted(existing.excluded_keys) != sorted(info.excluded_keys):
                raise MedmimError(
                    f"task '{info.name}' in this run directory was evaluated with {len(existing.excluded_keys)} item(s) "
                    f"excluded ({existing.excluded_from or 'no exclusion'}), now with {len(info.excluded_keys)} "
                    f"({info.excluded_from or 'no exclusion'}); a clean subset and the full task go to different "
                    "run directories: use another --output"
                )
            info.kinds = sorted(set(existing.kinds) | set(info.kinds))  # type: ignore[assignment]
            manifest.tasks[i] = info
            return
    manifest.tasks.append(info)


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    old_c, new_c = _comparable(old), _comparable(new)
    if old_c.get("extraction_rule_version") != new_c.get("extraction_rule_version"):
        return f"extraction rule {old_c.get('extraction_rule_version')} vs {new_c.get('extraction_rule_version')}"
    if old_c.get("extraction_judge") != new_c.get("extraction_judge"):
        return f"extraction judge {_judge_name(old_c)} vs {_judge_name(new_c)}"
    keys = sorted(k for k in set(old_c["open"]) | set(new_c["open"]) if old_c["open"].get(k) != new_c["open"].get(k))
    return "open metrics differ in " + ", ".join(keys)


def _judge_name(definition: dict[str, Any]) -> str:
    judge = definition.get("extraction_judge")
    if not isinstance(judge, dict):
        return "none (rule only)"
    return f"{judge.get('adapter')}:{judge.get('model')} prompt v{judge.get('prompt_version')}"

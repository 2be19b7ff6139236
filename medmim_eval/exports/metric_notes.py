"""Footer lines: which metric definitions produced the numbers, a warning when runs differ, and per
model the samples that were not scored (too many images for the model, or another error).

Metric definitions are free-form dicts written by the scorer of each harness version (see
``Results.metrics``); new keys (another open-score component, a ``components`` list) must not
break the summary, so every shape is summarised generically.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmim_eval.view_model import RunData

NOT_RECORDED = "not recorded"
_MAX_VALUE_CHARS = 80


def _compact(value: Any) -> str:
    """A short one-line rendering of a definition value."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "+".join(_compact(v) for v in value)
    text = str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def describe_open(open_def: Any) -> str:
    """Summarise ``metrics["open"]``: its ``open_score`` description, each component, versions."""
    if open_def is None:
        return NOT_RECORDED
    if not isinstance(open_def, dict):
        return _compact(open_def)
    parts: list[str] = []
    score = open_def.get("open_score")
    if isinstance(score, dict):
        score = score.get("description") or _compact(score)
    if score:
        parts.append(str(score))
    for name, value in open_def.items():
        if name in ("open_score", "versions"):
            continue
        if isinstance(value, dict):
            package = value.get("package")
            rest = {k: v for k, v in value.items() if k != "package"}
            body = ", ".join(x for x in (str(package) if package else "", _compact(rest)) if x)
            parts.append(f"{name} [{body}]")
        else:
            parts.append(f"{name}: {_compact(value)}")
    versions = open_def.get("versions")
    if isinstance(versions, dict) and versions:
        parts.append("versions " + ", ".join(f"{p} {v}" for p, v in versions.items()))
    elif versions:
        parts.append(f"versions {_compact(versions)}")
    return "; ".join(parts) or NOT_RECORDED


def describe_metrics(metrics: dict[str, Any]) -> str:
    """One line naming the extraction rule version and the open-score definition."""
    if not metrics:
        return NOT_RECORDED
    parts = []
    rule = metrics.get("extraction_rule_version")
    parts.append(f"closed = accuracy, answer-extraction rule v{rule}" if rule is not None
                 else "closed = accuracy, answer-extraction rule not recorded")
    judge = metrics.get("extraction_judge")
    if isinstance(judge, dict):
        parts[-1] += f" + LLM judge {judge_name(judge)} where the rule finds no answer"
    parts.append(f"open = {describe_open(metrics.get('open'))}")
    shortcuts = metrics.get("shortcuts")
    if isinstance(shortcuts, dict):
        parts.append(f"shortcut baselines v{shortcuts.get('version', '?')} = best of "
                     f"{', '.join(shortcuts.get('rules') or [])} ({shortcuts.get('ties', '')})")
    # chance and controls: their definitions are in the manifest; the tables' notes and the controls
    # view state them where they are shown
    for name, value in metrics.items():
        if name not in ("extraction_rule_version", "open", "extraction_judge", "shortcuts", "chance", "controls"):
            parts.append(f"{name} = {_compact(value)}")
    return " | ".join(parts)


def judge_name(judge: dict[str, Any]) -> str:
    """``openai:MODEL (prompt v1, http://host:port/v1)`` from a recorded judge definition."""
    endpoint = judge.get("endpoint") if isinstance(judge.get("endpoint"), dict) else {}
    where = f", {endpoint['base_url']}" if endpoint.get("base_url") else ""
    return f"{judge.get('adapter')}:{judge.get('model')} (prompt v{judge.get('prompt_version')}{where})"


def _canonical(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def definitions_agree(runs: list["RunData"]) -> bool:
    """True when every run recorded the same metric definitions (or there is one run)."""
    return len({_canonical(run.metrics) for run in runs}) <= 1


def footer_lines(runs: list["RunData"], *, ci: bool = False) -> list[str]:
    """The footer every view prints: metric definitions (with a warning when runs differ), CI method."""
    groups: dict[str, list["RunData"]] = {}
    for run in runs:
        groups.setdefault(_canonical(run.metrics), []).append(run)
    lines: list[str] = []
    if len(groups) == 1:
        only = runs[0].metrics if runs else {}
        lines.append(f"Metric definitions: {describe_metrics(only)}")
    else:
        lines.append("WARNING: these runs used different metric definitions, so their numbers are not directly "
                     "comparable:")
        for members in groups.values():
            names = ", ".join(run.run_dir.name for run in members)
            lines.append(f"  {names}: {describe_metrics(members[0].metrics)}")
    if ci:
        methods = {_canonical(run.bootstrap): run.bootstrap for run in runs}
        for method in methods.values():
            if method:
                level = method.get("level", 0.95)
                lines.append(f"Intervals: {level:.0%} {method.get('method', 'bootstrap')} "
                             f"({method.get('n_resamples', '?')} resamples, seed {method.get('seed', '?')}).")
            else:
                lines.append("Intervals: 95% cluster bootstrap (settings not recorded in the run).")
    return lines


def not_scored_lines(runs: list["RunData"]) -> list[str]:
    """Per model: samples not evaluated for having more images than the model accepts, and other errors.

    Empty when every sample of every shown model was scored.
    """
    from medmim_eval.flags import not_scored_by_model

    counts = not_scored_by_model(c for run in runs for c in run.cells)
    if not counts:
        return []
    lines = ["Samples not scored, per model:"]
    for model, entry in counts.items():
        parts = []
        if entry.too_many_images:
            parts.append(f"{entry.too_many_images} not evaluated because they have more images than the model "
                         "accepts (nothing sent, never truncated)")
        if entry.other_errors:
            parts.append(f"{entry.other_errors} errored otherwise (rerun to retry)")
        lines.append(f"  {model}: " + "; ".join(parts))
    return lines


def judge_lines(runs: list["RunData"]) -> list[str]:
    """Per model of the runs that used an LLM judge: how many closed answers it decided, of how many asked.

    Empty when no run used a judge.
    """
    judged_runs = [run for run in runs if isinstance(run.metrics.get("extraction_judge"), dict)]
    if not judged_runs:
        return []
    names = sorted({judge_name(run.metrics["extraction_judge"]) for run in judged_runs})
    counts: dict[str, list[int]] = {}
    for run in judged_runs:
        for model in run.names.values():
            counts.setdefault(model, [0, 0, 0])
        for cell in run.cells:
            entry = counts.setdefault(cell.model, [0, 0, 0])
            entry[0] += cell.judged
            entry[1] += cell.judge_asked
            entry[2] += cell.judge_failed
    total = sum(entry[0] for entry in counts.values())
    lines = [f"Extraction judge {', '.join(names)}: asked only where the rule found no answer; it decided {total} "
             "answer(s), scored as the option it named. Per model:"]
    for model, (decided, asked, failed) in sorted(counts.items()):
        rest = asked - decided
        line = f"  {model}: judge decided {decided} of {asked} answer(s) the rule left unparseable"
        if rest:
            line += f" ({rest} still unparseable"
            line += f", {failed} of them after a failed judge request: rerun to ask again)" if failed else ")"
        lines.append(line)
    return lines

"""CircularEval: ``TASK@circular`` asks every closed item once per rotation of its options.

For an item with k options, rotation r (0 to k-1) shows the option texts shifted by r places: the
letters keep their order (A, B, C...), the letter at position i shows the text that stood at
position (i + r) mod k, and the gold answer moves with its text. Rotation 0 is the item as
released. Each rotation is an ordinary sample of the task ``TASK@circular``, keyed
``KEY@circular#rR`` with ``rotation`` R in its record, so records, resume and the response cache
(whose key includes the rotation, see :func:`medmim_eval.cache.cache_key`) keep rotations apart.
Open questions are left out. The cost is k requests per item instead of one.

A circular cell's ``score`` is the circular accuracy: the share of items answered right under
every one of their rotations (an item with an errored or unscored rotation is left out). Its
``metrics`` hold ``accuracy`` (over all rotations' answers), ``rotation_R`` (accuracy on the
rotation-R answers) and ``circular_accuracy``; its ``chance`` is the mean of 100/k^k (a uniform
guesser must be right k times). A model that always answers the same letter for an item is right
under exactly one rotation, so it scores 0. :func:`letter_bias` gives, per model, how often it
picks each letter when that letter is wrong; rotations make every letter wrong equally often, so
an unbiased model shows equal rates.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import BaseModel

from medmim_eval.errors import DataError
from medmim_eval.schema import Prompt, Sample, SampleRecord, TextPart

CIRCULAR = "circular"
DEFINITION = ("each closed item asked once per rotation of its options (k rotations for k options, letters "
              "re-assigned in order, the gold answer moved with its text); circular accuracy = right under every "
              "rotation; open questions left out")
ROTATION_MARK = "#r"


def rotate_options(options: dict[str, str], rotation: int) -> dict[str, str]:
    """The letters of ``options`` in order, each showing the text ``rotation`` places further on."""
    letters, texts = list(options), list(options.values())
    k = len(letters)
    return {letter: texts[(i + rotation) % k] for i, letter in enumerate(letters)}


def _rotated_text(text: str, options: dict[str, str]) -> str | None:
    """``text`` with its option block (``\\nA: ...`` lines, as the Med-MIM format writes it) showing
    ``options``; ``None`` when the text holds no option block."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("A:")), None)
    if start is None:
        return None
    out = lines[:start]
    for line in lines[start:]:
        stripped = line.strip()
        letter, sep, _ = stripped.partition(":")
        if sep and len(letter) == 1 and letter in options:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{letter}: {options[letter]}")
        elif stripped:
            continue  # the continuation of a multi-line option: its text moved with the option
        else:
            out.append(line)
    return "\n".join(out)


def rotate(sample: Sample, rotation: int) -> Sample:
    """The sample asked under ``rotation``: options, gold letter, prompt text, key and task changed.

    Raises:
        DataError: naming the sample when its prompt's option lines cannot be found.
    """
    from medmim_eval.medmim_format import parse_options

    options = rotate_options(sample.options, rotation)
    gold_text = sample.options[sample.answer]
    answer = next(letter for letter, text in options.items() if text == gold_text)
    parts: list[Any] = []
    rotated = False
    for part in sample.prompt.parts:
        if isinstance(part, TextPart) and not rotated:
            text = _rotated_text(part.text, options)
            if text is not None:
                parts.append(TextPart(text=text))
                rotated = True
                continue
        parts.append(part)
    prompt = Prompt(parts=parts)
    parsed = parse_options(prompt.text) if rotated else None
    if parsed is None or parsed.options != options:
        raise DataError(f"sample {sample.key} ({sample.file}): its options cannot be rotated (no one-per-line "
                        f"'A: text' option block found in the prompt); leave the task out of @{CIRCULAR}")
    metadata = {**sample.metadata, "control": CIRCULAR, "rotation": rotation, "rotations": len(options),
                "item_key": sample.key}
    return sample.model_copy(update={
        "key": f"{sample.key}@{CIRCULAR}{ROTATION_MARK}{rotation}", "task": f"{sample.task}@{CIRCULAR}",
        "options": options, "answer": answer, "prompt": prompt, "metadata": metadata})


def apply_circular(samples: list[Sample]) -> tuple[list[Sample], dict[str, Any]]:
    """Every rotation of every closed sample (item by item, rotation 0 first) and the definition for the manifest."""
    closed = [s for s in samples if s.kind == "closed" and s.options]
    rotated = [rotate(s, r) for s in closed for r in range(len(s.options))]
    definition = {"control": CIRCULAR, "definition": DEFINITION, "items": len(closed), "requests": len(rotated),
                  "open_left_out": sum(s.kind == "open" for s in samples)}
    return rotated, definition


def cost_line(label: str, samples: list[Sample], n_models: int) -> str:
    """The console line a run prints before it starts: what ``@circular`` costs (``samples``: the rotations run)."""
    items, requests = len({s.metadata.get("item_key", s.key) for s in samples}), len(samples)
    factor = f" ({requests / items:.3g}x the {items} of the standard task)" if items else ""
    models = f", {requests * n_models} for {n_models} models" if n_models > 1 else ""
    return (f"{label}: {items} closed item(s) asked once per rotation of their options = {requests} requests per "
            f"model{factor}{models}")


@dataclass
class CircularSummary:
    """What a circular cell shows: per-item values (0/100) and clusters for the interval, the metrics, chance."""

    score: float | None
    values: list[float]
    clusters: list[str]
    metrics: dict[str, float]
    chance: float | None


def circular_summary(scored: list[SampleRecord]) -> CircularSummary:
    """Circular and per-rotation accuracy of one cell's scored records (every rotation a record)."""
    metrics: dict[str, float] = {}
    by_rotation: dict[int, list[bool]] = defaultdict(list)
    items: dict[str, list[SampleRecord]] = defaultdict(list)
    for record in scored:
        by_rotation[record.rotation or 0].append(bool(record.correct))
        items[item_key(record.key)].append(record)
    for rotation, hits in sorted(by_rotation.items()):
        metrics[f"rotation_{rotation}"] = 100.0 * sum(hits) / len(hits)
    values, clusters, chances = [], [], []
    for key in sorted(items):
        records = items[key]
        k = records[0].n_options or len(records)
        if len({r.rotation for r in records}) < k:
            continue  # a rotation errored or is not scored yet: the item cannot be judged
        values.append(100.0 if all(r.correct for r in records) else 0.0)
        clusters.append(records[0].image_set or key)
        chances.append(100.0 / k**k)
    score = sum(values) / len(values) if values else None
    if score is not None:
        metrics["circular_accuracy"] = score
        metrics["circular_items"] = float(len(values))
    chance = sum(chances) / len(chances) if chances else None
    return CircularSummary(score=score, values=values, clusters=clusters, metrics=metrics, chance=chance)


def item_key(key: str) -> str:
    """The released sample key of a rotation's key (itself for any other key)."""
    head, sep, tail = key.rpartition(f"@{CIRCULAR}{ROTATION_MARK}")
    return head if sep and tail.isdigit() else key


class LetterBias(BaseModel):
    """How often a model picked ``letter`` among the answers where ``letter`` was a wrong option."""

    letter: str
    wrong: int
    picked: int

    @property
    def rate(self) -> float:
        return 100.0 * self.picked / self.wrong if self.wrong else 0.0


def letter_bias(records: Iterable[SampleRecord]) -> dict[str, list[LetterBias]]:
    """Per model, per letter: among its scored ``@circular`` answers where the letter is a wrong option, how
    often it picked that letter."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for record in records:
        if record.rotation is None or record.error is not None or record.correct is None or not record.options:
            continue
        for letter in record.options:
            if letter == record.gold:
                continue
            entry = counts[record.model][letter]
            entry[0] += 1
            entry[1] += record.extracted == letter
    return {model: [LetterBias(letter=letter, wrong=w, picked=p) for letter, (w, p) in sorted(by_letter.items())]
            for model, by_letter in sorted(counts.items())}


def letter_bias_table(records: Iterable[SampleRecord]) -> dict[str, list[dict[str, Any]]]:
    """:func:`letter_bias` as ``results.json`` keeps it (``Results.letter_bias``), rates included."""
    return {model: [{**b.model_dump(), "rate": b.rate} for b in letters]
            for model, letters in letter_bias(records).items()}


def footer_lines(runs: Iterable[Any]) -> list[str]:
    """Leaderboard footer lines for runs with ``@circular`` cells: what the score is, and each model's
    letter-position bias (from ``results.json``, else recomputed from ``samples.jsonl``).

    ``runs`` are :class:`medmim_eval.leaderboard.RunData` (``run_dir``, ``cells``, ``names``).
    """
    import json

    from medmim_eval.records import RESULTS_FILE, RecordStore

    lines: list[str] = []
    for run in runs:
        if not any(c.task.endswith(f"@{CIRCULAR}") for c in run.cells):
            continue
        table: dict[str, list[dict[str, Any]]] = {}
        try:
            table = json.loads((run.run_dir / RESULTS_FILE).read_text(encoding="utf-8")).get("letter_bias") or {}
        except (OSError, ValueError, AttributeError):
            pass
        if not table:
            table = letter_bias_table(RecordStore(run.run_dir).load(repair=False).values())
        for model, letters in table.items():
            shown = ", ".join(f"{b['letter']} {b['rate']:.0f}%" for b in letters)
            lines.append(f"Letter bias of {run.names.get(model, model)} on @{CIRCULAR} (how often it picks a letter "
                         f"when that letter is wrong): {shown}")
    if lines:
        lines.insert(0, f"@{CIRCULAR} columns: circular accuracy, right under every rotation of the options (chance "
                     "= mean of 100/k^k); per-rotation accuracies are in results.json (metrics rotation_R)")
    return lines

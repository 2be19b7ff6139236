"""CircularEval (``TASK@circular``): every closed item asked once per rotation of its options; the
score counts an item only when it is right under every rotation; per model, the letter-position bias."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from conftest import run_cli
from test_synth import KEYS, _load, _oracle

from medmim_eval.adapter import GenerationSettings
from medmim_eval.cache import ImageHasher, cache_key
from medmim_eval.circular import apply_circular, item_key, letter_bias, rotate
from medmim_eval.controls import base_key, split_control
from medmim_eval.errors import UnknownNameError
from medmim_eval.medmim_format import parse_options
from medmim_eval.metrics import OpenMetricsConfig, OpenScorer
from medmim_eval.schema import Sample, SampleRecord
from medmim_eval.scoring import aggregate, score_answer_explained
from medmim_eval.tasks import synth


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.ensure_suite(tmp_path_factory.mktemp("cache"), seed=synth.SUITE_SEED, split="test")


def _records(samples: list[Sample], reply: Callable[[Sample], str], model: str) -> list[SampleRecord]:
    """What the runner records for these replies (extraction and scoring as in a run)."""
    scorer = OpenScorer(OpenMetricsConfig(components=("rougeL_recall",)))
    out = []
    for s in samples:
        text = reply(s)
        extracted, correct, scores, how = score_answer_explained(s, text, scorer)
        out.append(SampleRecord(
            key=s.key, task=s.task, model=model, kind=s.kind, ability=s.ability, source=s.source, item_id=s.item_id,
            n_images=len(s.images), n_options=len(s.options) or None, image_set="|".join(s.image_set), gold=s.answer,
            output=text, extracted=extracted, correct=correct, options=dict(s.options), extraction=how, scores=scores,
            rotation=s.metadata.get("rotation")))
    return out


def test_each_rotation_moves_the_gold_answer_with_its_text(suite: Path) -> None:
    closed = [s for s in _load(suite, "coreference") if s.kind == "closed"][:20]
    rotated, definition = apply_circular(closed)
    assert definition["items"] == 20 and definition["requests"] == sum(len(s.options) for s in closed) == len(rotated)
    for sample in closed:
        k = len(sample.options)
        versions = [rotate(sample, r) for r in range(k)]
        assert [v.options[v.answer] for v in versions] == [sample.options[sample.answer]] * k
        assert sorted(v.answer for v in versions) == sorted(sample.options)  # the gold visits every letter once
        assert all(list(v.options) == list(sample.options) for v in versions)  # letters keep their order
        assert all(parse_options(v.prompt.text).options == v.options for v in versions)  # what the model reads
        assert versions[0].prompt == sample.prompt and versions[1].prompt != sample.prompt
        assert all(v.images == sample.images and v.task == f"{sample.task}@circular" for v in versions)
        assert {item_key(v.key) for v in versions} == {base_key(v.key) for v in versions} == {sample.key}


def test_open_questions_are_left_out(suite: Path) -> None:
    samples = _load(suite, "temporal")
    rotated, definition = apply_circular(samples)
    assert all(s.kind == "closed" for s in rotated)
    assert definition["open_left_out"] == sum(s.kind == "open" for s in samples) > 0


def test_the_cache_never_serves_one_rotation_for_another(suite: Path) -> None:
    sample = next(s for s in _load(suite, "temporal") if s.kind == "closed")
    versions = [rotate(sample, r) for r in range(len(sample.options))]
    # Even where two rotations read the same (options with equal texts), their keys differ.
    same_prompt = [v.model_copy(update={"prompt": sample.prompt}) for v in versions]
    hasher, settings = ImageHasher(), GenerationSettings()
    for group in (versions, same_prompt):
        keys = {cache_key({"m": 1}, v, settings, hasher) for v in group}
        assert len(keys) == len(group)
        assert cache_key({"m": 1}, sample, settings, hasher) not in keys


def test_circular_is_a_task_variant_and_unknown_names_list_it() -> None:
    assert split_control("synth-temporal@circular") == ("synth-temporal", "circular")
    with pytest.raises(UnknownNameError, match=r"@blind, @noimage, @shuffle, @single, @circular"):
        split_control("synth-temporal@circle")


@pytest.mark.parametrize("key", KEYS)
def test_the_pixel_oracle_is_unchanged_by_rotations(suite: Path, key: str) -> None:
    closed = [s for s in _load(suite, key) if s.kind == "closed"]

    def oracle(s: Sample) -> str:  # the letter whose option text the pixels support
        return next((letter for letter, text in s.options.items() if _oracle(key, s).lower() in text.lower()), "none")

    (standard,) = aggregate(_records(closed, oracle, "oracle"))
    rotated, _ = apply_circular(closed)
    (circular,) = aggregate(_records(rotated, oracle, "oracle"))
    assert standard.score is not None and standard.score > 90
    assert circular.score == pytest.approx(standard.score)
    assert circular.n_scored == len(rotated) and circular.metrics["circular_items"] == len(closed)
    rotations = [v for name, v in circular.metrics.items() if name.startswith("rotation_")]
    assert len(rotations) >= 2 and all(v == pytest.approx(standard.score) for v in rotations)


def test_a_letter_constant_predictor_scores_zero_and_shows_its_bias(suite: Path) -> None:
    closed = [s for s in _load(suite, "comparison") if s.kind == "closed"]
    rotated, _ = apply_circular(closed)
    records = _records(rotated, lambda s: "A", "always-a")
    (cell,) = aggregate(records)
    assert cell.metrics["accuracy"] > 0 and cell.score == 0.0
    assert cell.chance == pytest.approx(sum(100 / len(s.options) ** len(s.options) for s in closed) / len(closed))
    bias = {b.letter: b.rate for b in letter_bias(records)["always-a"]}
    assert bias["A"] == 100.0 and all(rate == 0.0 for letter, rate in bias.items() if letter != "A")


@pytest.mark.slow
def test_a_circular_run_states_its_cost_and_the_majority_baseline_scores_zero(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("run", "-m", "majority,random", "-t", "synth-temporal:closed,synth-temporal@circular",
                     "--limit", "10", "-o", str(out), env={"COLUMNS": "240"})
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    rotations = [r for r in records if r["task"] == "synth-temporal@circular"]
    per_model = len(rotations) // 2
    assert {len({item_key(r["key"]) for r in rotations})} == {10}  # --limit counts items, every rotation kept
    assert f"synth-temporal@circular: 10 closed item(s) asked once per rotation of their options = {per_model} " \
           "requests per model" in result.stderr
    assert per_model > 10 and all(r["rotation"] is not None for r in rotations)
    results = json.loads((out / "results.json").read_text())
    cells = {(c["model"], c["task"]): c for c in results["cells"]}
    majority = cells[("majority", "synth-temporal@circular")]
    assert majority["score"] == 0.0 and majority["metrics"]["accuracy"] > 0
    assert cells[("majority", "synth-temporal")]["score"] > 0
    assert set(results["letter_bias"]) == {"majority", "random"}
    assert "Letter bias of majority on @circular" in result.stdout

"""The six official benchmark files load with exactly the released counts and the quirks docs/task-format.md lists."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from medmim_eval.datadir import DataPaths
from medmim_eval.plugins import create_plugin_host
from medmim_eval.tasks_api import TaskContext, load_selection, select_tasks

EXPECTED = {  # task: (closed, open, images per item, options per item)
    "held-in-temporal": (903, 30, {2, 3}, {2, 3, 4}),
    "held-in-reasoning": (454, 30, {2}, {7}),
    "held-in-comparison": (208, 136, {2}, {2, 3, 4}),
    "held-in-coreference": (1403, 60, {2, 3}, {2, 3}),
    "held-out-rad": (293, 73, {2, 3}, {3}),
    "held-out-odir": (300, 300, {2}, {3, 4}),
}
CHANCE = {"held-in-comparison": 0.325, "held-in-coreference": 0.418, "held-in-reasoning": 0.143,
          "held-in-temporal": 0.387, "held-out-odir": 0.252, "held-out-rad": 0.333}


@pytest.fixture(scope="module")
def loaded(request: pytest.FixtureRequest) -> dict[str, list]:
    shared = request.getfixturevalue("shared_data")
    host = create_plugin_host(autoload=False)
    context = TaskContext(data=DataPaths.resolve(shared), cache_dir=Path("/nonexistent"))
    return {s.name: load_selection(s, host, context).samples for s in select_tasks("all", host)}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_counts_kinds_images_and_options(loaded: dict[str, list], task: str) -> None:
    closed, open_, images, options = EXPECTED[task]
    samples = loaded[task]
    kinds = Counter(s.kind for s in samples)
    assert (kinds["closed"], kinds["open"]) == (closed, open_)
    assert {len(s.images) for s in samples} == images
    closed_samples = [s for s in samples if s.kind == "closed"]
    assert {len(s.options) for s in closed_samples} <= options
    assert all(s.answer in s.options for s in closed_samples)


def test_held_in_totals_match_the_paper(loaded: dict[str, list]) -> None:
    held_in = [s for t, ss in loaded.items() if t.startswith("held-in") for s in ss]
    assert Counter(s.kind for s in held_in) == {"closed": 2968, "open": 256}


@pytest.mark.parametrize("task", sorted(CHANCE))
def test_chance_level_per_task(loaded: dict[str, list], task: str) -> None:
    closed = [s for s in loaded[task] if s.kind == "closed"]
    chance = sum(1 / len(s.options) for s in closed) / len(closed)
    assert chance == pytest.approx(CHANCE[task], abs=0.0015)


def test_keys_are_unique_although_ids_repeat(loaded: dict[str, list]) -> None:
    samples = [s for ss in loaded.values() for s in ss]
    assert len({s.key for s in samples}) == len(samples)
    assert len({s.item_id for s in samples}) < len(samples)  # the release reuses ids


def test_rad_options_with_two_space_separators_parse_cleanly(loaded: dict[str, list]) -> None:
    closed = [s for s in loaded["held-out-rad"] if s.kind == "closed"]
    assert all(not text.endswith(" ") and text for s in closed for text in s.options.values())
    assert all("\nA:" not in s.question for s in closed)


def test_odir_stray_quote_is_removed_from_the_question_but_not_the_prompt(loaded: dict[str, list]) -> None:
    odir = loaded["held-out-odir"]
    quoted = [s for s in odir if '?"' in s.prompt.text]
    assert len(quoted) >= 30
    assert all('?"' not in s.question for s in quoted)


def test_odir_item_with_a_gap_in_its_letters_keeps_its_letters(loaded: dict[str, list]) -> None:
    closed = [s for s in loaded["held-out-odir"] if s.kind == "closed"]
    gap = [s for s in closed if list(s.options) != [chr(65 + i) for i in range(len(s.options))]]
    assert len(gap) == 1
    assert list(gap[0].options) == ["A", "B", "D"] and gap[0].answer == "D"


def test_image_paths_resolve_per_source(loaded: dict[str, list], shared_data: Path) -> None:
    rad = loaded["held-out-rad"][0]
    assert rad.image_paths[0].startswith(str(shared_data / "vqa-rad" / "VQA_RAD Image Folder"))
    odir = loaded["held-out-odir"][0]
    assert odir.image_paths[0] == str(shared_data / "odir" / "Training Images" / "0_left.jpg")
    assert odir.source == "ODIR" and rad.source == "VQA-RAD"


def test_prompt_keeps_image_parts_in_order(loaded: dict[str, list]) -> None:
    sample = next(s for s in loaded["held-out-rad"] if len(s.images) == 3)
    images = sample.prompt.images
    assert [p.index for p in images] == [0, 1, 2]
    assert [p.path for p in images] == sample.image_paths
    assert sample.prompt.render().startswith("<image><image><image>")


def test_closed_and_open_suffix_selects_a_subset(shared_data: Path) -> None:
    host = create_plugin_host(autoload=False)
    context = TaskContext(data=DataPaths.resolve(shared_data), cache_dir=Path("/nonexistent"))
    (selection,) = select_tasks("held-out-rad:open", host)
    samples = load_selection(selection, host, context).samples
    assert len(samples) == 73 and {s.kind for s in samples} == {"open"}

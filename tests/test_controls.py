"""Image controls (TASK@blind, @noimage, @shuffle, @single): what each one sends, that they are
ordinary tasks (records, manifest, resume, cache) and the ``leaderboard --controls`` view."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli
from mixed_tasks import mixed_task
from PIL import Image
from test_synth import KEYS, _load, _oracle

from medmim_eval.adapter import GenerationSettings
from medmim_eval.cache import ImageHasher, cache_key
from medmim_eval.controls import CONTROLS, apply_control, mean_colour, refers_to_position, split_control
from medmim_eval.errors import UnknownNameError
from medmim_eval.medmim_format import load_medmim_file
from medmim_eval.plugins import create_plugin_host
from medmim_eval.records import RecordStore
from medmim_eval.schema import ImagePart
from medmim_eval.tasks import synth
from medmim_eval.tasks_api import select_tasks


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.ensure_suite(tmp_path_factory.mktemp("cache"), seed=synth.SUITE_SEED, split="test")


@pytest.fixture(scope="module")
def host():  # type: ignore[no-untyped-def]
    return create_plugin_host()


# ------------------------------------------------------------------------------- selection


def test_a_control_is_a_task_variant_also_for_groups_and_kinds(host) -> None:  # type: ignore[no-untyped-def]
    names = [s.name for s in select_tasks("synth@blind", host)]
    assert names == [f"synth-{k}@blind" for k in KEYS]
    a = select_tasks("synth-temporal@shuffle:closed", host)
    b = select_tasks("synth-temporal:closed@shuffle", host)
    assert a == b and a[0].kinds == ("closed",) and a[0].base == "synth-temporal" and a[0].control == "shuffle"
    both = select_tasks("synth-temporal,synth-temporal@noimage", host)
    assert [s.label for s in both] == ["synth-temporal", "synth-temporal@noimage"]


def test_an_unknown_control_is_one_line_naming_the_controls() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown control '@blnd'.*@blind, @noimage, @shuffle, @single"):
        split_control("held-out@blnd")


# ----------------------------------------------------------------------------- what is sent


def test_blind_sends_uniform_images_of_the_same_sizes_in_the_mean_colour(suite: Path, tmp_path: Path) -> None:
    samples = _load(suite, "comparison")
    blind, definition = apply_control(samples, "blind", seed=0, cache_dir=tmp_path)
    colour = mean_colour(p for s in samples for p in s.image_paths)
    assert definition["mean_colour_rgb"] == list(colour) and len(set(colour)) >= 1
    for original, control in zip(samples, blind):
        assert len(control.prompt.images) == len(original.prompt.images) == len(control.image_paths)
        assert control.key == original.key + "@blind" and control.task == original.task + "@blind"
        assert control.prompt.text == original.prompt.text and control.images == original.images
        for before, after in zip(original.image_paths, control.image_paths):
            with Image.open(before) as a, Image.open(after) as b:
                assert a.size == b.size
                assert b.convert("RGB").getextrema() == tuple((c, c) for c in colour)


def test_noimage_removes_images_and_single_keeps_the_first(suite: Path, tmp_path: Path) -> None:
    samples = _load(suite, "coreference")
    none, _ = apply_control(samples, "noimage", seed=0, cache_dir=tmp_path)
    single, _ = apply_control(samples, "single", seed=0, cache_dir=tmp_path)
    for original, a, b in zip(samples, none, single):
        assert a.prompt.images == [] and a.image_paths == [] and a.prompt.render() == original.prompt.text
        assert [p.path for p in b.prompt.images] == original.image_paths[:1] and b.images == original.images[:1]
        assert b.prompt.text == original.prompt.text


def test_shuffle_is_fixed_by_the_seed_and_never_the_identity(suite: Path, tmp_path: Path) -> None:
    samples = _load(suite, "coreference") + _load(suite, "temporal")
    first, definition = apply_control(samples, "shuffle", seed=3, cache_dir=tmp_path)
    again, _ = apply_control(samples, "shuffle", seed=3, cache_dir=tmp_path)
    other, _ = apply_control(samples, "shuffle", seed=4, cache_dir=tmp_path)
    assert definition["seed"] == 3 and first == again and first != other
    orders = Counter()
    for original, control in zip(samples, first):
        order = control.metadata["image_order"]
        assert sorted(order) == list(range(len(original.images))) and order != sorted(order)
        assert [p.path for p in control.prompt.images] == [original.image_paths[i] for i in order]
        assert [p.index for p in control.prompt.images] == list(range(len(order)))
        orders[tuple(order)] += 1
    assert len([o for o in orders if len(o) == 3]) >= 4  # every non-identity order of 3 occurs, not one fixed one


# ---------------------------------------------------------------------------- the predictors


def _oracle_accuracy(key: str, samples) -> tuple[int, float, float]:  # type: ignore[no-untyped-def]
    closed = [s for s in samples if s.kind == "closed"]
    hits = sum(_oracle(key, s).lower() in s.options[s.answer].lower() for s in closed)
    expected = sum(1 / len(s.options) for s in closed)
    sd = math.sqrt(sum((1 / len(s.options)) * (1 - 1 / len(s.options)) for s in closed))
    return hits, expected, sd


@pytest.mark.parametrize("key", KEYS)
def test_the_pixel_oracle_falls_to_chance_under_blind(suite: Path, tmp_path: Path, key: str) -> None:
    samples = _load(suite, key)
    hits, expected, sd = _oracle_accuracy(key, samples)
    assert hits > expected + 6 * sd  # far above chance with the images
    blind, _ = apply_control(samples, "blind", seed=0, cache_dir=tmp_path)
    hits, expected, sd = _oracle_accuracy(key, blind)
    assert abs(hits - expected) <= 3.5 * sd, (key, hits, expected)


def _answers(out: Path) -> dict[str, dict[str, str | None]]:
    by_control: dict[str, dict[str, str | None]] = {}
    for record in RecordStore(out).load().values():
        by_control.setdefault(record.control or "standard", {})[record.key.split("@")[0]] = record.output
    return by_control


def test_a_text_only_predictor_is_unchanged_by_every_control(tmp_path: Path) -> None:
    out = tmp_path / "run"
    tasks = ",".join(["synth-temporal", *(f"synth-temporal@{c}" for c in CONTROLS)])
    result = run_cli("run", "-m", "majority", "-t", tasks, "--limit", "12", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    answers = _answers(out)
    assert set(answers) == {"standard", *CONTROLS}
    assert len(answers["standard"]) == 24
    for control in CONTROLS:
        assert answers[control] == answers["standard"], control


# ------------------------------------------------------------------ an ordinary task in every respect


def test_a_control_run_records_resumes_and_keeps_its_definition(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "-m", "random", "-t", "synth-temporal@shuffle:closed", "--limit", "6", "-o", str(out), "-q"]
    assert run_cli(*args).returncode == 0
    records = list(RecordStore(out).load().values())
    assert len(records) == 6 and all(r.control == "shuffle" and r.task == "synth-temporal@shuffle" for r in records)
    assert all(r.refers_to_position is not None for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    (task,) = manifest["tasks"]
    assert task["name"] == "synth-temporal@shuffle" and task["control"]["control"] == "shuffle"
    assert task["control"]["seed"] == 0 and task["control"]["position_rule"]["version"] == 1
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [(c["task"], c["n"]) for c in cells] == [("synth-temporal@shuffle", 6)]
    again = run_cli(*args)
    assert again.returncode == 0
    assert [r.finished_at for r in RecordStore(out).load().values()] == [r.finished_at for r in records]


def test_the_cache_never_serves_a_control_the_standard_answer_or_back(tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [1, 2])
    samples = load_medmim_file(task, task="t", ability="a", image_root=lambda _t: task.parent)
    one_image = [s for s in samples if len(s.images) == 1]
    single, _ = apply_control(one_image, "single", seed=0, cache_dir=tmp_path)
    hasher, settings = ImageHasher(), GenerationSettings()
    for original, control in zip(one_image, single):
        assert control.prompt == original.prompt  # the very same prompt ...
        assert cache_key({"m": 1}, control, settings, hasher) != cache_key({"m": 1}, original, settings, hasher)


def test_control_and_standard_answers_live_apart_in_the_shared_cache(plugin_site: Path, tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [1, 2])
    log = tmp_path / "calls.jsonl"
    spec = f"echo-test,log={log}"

    def calls() -> list[str]:
        return [json.loads(line)["key"] for line in log.read_text().splitlines()] if log.exists() else []

    def run(tasks: str, out: str) -> None:
        result = run_cli("run", "-m", spec, "-t", tasks, "-o", str(tmp_path / out), "-q", pythonpath=[plugin_site])
        assert result.returncode == 0, result.stderr

    run(f"{task}", "standard")
    assert len(calls()) == 4
    run(f"{task}@single", "single")  # the one-image items send the very same prompt: still answered anew
    assert len(calls()) == 8 and all(k.endswith("@single") for k in calls()[4:])
    run(f"{task},{task}@single", "both")  # ... and each is then served from its own entries
    assert len(calls()) == 8
    records = RecordStore(tmp_path / "both").load().values()
    assert len(records) == 8 and all(r.cached for r in records)


def test_noimage_on_a_model_that_needs_an_image_is_flagged_not_an_error(plugin_site: Path, tmp_path: Path) -> None:
    task = mixed_task(tmp_path / "data", [2])
    out = tmp_path / "run"
    result = run_cli("run", "-m", "echo-test,min_images=1", "-t", f"{task}@noimage", "-o", str(out), "-q",
                     "--no-cache", pythonpath=[plugin_site])
    assert result.returncode == 0, result.stderr
    records = list(RecordStore(out).load().values())
    assert len(records) == 2 and all(r.error and r.error.type == "TooFewImagesError" for r in records)
    assert "at least min_images=1" in records[0].error.message  # type: ignore[union-attr]
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert sorted((c["errors"], c["too_many_images"]) for c in cells) == [(1, 1), (1, 1)]


# ---------------------------------------------------------------------------------- the view


def test_leaderboard_controls_pairs_scores_and_says_who_uses_the_images(plugin_site: Path, tmp_path: Path) -> None:
    standard, controls = tmp_path / "standard", tmp_path / "controls"
    first = run_cli("run", "-m", "echo-test,label=reader,majority", "-t", "toy-shapes:closed", "-o", str(standard),
                    "--no-cache", "-q", pythonpath=[plugin_site])
    assert first.returncode == 0, first.stderr
    second = run_cli("run", "-m", "echo-test,label=reader,majority", "-t", "toy-shapes@blind:closed,toy-shapes@shuffle:closed",
                     "-o", str(controls), "--no-cache", "-q", pythonpath=[plugin_site])
    assert second.returncode == 0, second.stderr
    result = run_cli("leaderboard", str(standard), str(controls), "--controls", "--format", "json",
                     pythonpath=[plugin_site])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["controls"]
    cells = {(c["model"], c["control"], c["subset"]): c for c in report["cells"]}
    blind = cells[("reader", "blind", "all")]
    assert blind["n"] == 12 and blind["standard"] == 100.0 and blind["score"] == 50.0 and blind["delta"] == -50.0
    assert blind["ci_high"] < 0
    # "Is the first image bright or dark?" names a position: all shuffled items are reported apart
    assert ("reader", "shuffle", "position-referring") in cells and ("reader", "shuffle", "order-free") not in cells
    verdicts = {v["model"]: v for v in report["verdicts"]}
    assert verdicts["reader"]["verdict"] == "yes" and verdicts["majority"]["verdict"] == "not measurable"
    assert cells[("majority", "blind", "all")]["delta"] == 0.0

    markdown = run_cli("leaderboard", str(standard), str(controls), "--controls", "--format", "markdown",
                       pythonpath=[plugin_site]).stdout
    assert "## Image controls" in markdown and "reader · toy-shapes: uses the images: yes" in markdown
    html_path = tmp_path / "report.html"
    html = run_cli("leaderboard", str(standard), str(controls), "--controls", "--format", "html", "-o",
                   str(html_path), "--max-records", "0", pythonpath=[plugin_site])
    assert html.returncode == 0, html.stderr
    text = html_path.read_text()
    assert '<section id="controls">' in text and "uses the images: yes" in text
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)  # anchors must be unique
    rich = run_cli("leaderboard", str(standard), str(controls), "--controls", pythonpath=[plugin_site])
    assert "Image controls" in rich.stdout and "uses the images: not measurable" in rich.stdout


# ------------------------------------------------------------------ position-referring items


def test_position_referring_items_are_found_on_the_official_files(shared_data: Path, host) -> None:  # type: ignore[no-untyped-def]
    from medmim_eval.datadir import DataPaths
    from medmim_eval.tasks_api import TaskContext, load_selection

    context = TaskContext(data=DataPaths.resolve(shared_data), cache_dir=shared_data / "unused")
    counts = {}
    for selection in select_tasks("held-in,held-out", host):
        samples = load_selection(selection, host, context).samples
        counts[selection.name] = (sum(refers_to_position(s) for s in samples), len(samples))
    assert counts == POSITION_COUNTS  # the table in the README's Scoring part


# (position-referring items, items) per official task, under POSITION_RULE version 1
POSITION_COUNTS: dict[str, tuple[int, int]] = {
    "held-in-temporal": (651, 933), "held-in-reasoning": (30, 484), "held-in-comparison": (225, 344),
    "held-in-coreference": (947, 1463), "held-out-rad": (331, 366), "held-out-odir": (598, 600),
}

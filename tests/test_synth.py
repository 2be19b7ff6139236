"""The bundled synthetic suite: determinism, format, balance, text-only chance, pixel dependence."""
from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from medmim_eval.datadir import DataPaths
from medmim_eval.medmim_format import load_medmim_file
from medmim_eval.registry import TaskEntry, TaskGroup
from medmim_eval.schema import Sample
from medmim_eval.tasks import synth
from medmim_eval.tasks.plugin import register_tasks
from medmim_eval.tasks_api import LoadedTask, TaskContext

KEYS = ("temporal", "reasoning", "comparison", "coreference")
ABILITY = {"temporal": "temporal", "reasoning": "reasoning", "comparison": "comparison", "coreference": "co-reference"}
# The test's own reading of a scan: findings are bright, tissue is mid-gray.
BRIGHT = 150
N_TRAIN_CLOSED = 180


def _load(folder: Path, key: str) -> list[Sample]:
    return load_medmim_file(folder / f"synth_{key}.json", task=f"synth-{key}", ability=ABILITY[key], image_root=lambda _t: folder)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def test_suite(cache: Path) -> Path:
    return synth.ensure_suite(cache, seed=synth.SUITE_SEED, split="test")


@pytest.fixture(scope="module")
def train_suite(cache: Path) -> Path:
    return synth.ensure_suite(cache, seed=synth.SUITE_SEED, split="train", n_closed=N_TRAIN_CLOSED, n_open=0)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path: Path) -> None:
    kwargs = dict(split="test", n_closed=9, n_open=3)
    synth.generate_suite(tmp_path / "a", seed=5, **kwargs)
    synth.generate_suite(tmp_path / "b", seed=5, workers=2, **kwargs)  # abilities drawn in two processes
    synth.generate_suite(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert len([n for n in a if n.endswith(".png")]) >= 4 * 12 * 2
    assert a == b
    for key in KEYS:
        assert a[f"synth_{key}.json"] != c[f"synth_{key}.json"]
    images_a = {v for n, v in a.items() if n.endswith(".png")}
    images_c = {v for n, v in c.items() if n.endswith(".png")}
    assert not images_a & images_c


def test_splits_share_no_image(tmp_path: Path) -> None:
    train = synth.generate_suite(tmp_path / "train", seed=0, split="train", n_closed=9, n_open=3)
    test = synth.generate_suite(tmp_path / "test", seed=0, split="test", n_closed=9, n_open=3)
    digests = {
        name: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / name).rglob("*.png")}
        for name in ("train", "test")
    }
    assert len(digests["train"]) == len(digests["test"]) > 50
    assert not digests["train"] & digests["test"]
    assert train["temporal"].read_bytes() != test["temporal"].read_bytes()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        synth.generate_suite(tmp_path, seed=0, split="dev", n_closed=1, n_open=1)
    with pytest.raises(ValueError):
        synth.ensure_suite(tmp_path, split="test", n_closed=-1)


# --------------------------------------------------------------------------- format, cache


def test_every_file_loads_with_expected_counts(test_suite: Path) -> None:
    assert test_suite.name == f"v{synth.GENERATOR_VERSION}-seed{synth.SUITE_SEED}-test"
    for key in KEYS:
        samples = _load(test_suite, key)
        kinds = Counter(s.kind for s in samples)
        assert kinds == {"closed": synth.DEFAULT_N_CLOSED, "open": synth.DEFAULT_N_OPEN}, key
        counts = Counter(len(s.images) for s in samples)
        assert set(counts) <= {2, 3}, key
        if key in ("temporal", "coreference"):
            assert counts[2] > 20 and counts[3] > 20, (key, counts)
        for s in samples:
            assert all(Path(p).is_file() for p in s.image_paths)
            tag = s.metadata["source_tag"]
            assert ("multichoice" in tag) == (s.kind == "closed") and ("conv" in tag) == (s.kind == "open")
            if s.kind == "closed":
                assert len(s.options) == len(set(s.options.values())) >= 2
                assert "gold_text_differs" not in s.metadata
            with Image.open(s.image_paths[0]) as image:
                assert image.mode == "L" and 64 <= image.width <= 256


def test_task_loaders_are_registered_and_reuse_the_cache(tmp_path: Path, cache: Path, test_suite: Path) -> None:
    registered: list[object] = []
    register_tasks(registered.append)
    entries = {e.name: e for e in registered if isinstance(e, TaskEntry)}
    groups = {g.name: g for g in registered if isinstance(g, TaskGroup)}
    assert "held-in-temporal" in entries  # the official tasks are still there
    assert set(groups["synth"].members) == {f"synth-{k}" for k in KEYS}
    context = TaskContext(data=DataPaths(root=tmp_path / "data"), cache_dir=cache, seed=123)
    entry = entries["synth-comparison"]
    assert (entry.ability, entry.table, entry.column) == ("comparison", "Synthetic", "Comparison")
    loaded = entry.load_loader()(context)
    assert isinstance(loaded, LoadedTask) and loaded.name == "synth-comparison"
    assert len(loaded.samples) == synth.DEFAULT_N_CLOSED + synth.DEFAULT_N_OPEN
    # the run's seed does not pick the suite
    folder = loaded.files[0].parent
    assert folder == cache / "synth" / f"v{synth.GENERATOR_VERSION}-seed{synth.SUITE_SEED}-test" == test_suite
    stamp = loaded.files[0].stat().st_mtime_ns
    again = entries["synth-coreference"].load_loader()(TaskContext(data=context.data, cache_dir=context.cache_dir, seed=7))
    assert again.files[0].parent == folder and loaded.files[0].stat().st_mtime_ns == stamp
    assert not [p.name for p in (cache / "synth").iterdir() if p.name.startswith(".")]  # no temp left


def test_interrupted_generation_leaves_no_complete_looking_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth.generate_suite

    def dies_midway(out_dir: Path, **kwargs: object) -> dict[str, Path]:
        real(out_dir, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "generate_suite", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        synth.ensure_suite(tmp_path, n_closed=3, n_open=1)
    assert list((tmp_path / "synth").iterdir()) == []
    monkeypatch.setattr(synth, "generate_suite", real)

    # A folder without its manifest (e.g. copied by hand, half deleted) is regenerated.
    final = synth.suite_dir(tmp_path, n_closed=3, n_open=1)
    final.mkdir(parents=True)
    (final / "synth_temporal.json").write_text("[]")
    folder = synth.ensure_suite(tmp_path, n_closed=3, n_open=1)
    assert folder == final and (folder / synth.MANIFEST).is_file()
    assert len(_load(folder, "temporal")) == 4


# ------------------------------------------------------------------------- answer balance


def test_gold_letters_and_answers_are_roughly_uniform(test_suite: Path) -> None:
    for key in KEYS:
        by_k: dict[int, list[Sample]] = defaultdict(list)
        for s in _load(test_suite, key):
            if s.kind == "closed":
                by_k[len(s.options)].append(s)
        for k, samples in by_k.items():
            for label, values in (("letter", [s.answer for s in samples]), ("text", [s.options[s.answer] for s in samples])):
                counts = Counter(values)
                assert len(counts) == k, (key, label, counts)
                expected = len(samples) / k
                chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
                assert chi2 < 13.8, (key, label, counts)  # p = 0.001 for df <= 2


# ------------------------------------------------------------------------ text-only chance


def _key(s: Sample) -> tuple[str, tuple[str, ...]]:
    return s.question, tuple(s.options.values())


def test_a_text_only_predictor_stays_at_chance(train_suite: Path, test_suite: Path) -> None:
    """Learn the most frequent gold per exact prompt text and per option set; test on the test split."""
    total_correct = 0.0
    total_expected = 0.0
    total_var = 0.0
    for key in KEYS:
        train = [s for s in _load(train_suite, key) if s.kind == "closed"]
        test = [s for s in _load(test_suite, key) if s.kind == "closed"]
        assert len(train) == N_TRAIN_CLOSED
        by_prompt: dict[tuple, Counter] = defaultdict(Counter)
        by_set: dict[tuple, Counter] = defaultdict(Counter)
        letters: Counter = Counter()
        for s in train:
            by_prompt[_key(s)][s.answer] += 1
            by_set[(s.question, frozenset(s.options.values()))][s.options[s.answer]] += 1
            letters[s.answer] += 1
        for predictor in ("prompt", "option set"):
            correct = 0
            for s in test:
                if predictor == "prompt":
                    seen = by_prompt.get(_key(s))
                    guess = seen.most_common(1)[0][0] if seen else letters.most_common(1)[0][0]
                else:
                    seen = by_set.get((s.question, frozenset(s.options.values())))
                    text = seen.most_common(1)[0][0] if seen else None
                    guess = next((l for l, t in s.options.items() if t == text), letters.most_common(1)[0][0])
                correct += guess == s.answer
            expected = sum(1 / len(s.options) for s in test)
            var = sum((1 / len(s.options)) * (1 - 1 / len(s.options)) for s in test)
            assert abs(correct - expected) <= 3.5 * math.sqrt(var), (key, predictor, correct, expected)
            total_correct += correct / 2
        total_expected += expected
        total_var += var
    # pooled over the four abilities (averaging the two predictors)
    assert abs(total_correct - total_expected) <= 3 * math.sqrt(total_var), (total_correct, total_expected)


# -------------------------------------------------------------------------- pixel oracle


def _bright_area(path: str) -> int:
    with Image.open(path) as image:
        return sum(image.convert("L").histogram()[BRIGHT:])


def _bright_pixels(path: str) -> tuple[list[tuple[int, int]], int]:
    with Image.open(path) as image:
        gray = image.convert("L")
        width = gray.width
        data = gray.tobytes()
    return [(i % width, i // width) for i, v in enumerate(data) if v >= BRIGHT], width


def _n_components(path: str, min_size: int = 8) -> int:
    pixels, _ = _bright_pixels(path)
    todo = set(pixels)
    n = 0
    while todo:
        stack = [todo.pop()]
        size = 0
        while stack:
            x, y = stack.pop()
            size += 1
            for nb in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if nb in todo:
                    todo.remove(nb)
                    stack.append(nb)
        n += size >= min_size
    return n


def _elongation(path: str) -> float:
    pixels, _ = _bright_pixels(path)
    n = len(pixels)
    if not n:
        return 1.0  # no finding: nothing elongated (a uniform image under @blind)
    mx = sum(x for x, _ in pixels) / n
    my = sum(y for _, y in pixels) / n
    sxx = sum((x - mx) ** 2 for x, _ in pixels) / n
    syy = sum((y - my) ** 2 for _, y in pixels) / n
    sxy = sum((x - mx) * (y - my) for x, y in pixels) / n
    half_trace, det = (sxx + syy) / 2, sxx * syy - sxy * sxy
    root = math.sqrt(max(half_trace**2 - det, 0.0))
    return math.sqrt((half_trace + root) / max(half_trace - root, 1e-9))


def _trend(before: int, after: int) -> int:
    """+1 grew, -1 shrank, 0 about the same (by bright area)."""
    ratio = after / max(before, 1)
    return 1 if ratio > 1.35 else -1 if ratio < 1 / 1.35 else 0


def _oracle(key: str, s: Sample) -> str:
    """The option text (closed) or the fact word (open) that the pixels support."""
    paths = s.image_paths
    if key == "temporal":
        trend = _trend(_bright_area(paths[0]), _bright_area(paths[-1]))
        return {1: "Larger", -1: "Smaller", 0: "About the same"}[trend]
    if key == "comparison":
        trend = _trend(_bright_area(paths[0]), _bright_area(paths[1]))
        return {1: "Worsening", -1: "Improving", 0: "Stable"}[trend]
    if key == "reasoning":
        n_long = sum(_elongation(p) > 1.5 for p in paths)
        return ("ball", "tubular", "flat")[n_long]
    areas = [_bright_area(p) for p in paths]
    q = s.question
    if "largest" in q:
        pick = areas.index(max(areas))
    elif "smallest" in q:
        pick = areas.index(min(areas))
    elif "two separate" in q:
        components = [_n_components(p) for p in paths]
        pick = components.index(2) if 2 in components else 0
    else:
        pick = areas.index(min(areas))  # the one with no finding
    return ("first", "second", "third")[pick]


@pytest.mark.parametrize("key,minimum", [("temporal", 0.97), ("comparison", 0.97), ("reasoning", 0.95), ("coreference", 0.97)])
def test_a_pixel_reading_oracle_answers_correctly(test_suite: Path, key: str, minimum: float) -> None:
    samples = _load(test_suite, key)
    closed = [s for s in samples if s.kind == "closed"]
    hits = sum(_oracle(key, s).lower() in s.options[s.answer].lower() for s in closed)
    assert hits / len(closed) >= minimum, (key, hits, len(closed))
    # the open references state the same facts
    open_ = [s for s in samples if s.kind == "open"]
    words = {"Larger": "larger", "Smaller": "smaller", "About the same": "unchanged", "Worsening": "worsening",
             "Improving": "improving", "Stable": "stable"}
    hits = sum(words.get(o := _oracle(key, s), o).lower() in s.answer.lower() for s in open_)
    assert hits / len(open_) >= minimum, (key, "open", hits, len(open_))

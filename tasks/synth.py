"""The bundled synthetic suite: four Med-MIM abilities on generated scans, no download needed.

``generate_suite`` draws, from one seed, multi-image items with known answers and writes them in
the official Med-MIM JSON format (one file per ability, image paths relative to the file's
folder, closed items tagged ``SYNTH_multichoice_<ability>``, open ones ``SYNTH_conv_<ability>``):

- temporal: one lesion over 2-3 visits that grows, shrinks or stays; forecast the next visit.
- reasoning: frontal and lateral views of one finding; its 3-D shape (ball, rod, plate) follows
  only from both views together (a round view alone fits a ball or a rod seen end-on).
- comparison: prior and current scan; the lesion burden grew (or a lesion appeared), shrank (or
  one vanished) or stayed: worsening / improving / stable.
- co-reference: 2-3 scans; which one shows the largest lesion, the smallest, two lesions, none.

Answers depend on the pixels only. Answer classes, gold letters, question wording and image
counts are each balanced or drawn independently of one another, so the prompt text carries no
information about the answer and a text-only model stays at chance.

The evaluation tasks (``synth-temporal`` ...) always use the fixed ``SUITE_SEED``, not the run's
``--seed``: the suite is the same data across runs and machines, and a run's seed only affects
what it is meant to affect (sampling, resampling). For another draw, call ``generate_suite`` with
another seed and pass the JSON files as tasks. ``GENERATOR_VERSION`` changes whenever the same seed
would produce different data; it is part of the cache folder name.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from medmim_eval.medmim_format import IMAGE_TOKEN, load_medmim_file
from medmim_eval.tasks.synth_draw import Blob, Body, draw_scan, place, round_blob
from medmim_eval.tasks_api import LoadedTask, TaskContext

GENERATOR_VERSION = 1
SUITE_SEED = 0
SPLITS = ("train", "val", "test")
DEFAULT_N_CLOSED = 120
DEFAULT_N_OPEN = 40
MANIFEST = "manifest.json"
LETTERS = "ABCDEFG"
ORDINALS = ("first", "second", "third")
_STALE_TEMP_S = 3600


@dataclass(frozen=True)
class SynthAbility:
    key: str  # file and tag stem: synth_<key>.json, SYNTH_multichoice_<key>
    task: str
    ability: str  # the ability label used by the official tasks
    column: str
    description: str

    @property
    def file(self) -> str:
        return f"synth_{self.key}.json"


ABILITIES: tuple[SynthAbility, ...] = (
    SynthAbility("temporal", "synth-temporal", "temporal", "Temporal", "forecast a lesion's size at the next visit from 2-3 visits"),
    SynthAbility("reasoning", "synth-reasoning", "reasoning", "Reasoning", "3-D shape of a finding from frontal and lateral views"),
    SynthAbility("comparison", "synth-comparison", "comparison", "Comparison", "prior vs current scan: improving, stable or worsening"),
    SynthAbility("coreference", "synth-coreference", "co-reference", "Co-reference", "which of 2-3 scans shows a described finding"),
)


@dataclass
class _Case:
    """One drawn item before it gets text: images plus everything the text needs."""

    images: list[Image.Image]
    options: tuple[str, ...]  # canonical order; shuffled when written
    gold: int  # index into options
    questions: tuple[str, ...]  # closed wordings; one is drawn at random
    open_questions: tuple[str, ...]
    reference: str


# --------------------------------------------------------------------------- temporal

_TEMPORAL_OPTIONS = ("Larger than in the last image", "Smaller than in the last image", "About the same size as in the last image")
_TEMPORAL_Q = (
    "These scans of one patient were taken at successive visits, oldest first. If the current trend continues, how will the lesion look at the next visit?",
    "The images show the same lesion at consecutive follow-up visits in chronological order. What is the most likely size of the lesion at the next follow-up?",
    "Serial scans of the same patient are shown in the order they were acquired. Forecast the lesion at the next scan.",
)
_TEMPORAL_OPEN_Q = (
    "These scans of one patient were taken at successive visits, oldest first. Describe how the lesion changes and what the next visit will most likely show.",
    "The images show the same lesion at consecutive follow-up visits in chronological order. How is the lesion evolving, and what do you expect at the next follow-up?",
)
_TEMPORAL_REF = (
    "The lesion grows from visit to visit, so the next scan will most likely show a larger lesion.",
    "The lesion shrinks from visit to visit, so the next scan will most likely show a smaller lesion.",
    "The lesion keeps about the same size at every visit, so the next scan will most likely show it unchanged.",
)


def _temporal(rng: random.Random, n_images: int, cls: int, variant: int) -> _Case:
    body = Body.random(rng)
    r_mid = rng.uniform(10, 16)
    steps = [i - (n_images - 1) / 2 for i in range(n_images)]  # -1,0,1 or -.5,.5
    if cls == 2:
        factors = [rng.uniform(0.97, 1.03) for _ in steps]
        radii = [r_mid * f for f in factors]
    else:
        step = rng.uniform(1.3, 1.5) ** (1 if cls == 0 else -1)
        radii = [r_mid * step**s for s in steps]
    (x, y), = place(rng, body, [max(radii) * 1.08 + 2])
    base = round_blob(rng, x, y, 1.0)
    images = [
        draw_scan(rng, body, [base.scaled(r).moved(rng.uniform(-2, 2), rng.uniform(-2, 2))]) for r in radii
    ]
    return _Case(images, _TEMPORAL_OPTIONS, cls, _TEMPORAL_Q, _TEMPORAL_OPEN_Q, _TEMPORAL_REF[cls])


# --------------------------------------------------------------------------- reasoning

_REASONING_OPTIONS = ("A round, ball-shaped nodule", "A tubular, rod-shaped structure", "A flat, plate-shaped lesion")
_REASONING_Q = (
    "The two images are frontal and lateral views of the same finding, shown at different magnifications. Taking both views into account, what is the three-dimensional shape of the finding?",
    "Both images show one and the same finding, seen from the front and from the side. Which description of its three-dimensional shape fits both views?",
    "The first image is a frontal view and the second a lateral view of a single finding. What shape does the finding have in three dimensions?",
)
_REASONING_OPEN_Q = (
    "The two images are frontal and lateral views of the same finding. Describe how it looks in each view and what that implies about its three-dimensional shape.",
    "Both images show one and the same finding, seen from the front and from the side. What is its three-dimensional shape, and why?",
)
_REASONING_SHAPE = ("a round, ball-shaped nodule", "a tubular, rod-shaped structure", "a flat, plate-shaped lesion")


def _reasoning(rng: random.Random, n_images: int, cls: int, variant: int) -> _Case:
    # Which view shows an elongated outline: ball (no, no), rod (one of the two), plate (both).
    elongated = {0: (False, False), 1: (variant == 0, variant == 1), 2: (True, True)}[cls]
    r = rng.uniform(7, 10) if cls == 0 else rng.uniform(5.5, 8.5)
    length = r * rng.uniform(2.1, 2.6)
    images = []
    for is_long in elongated:
        body = Body.random(rng)
        zoom = rng.uniform(0.85, 1.2)
        a = (length if is_long else r) * zoom
        b = r * zoom
        (x, y), = place(rng, body, [a * 1.06])
        angle = rng.uniform(0, math.pi)
        blob = Blob(x, y, a, b, angle, rng.uniform(0.02, 0.05), rng.randint(3, 5), rng.uniform(0, 2 * math.pi))
        images.append(draw_scan(rng, body, [blob]))
    looks = ["elongated" if e else "round" for e in elongated]
    reference = (
        f"The finding looks {looks[0]} in the frontal view and {looks[1]} in the lateral view, "
        f"so it is {_REASONING_SHAPE[cls]}."
    )
    return _Case(images, _REASONING_OPTIONS, cls, _REASONING_Q, _REASONING_OPEN_Q, reference)


# --------------------------------------------------------------------------- comparison

_COMPARISON_OPTIONS = ("Improving", "Stable", "Worsening")
_COMPARISON_Q = (
    "The first image is the prior scan and the second image is the current scan of the same patient. Compared with the prior scan, how has the disease progressed?",
    "Two scans of one patient are shown, the earlier one first. How would you describe the change from the earlier to the later scan?",
    "Compare the current scan (second image) with the previous scan (first image). What is the disease status?",
)
_COMPARISON_OPEN_Q = (
    "The first image is the prior scan and the second image is the current scan of the same patient. Describe the change between them.",
    "Two scans of one patient are shown, the earlier one first. What has changed, and is the disease improving, stable or worsening?",
)


def _comparison(rng: random.Random, n_images: int, cls: int, variant: int) -> _Case:
    """cls 0 improving, 1 stable, 2 worsening; variant 0 changes size, 1 changes the count."""
    body = Body.random(rng)
    by_count = variant == 1 and cls != 1
    if by_count:
        n_prior = 2 if cls == 0 else 1
        radii = [rng.uniform(8, 12) for _ in range(n_prior)]
    else:
        n_prior = rng.choice((1, 2))
        radii = [rng.uniform(7, 13) if n_prior == 1 else rng.uniform(7, 10.5) for _ in range(n_prior)]
    grow = rng.uniform(1.35, 1.6)
    factor = {0: 1 / grow, 1: rng.uniform(0.96, 1.04), 2: grow}[cls]
    extents = [r * max(1.0, 1.0 if by_count else factor) * 1.08 + 1 for r in radii]
    prior = [round_blob(rng, x, y, r) for (x, y), r in zip(place(rng, body, extents), radii)]
    if by_count and cls == 2:  # a new lesion appears
        r_new = radii[0] * rng.uniform(0.85, 1.15)
        (x, y), = place(rng, body, [r_new * 1.08 + 1], fixed=prior)
        current = prior + [round_blob(rng, x, y, r_new)]
    elif by_count:  # one of two lesions is gone
        current = [prior[rng.randrange(2)]]
    else:
        current = [b.scaled(factor) for b in prior]
    current = [b.moved(rng.uniform(-2, 2), rng.uniform(-2, 2)) for b in current]
    images = [draw_scan(rng, body, prior), draw_scan(rng, body, current)]
    what = "lesion has" if len(prior) == 1 else "lesions have"
    reference = {
        (0, False): f"Compared with the prior scan, the {what} become smaller, so the disease is improving.",
        (0, True): "Compared with the prior scan, one of the two lesions has disappeared, so the disease is improving.",
        (1, False): "Compared with the prior scan, the findings are unchanged in number and size, so the disease is stable.",
        (2, False): f"Compared with the prior scan, the {what} grown larger, so the disease is worsening.",
        (2, True): "Compared with the prior scan, a new lesion has appeared, so the disease is worsening.",
    }[(cls, by_count)]
    return _Case(images, _COMPARISON_OPTIONS, cls, _COMPARISON_Q, _COMPARISON_OPEN_Q, reference)


# --------------------------------------------------------------------------- co-reference

_COREF_TARGETS = ("the largest lesion", "the smallest lesion", "two separate lesions", "no visible lesion")
_COREF_OTHERS = (
    "while the lesions in the other images are smaller",
    "while the lesions in the other images are larger",
    "while the other images show a single lesion each",
    "while the other images each show one lesion",
)


def _coreference(rng: random.Random, n_images: int, cls: int, variant: int) -> _Case:
    """cls: the position of the target image; variant: which target description."""
    body = Body.random(rng)
    target = _COREF_TARGETS[variant]
    images = []
    for position in range(n_images):
        is_target = position == cls
        if variant == 0:
            radii = [rng.uniform(16, 21) if is_target else rng.uniform(8, 12)]
        elif variant == 1:
            radii = [rng.uniform(4.5, 6.5) if is_target else rng.uniform(11, 16)]
        elif variant == 2:
            radii = [rng.uniform(6, 10), rng.uniform(6, 10)] if is_target else [rng.uniform(8, 13)]
        else:
            radii = [] if is_target else [rng.uniform(7, 13)]
        centres = place(rng, body, [r * 1.08 + 1 for r in radii])
        images.append(draw_scan(rng, body, [round_blob(rng, x, y, r) for (x, y), r in zip(centres, radii)]))
    names = [f"the {o}" for o in ORDINALS[:n_images]]
    either = " or ".join(names) if n_images == 2 else f"{', '.join(names[:-1])} or {names[-1]}"
    questions = (
        f"Which image, {either}, shows {target}?",
        f"Which of these {n_images} scans contains {target}?",
        f"Identify the image that shows {target}.",
    )
    open_questions = (
        f"Which of these {n_images} images shows {target}? Answer in one sentence.",
        f"Look at the {n_images} scans and tell which one contains {target}.",
    )
    options = tuple(f"The {o} image" for o in ORDINALS[:n_images])
    reference = f"The {ORDINALS[cls]} image shows {target}, {_COREF_OTHERS[variant]}."
    return _Case(images, options, cls, questions, open_questions, reference)


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class _Design:
    make: Callable[[random.Random, int, int, int], _Case]
    image_counts: tuple[int, ...]
    n_classes: Callable[[int], int]  # answer classes for an image count
    n_variants: int


_DESIGNS: dict[str, _Design] = {
    "temporal": _Design(_temporal, (2, 3), lambda n: 3, 1),
    "reasoning": _Design(_reasoning, (2,), lambda n: 3, 2),
    "comparison": _Design(_comparison, (2,), lambda n: 3, 2),
    "coreference": _Design(_coreference, (2, 3), lambda n: n, len(_COREF_TARGETS)),
}


def _balanced(rng: random.Random, n: int, k: int) -> list[int]:
    values = [i % k for i in range(n)]
    rng.shuffle(values)
    return values


def _balanced_within(rng: random.Random, groups: list[int], k_of: Callable[[int], int]) -> list[int]:
    """Per item, a value in range(k_of(group)), balanced within each group of equal ``groups``."""
    out = [0] * len(groups)
    for group in sorted(set(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        for i, value in zip(members, _balanced(rng, len(members), k_of(group))):
            out[i] = value
    return out


def _items(rng: random.Random, key: str, split: str, kind: str, n: int, folder: Path) -> list[dict]:
    design = _DESIGNS[key]
    counts = [design.image_counts[v] for v in _balanced(rng, n, len(design.image_counts))]
    classes = _balanced_within(rng, counts, design.n_classes)
    variants = _balanced(rng, n, design.n_variants)
    letters = _balanced_within(rng, counts, design.n_classes)  # one option per class
    tag = "multichoice" if kind == "closed" else "conv"
    items = []
    for i in range(n):
        case = design.make(rng, counts[i], classes[i], variants[i])
        name = f"{kind[0]}{i:04d}"
        paths = []
        for j, image in enumerate(case.images):
            rel = f"images/{key}/{name}_{j}.png"
            # zlib level 1: a third of the default's time for 15 % more bytes, the same pixels
            image.save(folder / rel, format="PNG", compress_level=1)
            paths.append(rel)
        tokens = IMAGE_TOKEN * len(paths)
        if kind == "closed":
            others = [o for k, o in enumerate(case.options) if k != case.gold]
            rng.shuffle(others)
            order = others[: letters[i]] + [case.options[case.gold]] + others[letters[i] :]
            question = rng.choice(case.questions)
            user = tokens + question + "\n" + "".join(f"{LETTERS[k]}: {text}\n" for k, text in enumerate(order))
            answer = f"{LETTERS[letters[i]]}: {case.options[case.gold]}"
        else:
            user = tokens + rng.choice(case.open_questions)
            answer = case.reference
        items.append(
            {
                "id": f"synth-{key}-{split}-{name}",
                "images": paths,
                "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                "source": f"SYNTH_{tag}_{key}",
            }
        )
    return items


def _check_args(seed: int, split: str, n_closed: int, n_open: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if n_closed < 0 or n_open < 0:
        raise ValueError("n_closed and n_open must not be negative")
    if not isinstance(seed, int):
        raise TypeError("seed must be an int")


def _write_ability(out_dir: Path, key: str, file: str, seed: int, split: str, n_closed: int, n_open: int) -> Path:
    """One ability's file and images (its own random stream, so abilities can be drawn in parallel)."""
    (out_dir / "images" / key).mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"medmim-synth/v{GENERATOR_VERSION}/seed{seed}/{split}/{key}")
    items = _items(rng, key, split, "closed", n_closed, out_dir)
    items += _items(rng, key, split, "open", n_open, out_dir)
    path = out_dir / file
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def generate_suite(
    out_dir: Path, *, seed: int, split: str = "test", n_closed: int = DEFAULT_N_CLOSED, n_open: int = DEFAULT_N_OPEN,
    workers: int = 1,
) -> dict[str, Path]:
    """Write the four ability files (and their images) into ``out_dir``; return ``{key: json path}``.

    Keys are the ability keys ``temporal``, ``reasoning``, ``comparison``, ``coreference``. Each
    file holds ``n_closed`` closed then ``n_open`` open items. The same (seed, split, sizes) give
    byte-identical files; each split and ability draws from its own random stream (seeded with a
    string naming generator version, seed, split and ability), so splits never share a draw and
    ``workers`` > 1 draws the abilities in that many processes with the same result.
    Writes in place: use ``ensure_suite`` for an atomic, cached folder.
    """
    _check_args(seed, split, n_closed, n_open)
    out_dir = Path(out_dir)
    jobs = [(out_dir, spec.key, spec.file, seed, split, n_closed, n_open) for spec in ABILITIES]
    if workers <= 1:
        return {job[1]: _write_ability(*job) for job in jobs}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: the caller may hold threads (torch) that a forked child would inherit half-locked.
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {job[1]: pool.submit(_write_ability, *job) for job in jobs}
        return {key: future.result() for key, future in futures.items()}


def suite_dir(cache_dir: Path, *, seed: int = SUITE_SEED, split: str = "test", n_closed: int = DEFAULT_N_CLOSED, n_open: int = DEFAULT_N_OPEN) -> Path:
    """The cache folder of one suite; non-default sizes get their own folder."""
    name = f"v{GENERATOR_VERSION}-seed{seed}-{split}"
    if (n_closed, n_open) != (DEFAULT_N_CLOSED, DEFAULT_N_OPEN):
        name += f"-c{n_closed}-o{n_open}"
    return Path(cache_dir) / "synth" / name


def _complete(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return manifest.get("generator_version") == GENERATOR_VERSION and all(
            (folder / f).is_file() for f in manifest["files"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove_stale_temps(parent: Path, name: str) -> None:
    for old in parent.glob(f".tmp-{name}-*"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def ensure_suite(
    cache_dir: Path, *, seed: int = SUITE_SEED, split: str = "test", n_closed: int = DEFAULT_N_CLOSED, n_open: int = DEFAULT_N_OPEN,
    workers: int = 1,
) -> Path:
    """Return the complete suite folder under ``cache_dir/synth``, generating it if needed.

    Generation goes into a temporary sibling folder that is renamed into place only when
    complete (its ``manifest.json`` written last), so an interrupted run leaves no folder that
    looks complete. Concurrent callers each generate; the first rename wins and the others
    discard their copy and use the winner's.
    """
    _check_args(seed, split, n_closed, n_open)
    final = suite_dir(cache_dir, seed=seed, split=split, n_closed=n_closed, n_open=n_open)
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        paths = generate_suite(tmp, seed=seed, split=split, n_closed=n_closed, n_open=n_open, workers=workers)
        manifest = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "split": split,
            "n_closed": n_closed,
            "n_open": n_open,
            "files": sorted(p.name for p in paths.values()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if final.exists() and not _complete(final):
            # A broken folder (e.g. files deleted by hand): move it aside, then replace it.
            aside = final.with_name(f".tmp-{final.name}-broken-{os.getpid()}")
            os.replace(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not _complete(final):  # lost a race to a complete folder is fine; anything else is not
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------- loaders


def load_ability(context: TaskContext, key: str) -> LoadedTask:
    """Load one ability of the fixed-seed evaluation suite, generating it into the cache first.

    ``context.split="train"`` loads the training split instead; ``context.options`` may set
    ``suite_seed``, ``n_closed``, ``n_open`` and ``workers`` (a training recipe's data settings)."""
    spec = next(s for s in ABILITIES if s.key == key)
    settings = {k: int(context.options[k]) for k in ("n_closed", "n_open", "workers") if k in context.options}
    folder = ensure_suite(context.cache_dir, seed=int(context.options.get("suite_seed", SUITE_SEED)),
                          split=context.split, **settings)
    path = folder / spec.file
    samples = load_medmim_file(path, task=spec.task, ability=spec.ability, image_root=lambda _tag: folder)
    return LoadedTask(spec.task, samples, [path])


def load_temporal(context: TaskContext) -> LoadedTask:
    return load_ability(context, "temporal")


def load_reasoning(context: TaskContext) -> LoadedTask:
    return load_ability(context, "reasoning")


def load_comparison(context: TaskContext) -> LoadedTask:
    return load_ability(context, "comparison")


def load_coreference(context: TaskContext) -> LoadedTask:
    return load_ability(context, "coreference")

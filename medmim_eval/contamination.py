"""The contamination audit: which benchmark items appear in training data, by image and by text.

Per benchmark item (a :class:`~medmim_eval.schema.Sample`) against every training item
(:mod:`medmim_eval.training_data`):

- an image matches a training image by content where both files are here (same SHA-256 of the
  bytes, or a near duplicate by pHash and dHash, :mod:`medmim_eval.image_hashes`) and by its
  relative path where either file is absent (the credentialed held-in images);
- ``image_set``: one training item has the same images (as a set, each matched as above);
  ``any_image``: at least one image matches;
- ``question``: the normalised question (options split off) equals a training question;
  ``answer``: the normalised reference answer (closed: the gold option's text) equals a training
  answer; ``question_answer``: one training turn pair has both;
- ``ngram13``: the item's text (prompt with options, then answer) shares a 13-gram of normalised
  words with one training item's text;
- ``contaminated``: any of the criterion's flags, by default ``image_set`` alone (``audit
  contamination --criterion`` picks others); the items ``run --exclude-contaminated`` leaves out.
  The text flags are not in the default because templates set them on items whose own content was
  never trained on: a closed question of a shared template with one of its k answers matches
  ``question_answer`` by chance, and templated phrasings (``"based on the visual information from
  the x ray images which of the following"``) match ``ngram13``.

Normalisation: Unicode NFKC, ``<image>`` removed, lower case, words = runs of letters and digits.
"""
from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from pydantic import BaseModel, Field

from medmim_eval import SCHEMA_VERSION
from medmim_eval.image_hashes import DHASH_MAX, PHASH_MAX, ImageHashes, NearIndex, hash_file
from medmim_eval.schema import Sample
from medmim_eval.training_data import TrainFile, TrainItem, relative_image

NGRAM = 13
FLAGS = ("image_set", "any_image", "question", "answer", "question_answer", "ngram13", "contaminated")
CRITERION_FLAGS = ("image_set", "any_image", "question", "answer", "question_answer", "ngram13")
DEFAULT_CRITERION = ("image_set",)
LABELS = {"image_set": "image set", "any_image": "any image", "question": "question", "answer": "answer",
          "question_answer": "question+answer", "ngram13": "13-gram", "contaminated": "contaminated"}
EXAMPLES = 5
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Lower-case words (letters and digits) joined by single spaces; image tokens and punctuation dropped."""
    text = unicodedata.normalize("NFKC", text).replace("<image>", " ").lower()
    return " ".join(w for w in _WORD.findall(text.replace("_", " ")))


def ngrams(text: str, n: int = NGRAM) -> set[str]:
    words = normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


class TaskContamination(BaseModel):
    """One task's audit. ``counts``/``percent`` per flag (see the module doc) over ``n_items``;
    ``examples`` up to five item keys per flag; ``contaminated_keys`` every key ``run
    --exclude-contaminated`` leaves out. ``images`` counts the task's distinct images: ``here``
    (compared by content) and ``absent`` (compared by relative path only); ``image_matches`` the
    distinct matched images by how they matched (``exact``, ``near``, ``path``)."""

    task: str
    n_items: int
    counts: dict[str, int] = Field(default_factory=dict)
    percent: dict[str, float] = Field(default_factory=dict)
    examples: dict[str, list[str]] = Field(default_factory=dict)
    contaminated_keys: list[str] = Field(default_factory=list)
    images: dict[str, int] = Field(default_factory=dict)
    image_matches: dict[str, int] = Field(default_factory=dict)


class ContaminationAudit(BaseModel):
    version: int = SCHEMA_VERSION
    train_files: list[dict[str, Any]] = Field(default_factory=list)
    train_items: int = 0
    train_images: dict[str, int] = Field(default_factory=dict)
    tasks: list[TaskContamination] = Field(default_factory=list)
    definitions: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def excluded_keys(self) -> dict[str, list[str]]:
        """Task -> the keys of its contaminated items."""
        return {t.task: list(t.contaminated_keys) for t in self.tasks}


def definition(criterion: Sequence[str] = DEFAULT_CRITERION) -> dict[str, Any]:
    return {
        "image_identity": "same SHA-256 of the file bytes, or pHash AND dHash Hamming distances within the thresholds "
                          "(both files here); same relative path (either file absent)",
        "phash_max": PHASH_MAX, "dhash_max": DHASH_MAX, "hash_bits": 64,
        "image_set": "one training item has the same images (as a set)",
        "any_image": "at least one of the item's images is in a training item",
        "normalisation": "NFKC, <image> removed, lower case, words = runs of letters and digits",
        "question": "normalised question (options split off) equals a training question",
        "answer": "normalised reference answer (closed: the gold option's text) equals a training answer",
        "question_answer": "one training user/assistant turn pair has both the question and the answer",
        "ngram13": f"the item's prompt text and answer share a {NGRAM}-gram of normalised words with one training item",
        "contaminated": " or ".join(criterion),
    }


class _ImageHasher:
    """Fingerprints of image files, each file read once; unreadable files are counted as absent, with the reason."""

    def __init__(self) -> None:
        self.done: dict[str, ImageHashes | None] = {}
        self.unreadable: dict[str, str] = {}

    def get(self, path: str) -> ImageHashes | None:
        if path not in self.done:
            file = Path(path)
            result = None
            if file.is_file():
                try:
                    result = hash_file(file)
                except Exception as exc:  # noqa: BLE001 - PIL raises many types for a broken image
                    self.unreadable[path] = f"{type(exc).__name__}: {exc}"
            self.done[path] = result
        return self.done[path]


class TrainingIndex:
    """Lookups over the training items: images by content, near hash and path; questions, answers, pairs, 13-grams."""

    def __init__(self, items: Sequence[TrainItem], hasher: _ImageHasher | None = None) -> None:
        self.items = items
        self.hasher = hasher or _ImageHasher()
        self.by_sha: dict[str, set[int]] = defaultdict(set)
        self.by_path: dict[str, set[int]] = defaultdict(set)  # every training image, by relative path
        self.absent_by_path: dict[str, set[int]] = defaultdict(set)  # training images not here
        self.n_images: list[int] = []
        near_hashes: list[ImageHashes] = []
        self.near_items: list[set[int]] = []
        near_position: dict[str, int] = {}
        self.questions: set[str] = set()
        self.answers: set[str] = set()
        self.pairs: set[tuple[str, str]] = set()
        self.grams: set[str] = set()
        for i, item in enumerate(items):
            self.n_images.append(len(set(item.images)))
            for rel, path in zip(item.images, item.image_paths):
                self.by_path[rel].add(i)
                hashes = self.hasher.get(path)
                if hashes is None:
                    self.absent_by_path[rel].add(i)
                    continue
                self.by_sha[hashes.sha256].add(i)
                if hashes.sha256 not in near_position:
                    near_position[hashes.sha256] = len(near_hashes)
                    near_hashes.append(hashes)
                    self.near_items.append(set())
                self.near_items[near_position[hashes.sha256]].add(i)
            questions = [normalise(q) for q in item.questions]
            answers = [normalise(a) for a in item.answers]
            self.questions.update(questions)
            self.answers.update(answers)
            self.pairs.update(zip(questions, answers))
            self.grams.update(ngrams(" ".join(item.texts)))
        self.near = NearIndex(near_hashes)
        self.images_here = len(near_hashes)
        self.images_absent = len({rel for rel in self.absent_by_path})

    def image_matches(self, rel: str, path: str) -> tuple[set[int], str | None]:
        """(training items holding this image, how it matched: exact, near, path or None)."""
        hashes = self.hasher.get(path)
        if hashes is None:
            found = self.by_path.get(rel, set())
            return set(found), "path" if found else None
        found = set(self.absent_by_path.get(rel, set()))
        how = "path" if found else None
        exact = self.by_sha.get(hashes.sha256, set())
        if exact:
            found |= exact
            how = "exact"
        near = [j for j in self.near.matches(hashes)]
        near_items = set().union(*(self.near_items[j] for j in near)) if near else set()
        if near_items - found:
            how = how if how == "exact" else "near"
            found |= near_items
        return found, how


def _answer_text(sample: Sample) -> str:
    return sample.options.get(sample.answer, sample.answer) if sample.kind == "closed" else sample.answer


def audit_task(task: str, samples: Sequence[Sample], index: TrainingIndex,
               criterion: Sequence[str] = DEFAULT_CRITERION) -> TaskContamination:
    """The flags of every item of one task (see the module doc), counted."""
    flagged: dict[str, list[str]] = {flag: [] for flag in FLAGS}
    seen_images: dict[str, str | None] = {}
    here = absent = 0
    for sample in samples:
        per_image = []
        for rel, path in zip(sample.images, sample.image_paths):
            rel = relative_image(rel)
            items, how = index.image_matches(rel, path)
            per_image.append(items)
            if path not in seen_images:
                seen_images[path] = how
                if index.hasher.get(path) is None:
                    absent += 1
                else:
                    here += 1
        n_distinct = len(set(sample.images))
        common = set.intersection(*per_image) if per_image else set()
        flags = {
            "image_set": any(index.n_images[i] == n_distinct for i in common),
            "any_image": any(per_image),
        }
        question, answer = normalise(sample.question), normalise(_answer_text(sample))
        flags["question"] = bool(question) and question in index.questions
        flags["answer"] = bool(answer) and answer in index.answers
        flags["question_answer"] = (question, answer) in index.pairs
        options = "\n".join(f"{k}: {v}" for k, v in sample.options.items())
        flags["ngram13"] = not ngrams(f"{sample.question}\n{options}\n{_answer_text(sample)}").isdisjoint(index.grams)
        flags["contaminated"] = any(flags[f] for f in criterion)
        for flag, hit in flags.items():
            if hit:
                flagged[flag].append(sample.key)
    n = len(samples)
    methods: dict[str, int] = defaultdict(int)
    for how in seen_images.values():
        if how:
            methods[how] += 1
    return TaskContamination(
        task=task, n_items=n, counts={f: len(keys) for f, keys in flagged.items()},
        percent={f: 100.0 * len(keys) / n if n else 0.0 for f, keys in flagged.items()},
        examples={f: keys[:EXAMPLES] for f, keys in flagged.items()},
        contaminated_keys=flagged["contaminated"],
        images={"distinct": len(seen_images), "here": here, "absent": absent},
        image_matches=dict(sorted(methods.items())),
    )


def audit(tasks: dict[str, Sequence[Sample]], items: Sequence[TrainItem], files: Iterable[TrainFile],
          criterion: Sequence[str] = DEFAULT_CRITERION) -> ContaminationAudit:
    """The audit of every task against the training items, in the given task order; ``criterion``:
    the flags (of :data:`CRITERION_FLAGS`) any of which makes an item contaminated."""
    index = TrainingIndex(items)
    report = ContaminationAudit(
        train_files=[{"path": f.path, "sha256": f.sha256, "items": f.items} for f in files],
        train_items=len(items), train_images={"here": index.images_here, "absent": index.images_absent},
        tasks=[audit_task(name, samples, index, criterion) for name, samples in tasks.items()],
        definitions=definition(criterion))
    for path, reason in list(index.hasher.unreadable.items())[:5]:
        report.notes.append(f"unreadable image, compared by path only: {path} ({reason})")
    if len(index.hasher.unreadable) > 5:
        report.notes.append(f"... {len(index.hasher.unreadable) - 5} more unreadable images")
    return report

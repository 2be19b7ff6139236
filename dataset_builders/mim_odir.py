"""``mim-odir``: MIM-ODIR-style questions on the left/right fundus pair of one ODIR-5K patient.

Every item shows one patient's two fundus photographs, image 1 = left eye, image 2 = right eye
(as in the official MIM-ODIR). Eyes are described by their diagnostic keywords (see
:mod:`odir_table`): special keywords are dropped, and an eye with nothing else is never asked
about.

- Closed items (``--option options=N``, default 4 options as in most official items) ask for the
  diagnosis of the first eye, of the second eye ("What is the diagnosis for the first fundus
  image?"), or of both ("First image: ...; second image: ..."), whichever the patient's valid eyes
  allow, chosen at random. Wrong options are other eyes' keyword sets from the same table, drawn
  by frequency among those with as many keywords as the true one (so a long option is not a
  give-away), falling back to all of them when too few.
- Open items ask whether the two eyes have the same diagnosis ("Are the diagnoses for the first and
  second images the same?" or "... different?"); the reference answer says yes/no and names both
  diagnoses. Only patients with two valid eyes; "same" means the same set of keywords.

Each patient is used at most once in the whole output: patients, shuffled, go in turn to the open
or the closed items, keeping the two counts level; with fewer patients than asked, fewer items are
built and the card says so.
Deterministic for a seed.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.composing import check_option_keys, items_per_kind, place_answer, weighted_sample
from medmim_eval.dataset_builders.odir_table import OdirPatient, find_table, read_odir
from medmim_eval.errors import DataError

VERSION = "1"
FILE_STEM = "mim_odir"
ABILITY = "held-out"
OPTIONS_HELP = {
    "annotations": "the annotation table inside --source (default: the official .xlsx name, data.xlsx, "
                   "or the only .xlsx/.csv)",
    "options": "options per closed question, 3-6 (default 4)",
}
_SAME_QUESTIONS = ("Are the diagnoses for the first and second images the same?",
                   "Are the diagnoses for the first and second images different?")


def build_mim_odir(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``mim_odir.json`` (closed items, then open items) and the fundus images it uses."""
    check_option_keys(options, OPTIONS_HELP)
    n_options = _n_options(options.extra.get("options", "4"))
    table = find_table(options.source, options.extra.get("annotations"))
    patients = read_odir(options.source, table)
    writer.record_input(table)
    eyes = [eye for p in patients for eye in (p.left, p.right) if eye.diagnoses]
    if len({eye.key for eye in eyes}) < n_options:
        raise DataError(f"{table}: only {len({eye.key for eye in eyes})} distinct diagnoses among the eyes; "
                        f"{n_options} options need at least {n_options}")
    n_items = items_per_kind(options)
    rng = random.Random(f"mim-odir/v{VERSION}/seed{options.seed}")
    order = list(patients)
    rng.shuffle(order)
    open_patients, closed_patients = _allocate(order, n_items)
    pool = Counter(eye.key for eye in eyes)
    text_of = {eye.key: eye.text for eye in reversed(eyes)}  # the first spelling in table order wins
    distractors = _DistractorPool(pool, text_of)
    for patient in closed_patients:
        _add_closed(writer, patient, distractors, n_options, rng, options)
    same = sum(_add_open(writer, patient, rng, options) for patient in open_patients)
    writer.notes.append(f"{len(patients)} patients in {table.name}; {len(closed_patients)} closed and "
                        f"{len(open_patients)} open items, one patient each; open: {same} same, "
                        f"{len(open_patients) - same} different diagnoses")
    if len(closed_patients) < n_items or len(open_patients) < n_items:
        writer.notes.append(f"fewer than the {n_items} items per kind asked: not enough patients with valid eyes")


def _allocate(order: Sequence[OdirPatient], n_items: int) -> tuple[list[OdirPatient], list[OdirPatient]]:
    """Give each patient (in the shuffled order) to the open or the closed items, at most once,
    keeping the two counts level; open items need two valid eyes, closed ones need one."""
    open_patients: list[OdirPatient] = []
    closed_patients: list[OdirPatient] = []
    for patient in order:
        both = bool(patient.left.diagnoses and patient.right.diagnoses)
        closed_wants = len(closed_patients) < n_items and bool(patient.left.diagnoses or patient.right.diagnoses)
        if both and len(open_patients) < n_items and (len(open_patients) <= len(closed_patients) or not closed_wants):
            open_patients.append(patient)
        elif closed_wants:
            closed_patients.append(patient)
    return open_patients, closed_patients


def _n_options(text: str) -> int:
    if not text.isdigit() or not 3 <= int(text) <= 6:
        raise DataError(f"mim-odir: --option options={text} must be a whole number from 3 to 6")
    return int(text)


class _DistractorPool:
    """Wrong diagnoses drawn by frequency, preferring ones with as many keywords as the truth."""

    def __init__(self, counts: Counter[frozenset[str]], text_of: dict[frozenset[str], str]) -> None:
        ordered = sorted(counts.items(), key=lambda kv: text_of[kv[0]])  # fixed order for the rng
        self.all = ordered
        self.by_size: dict[int, list[tuple[frozenset[str], int]]] = {}
        for key, count in ordered:
            self.by_size.setdefault(len(key), []).append((key, count))
        self.text_of = text_of

    def draw(self, rng: random.Random, truth: frozenset[str], k: int) -> list[frozenset[str]]:
        same_size = [(key, n) for key, n in self.by_size.get(len(truth), []) if key != truth]
        pool = same_size if len(same_size) >= k else [(key, n) for key, n in self.all if key != truth]
        return weighted_sample(rng, pool, k)

    def draw_any(self, rng: random.Random) -> frozenset[str]:
        """One diagnosis drawn by frequency from all eyes (the truth included)."""
        return weighted_sample(rng, self.all, 1)[0]


def _add_closed(writer: DatasetWriter, patient: OdirPatient, pool: _DistractorPool, n_options: int,
                rng: random.Random, options: BuildOptions) -> None:
    eyes = [(name, eye) for name, eye in (("first", patient.left), ("second", patient.right)) if eye.diagnoses]
    variants = [*eyes, ("both", None)] if len(eyes) == 2 else eyes
    name, eye = variants[rng.randrange(len(variants))]
    if eye is not None:
        question = f"What is the diagnosis for the {name} fundus image?"
        correct = eye.text
        wrong = [pool.text_of[key] for key in pool.draw(rng, eye.key, n_options - 1)]
    else:
        question = "What are the diagnoses for the first and second fundus images?"
        truth = (patient.left.key, patient.right.key)
        correct = f"First image: {patient.left.text}; second image: {patient.right.text}"
        wrong_pairs: list[tuple[frozenset[str], frozenset[str]]] = []
        # Both sides of a wrong pair come from the population, like the true pair, so an option
        # sharing a side with many others is no more likely to be right.
        for _ in range(100 * n_options):
            pair = (pool.draw_any(rng), pool.draw_any(rng))
            if pair != truth and pair not in wrong_pairs:
                wrong_pairs.append(pair)
            if len(wrong_pairs) == n_options - 1:
                break
        for key, _count in pool.all:  # only for a tiny table whose draws kept repeating
            if len(wrong_pairs) < n_options - 1 and (key, truth[1]) != truth and (key, truth[1]) not in wrong_pairs:
                wrong_pairs.append((key, truth[1]))
        wrong = [_pair_text(pool, pair) for pair in wrong_pairs]
    choices, answer_index = place_answer(rng, correct, wrong)
    writer.add_item(FILE_STEM, ABILITY, item_id=f"VQA_ODIR-{patient.patient_id}-closed",
                    images=_images(writer, patient, options), question=question, answer="",
                    options=choices, answer_index=answer_index,
                    source_tag=f"VQA_ODIR_multichoice_builder_v{VERSION}")


def _pair_text(pool: _DistractorPool, pair: Sequence[frozenset[str]]) -> str:
    return f"First image: {pool.text_of[pair[0]]}; second image: {pool.text_of[pair[1]]}"


def _add_open(writer: DatasetWriter, patient: OdirPatient, rng: random.Random, options: BuildOptions) -> bool:
    """Add the same/different item; returns whether the two eyes share their diagnosis."""
    same = patient.left.key == patient.right.key
    ask_same = rng.random() < 0.5
    question = _SAME_QUESTIONS[0 if ask_same else 1]
    if same:
        answer = f"{'Yes' if ask_same else 'No'}, both the first and second images show {patient.left.text}."
    else:
        answer = (f"{'No' if ask_same else 'Yes'}, the first image shows {patient.left.text}, "
                  f"while the second image shows {patient.right.text}.")
    writer.add_item(FILE_STEM, ABILITY, item_id=f"VQA_ODIR-{patient.patient_id}-open",
                    images=_images(writer, patient, options), question=question, answer=answer,
                    source_tag=f"VQA_ODIR_conv_builder_v{VERSION}")
    return same


def _images(writer: DatasetWriter, patient: OdirPatient, options: BuildOptions) -> list[str]:
    return [writer.add_image_file(options.source / eye.image, eye.image) for eye in (patient.left, patient.right)]


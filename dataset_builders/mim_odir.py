"""``mim-odir``: MIM-ODIR questions on the left/right fundus pair of one ODIR-5K patient.

Every item shows one patient's two fundus photographs, image 1 = left eye, image 2 = right eye
(as in the official MIM-ODIR). Eyes are described by their diagnostic keywords (see
:mod:`odir_table`): notes on image quality are dropped, and an eye with nothing else is never
asked about.

The mix and phrasing follow the official ``Med_MIM_benchmark_Held_out_ODIR.json`` (per 300 items):

- closed (``--option options=N``, default 4 as in 292 of the 300 official items): 200 on both eyes,
  "What are the diagnoses for the first and second fundus images?" with options
  "First: X, Second: Y"; 81 on the first eye and 19 on the second, "What is the diagnosis for the
  first fundus image?". Wrong single-eye options are other eyes' keyword sets from the same table,
  drawn by frequency among those with as many keywords as the true one (so a long option is not a
  give-away); wrong pairs draw both sides from the population, like the true pair.
- open: 100 on one eye, "What is the diagnostic result for the first image?" (50 first, 50 second),
  answered "The diagnostic result for the first image is X."; 200 comparing the eyes, in the five
  most common official phrasings, weighted by their counts ("Are the diagnoses for the first and
  second images different?" ...), answered "Yes, the first image is diagnosed with X, while the
  second image is diagnosed with Y." or "..., both the first and second images are diagnosed with X."

Each patient is used at most once in the whole output: patients, shuffled, fill the slots of that
mix (each slot needs the eyes it asks about), the emptiest slot first; with fewer patients than
asked, fewer items are built and the card says so. The card declares the file to stand for
``held-out-odir``, so a run of it fills the MIM-ODIR column. Deterministic for a seed.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.composing import check_option_keys, items_per_kind, place_answer, weighted_sample
from medmim_eval.dataset_builders.odir_table import OdirEye, OdirPatient, find_table, missing_images_message, read_odir
from medmim_eval.errors import DataError

VERSION = "2"
FILE_STEM = "mim_odir"
ABILITY = "held-out"
STANDS_FOR = "held-out-odir"
OPTIONS_HELP = {
    "annotations": "the annotation table inside --source (default: the official .xlsx name, data.xlsx, "
                   "or the only .xlsx/.csv)",
    "options": "options per closed question, 3-6 (default 4)",
}
# Items per variant among the official file's 300 closed and 300 open items.
CLOSED_MIX = (("both", 200), ("first", 81), ("second", 19))
OPEN_MIX = (("both", 200), ("first", 50), ("second", 50))
# The five most common official phrasings of the open two-eye question, with their counts, and
# whether a "yes" means the eyes agree (None: not a yes/no question).
_COMPARE_QUESTIONS: tuple[tuple[str, int, bool | None], ...] = (
    ("Are the diagnoses for the first and second images different?", 57, False),
    ("Do the first and second images share the same diagnosis?", 53, True),
    ("Are the diagnoses for the first and second images the same?", 22, True),
    ("Are the diagnoses for the first and second images the same or different?", 10, None),
    ("How do the diagnoses for the first and second images compare?", 10, None),
)


@dataclass(frozen=True)
class _Slot:
    kind: str  # "closed" or "open"
    variant: str  # "both", "first" or "second"

    def accepts(self, patient: OdirPatient) -> bool:
        left, right = bool(patient.left.diagnoses), bool(patient.right.diagnoses)
        return {"both": left and right, "first": left, "second": right}[self.variant]


def build_mim_odir(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``mim_odir.json`` (closed items, then open items) and the fundus images it uses."""
    check_option_keys(options, OPTIONS_HELP)
    n_options = _n_options(options.extra.get("options", "4"))
    table = find_table(options.source, options.extra.get("annotations"))
    patients = read_odir(options.source, table)
    writer.record_input(table)
    absent = missing_images_message(table, options.source, patients)
    if absent and not options.skip_missing:
        raise DataError(absent)
    left_out = [p for p in patients if p.missing]
    patients = [p for p in patients if not p.missing]
    eyes = [eye for p in patients for eye in (p.left, p.right) if eye.diagnoses]
    if len({eye.key for eye in eyes}) < n_options:
        raise DataError(f"{table}: only {len({eye.key for eye in eyes})} distinct diagnoses among the eyes; "
                        f"{n_options} options need at least {n_options}")
    n_items = items_per_kind(options)
    rng = random.Random(f"mim-odir/v{VERSION}/seed{options.seed}")
    order = list(patients)
    rng.shuffle(order)
    quotas = {**{_Slot("closed", v): n for v, n in _quotas(n_items, CLOSED_MIX).items()},
              **{_Slot("open", v): n for v, n in _quotas(n_items, OPEN_MIX).items()}}
    assigned = _allocate(order, quotas)
    text_of = {eye.key: eye.text for eye in reversed(eyes)}  # the first spelling in table order wins
    distractors = _DistractorPool(Counter(eye.key for eye in eyes), text_of)
    for patient, slot in assigned:
        if slot.kind == "closed":
            _add_closed(writer, patient, slot.variant, distractors, n_options, rng, options)
    same = sum(_add_open(writer, patient, slot.variant, rng, options) for patient, slot in assigned if slot.kind == "open")
    writer.stands_for(FILE_STEM, STANDS_FOR)
    made = Counter(slot for _, slot in assigned)
    mix = "; ".join(f"{kind}: " + ", ".join(f"{made[_Slot(kind, v)]} {v}" for v, _ in mix)
                    for kind, mix in (("closed", CLOSED_MIX), ("open", OPEN_MIX)))
    writer.notes.append(f"{len(patients)} patients in {table.name}; one patient per item; {mix} "
                        f"(eyes asked about); open two-eye items: {same} same, {made[_Slot('open', 'both')] - same} "
                        "different diagnoses")
    if left_out:
        files = sum(len(p.missing) for p in left_out)
        writer.notes.append(f"{len(left_out)} patient(s) left out (--skip-missing): {files} listed image(s) absent, "
                            f"first in row {min(p.row for p in left_out)} of {table.name}")
    if any(made[slot] < n for slot, n in quotas.items()):
        writer.notes.append(f"fewer than the {n_items} items per kind asked, or another mix: not enough patients "
                            "with valid eyes")


def _quotas(n_items: int, mix: Sequence[tuple[str, int]]) -> dict[str, int]:
    """``n_items`` split in the proportions of ``mix`` (largest remainder, ties in ``mix`` order)."""
    total = sum(n for _, n in mix)
    exact = [(variant, n_items * n / total) for variant, n in mix]
    quotas = {variant: int(share) for variant, share in exact}
    left = n_items - sum(quotas.values())
    for variant, _ in sorted(exact, key=lambda vs: -(vs[1] - int(vs[1])))[:left]:
        quotas[variant] += 1
    return quotas


def _allocate(order: Sequence[OdirPatient], quotas: dict[_Slot, int]) -> list[tuple[OdirPatient, _Slot]]:
    """Give each patient (in the shuffled order) at most one slot it can fill: the one least filled
    relative to its quota, so every part of the mix grows at the same pace."""
    filled = Counter[_Slot]()
    assigned = []
    for patient in order:
        open_slots = [slot for slot, n in quotas.items() if filled[slot] < n and slot.accepts(patient)]
        if not open_slots:
            continue
        slot = min(open_slots, key=lambda s: filled[s] / quotas[s])
        filled[slot] += 1
        assigned.append((patient, slot))
    return assigned


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


def _eye(patient: OdirPatient, variant: str) -> OdirEye:
    return patient.left if variant == "first" else patient.right


def _add_closed(writer: DatasetWriter, patient: OdirPatient, variant: str, pool: _DistractorPool, n_options: int,
                rng: random.Random, options: BuildOptions) -> None:
    if variant != "both":
        eye = _eye(patient, variant)
        question = f"What is the diagnosis for the {variant} fundus image?"
        correct = eye.text
        wrong = [pool.text_of[key] for key in pool.draw(rng, eye.key, n_options - 1)]
    else:
        question = "What are the diagnoses for the first and second fundus images?"
        truth = (patient.left.key, patient.right.key)
        correct = _pair_text(pool, truth)
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
    return f"First: {pool.text_of[pair[0]]}, Second: {pool.text_of[pair[1]]}"


def _add_open(writer: DatasetWriter, patient: OdirPatient, variant: str, rng: random.Random,
              options: BuildOptions) -> bool:
    """Add one open item; returns whether it compares two eyes that share their diagnosis."""
    if variant != "both":
        question = f"What is the diagnostic result for the {variant} image?"
        answer = f"The diagnostic result for the {variant} image is {_eye(patient, variant).text}."
        same = False
    else:
        same = patient.left.key == patient.right.key
        phrasings = [(i, n) for i, (_, n, _) in enumerate(_COMPARE_QUESTIONS)]
        question, _, yes_means_same = _COMPARE_QUESTIONS[weighted_sample(rng, phrasings, 1)[0]]
        if same:
            statement = f"both the first and second images are diagnosed with {patient.left.text}."
        else:
            statement = (f"the first image is diagnosed with {patient.left.text}, while the second image is "
                         f"diagnosed with {patient.right.text}.")
        if yes_means_same is not None:
            answer = f"{'Yes' if yes_means_same == same else 'No'}, {statement}"
        elif question.endswith("same or different?"):
            answer = f"They are {'the same' if same else 'different'}; {statement}"
        else:
            answer = statement[0].upper() + statement[1:]
    writer.add_item(FILE_STEM, ABILITY, item_id=f"VQA_ODIR-{patient.patient_id}-open",
                    images=_images(writer, patient, options), question=question, answer=answer,
                    source_tag=f"VQA_ODIR_conv_builder_v{VERSION}")
    return same


def _images(writer: DatasetWriter, patient: OdirPatient, options: BuildOptions) -> list[str]:
    return [writer.add_image_file(options.source / eye.image, eye.image) for eye in (patient.left, patient.right)]

"""``mim-rad``: multi-image MIM-RAD-style questions composed from single-image VQA-RAD pairs.

What is grouped by (honestly): VQA-RAD has no modality field, so images are *not* grouped by
modality. Each item joins 2 or 3 QA pairs that share ``image_organ`` (HEAD, CHEST, ABD), the
primary ``question_type`` (PRES, POS, SIZE, ...) and ``answer_type``, each about a different image.
Modality could only be guessed from answers to MODALITY questions; grouping by it would make the
correct answer of a "which modality" item guessable from the grouping itself, so it is not done.

- Closed items: yes/no CLOSED pairs only (the other 7% of CLOSED answers, such as "left" or
  "MRI", have no well-defined wrong alternative). The prompt asks each sub-question with a
  position prefix ("In the first image, is there ...? In the second image, ...?"); the three
  options (as in the official MIM-RAD) are yes/no combinations: the true one and two others drawn
  uniformly from the rest, so every option is equally likely to be right given the options shown.
- Open items: OPEN pairs; the reference answer lists each image's answer ("First image: ...").

Split: ``--option split=test`` (default) uses only VQA-RAD's test questions (``phrase_type``
test_freeform/test_para): 272 CLOSED (251 yes/no) and 179 OPEN pairs on 203 images, enough for
300 + 300 distinct items, but each test pair then appears in about 3 (closed) or 4 (open) items
— never twice in one item. The official MIM-RAD draws on train and test images alike;
``split=all`` does too, with less reuse; ``split=train`` is for training data. Item selection
spreads use evenly: each new item starts from a least-used pair, adds least-used partners from
its group on other images, and never repeats a set of pairs. Deterministic for a seed.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from medmim_eval.dataset_builders.composing import (
    ORDINALS, as_sub_question, check_option_keys, clean_answer, items_per_kind, place_answer,
)
from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.vqa_rad_raw import RadQA, read_vqa_rad

VERSION = "1"
FILE_STEM = "mim_rad"
ABILITY = "held-out"
N_OPTIONS = 3
OPTIONS_HELP = {"split": "test (default), train or all: which VQA-RAD questions to compose from"}
_PARTNER_TRIES = 8


def build_mim_rad(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``mim_rad.json`` (closed items, then open items) and the images it uses."""
    check_option_keys(options, OPTIONS_HELP)
    split = options.extra.get("split", "test")
    pairs, qa_path, image_dir = read_vqa_rad(options.source, split)
    writer.record_input(qa_path)
    n_items = items_per_kind(options)
    closed_pool = [qa for qa in pairs if qa.closed and qa.answer.lower() in ("yes", "no")]
    open_pool = [qa for qa in pairs if not qa.closed]
    for kind, pool in (("closed", closed_pool), ("open", open_pool)):
        rng = random.Random(f"mim-rad/v{VERSION}/seed{options.seed}/{split}/{kind}")
        combos = choose_combinations(pool, n_items, rng)
        for combo in combos:
            for qa in combo:
                writer.add_image_file(image_dir / qa.image, qa.image)
            _add_item(writer, kind, combo, rng)
        uses = Counter(qa.qid for combo in combos for qa in combo)
        writer.notes.append(
            f"{kind}: {len(combos)} items from {len(pool)} {'yes/no CLOSED' if kind == 'closed' else 'OPEN'} "
            f"VQA-RAD pairs of split '{split}' ({len(uses)} pairs used, up to {max(uses.values(), default=0)} "
            "times each, never twice in one item)"
            + ("" if len(combos) == n_items else f"; fewer than the {n_items} asked: no further distinct combination")
        )
    writer.notes.append("grouped by image_organ, question_type and answer_type (VQA-RAD has no modality field)")


def choose_combinations(pool: Sequence[RadQA], n_items: int, rng: random.Random) -> list[tuple[RadQA, ...]]:
    """Pick up to ``n_items`` distinct sets of 2-3 pairs, each set from one group and on distinct
    images, returned in image order (already shuffled).

    A group is (organ, question type); answer type is fixed by the pool. Fewer sets come back
    only when no unused combination is left.
    """
    groups: dict[tuple[str, str], list[RadQA]] = defaultdict(list)
    for qa in pool:
        groups[(qa.organ, qa.question_type)].append(qa)
    usable = {key: members for key, members in groups.items() if len({qa.image for qa in members}) >= 2}
    candidates = [qa for key in sorted(usable) for qa in usable[key]]
    uses: Counter[str] = Counter()
    seen: set[frozenset[str]] = set()
    combos: list[tuple[RadQA, ...]] = []
    while len(combos) < n_items:
        size = rng.choice((2, 3))
        order = sorted(candidates, key=lambda qa: (uses[qa.qid], rng.random()))
        combo = None
        for start in order:
            combo = _combination_from(start, usable[(start.organ, start.question_type)], size, uses, seen, rng)
            if combo is not None:
                break
        if combo is None:
            break
        seen.add(frozenset(qa.qid for qa in combo))
        uses.update(qa.qid for qa in combo)
        shuffled = list(combo)
        rng.shuffle(shuffled)
        combos.append(tuple(shuffled))
    return combos


def _combination_from(start: RadQA, group: Sequence[RadQA], size: int, uses: Counter[str],
                      seen: set[frozenset[str]], rng: random.Random) -> tuple[RadQA, ...] | None:
    """A new combination holding ``start`` and least-used partners on other images, or None."""
    others = [qa for qa in group if qa.image != start.image]
    for attempt in range(_PARTNER_TRIES):
        # The first try takes the least-used partners; later tries take random ones.
        ranked = sorted(others, key=lambda qa: (uses[qa.qid] if attempt == 0 else 0, rng.random()))
        chosen = [start]
        for qa in ranked:
            if qa.image not in {c.image for c in chosen}:
                chosen.append(qa)
            if len(chosen) == size:
                break
        if len(chosen) >= 2 and frozenset(qa.qid for qa in chosen) not in seen:
            return tuple(chosen)
    return None


def _add_item(writer: DatasetWriter, kind: str, combo: Sequence[RadQA], rng: random.Random) -> None:
    asks = " ".join(f"In the {ORDINALS[i]} image, {as_sub_question(qa.question)}" for i, qa in enumerate(combo))
    common = {"item_id": "VQA_RAD" + "-".join(qa.qid for qa in combo), "images": [qa.image for qa in combo]}
    if kind == "closed":
        truth = tuple(qa.answer.lower() for qa in combo)
        others = [c for c in itertools.product(("yes", "no"), repeat=len(combo)) if c != truth]
        distractors = [_yes_no_option(c) for c in rng.sample(others, N_OPTIONS - 1)]
        choices, answer_index = place_answer(rng, _yes_no_option(truth), distractors)
        writer.add_item(FILE_STEM, ABILITY, **common, options=choices, answer_index=answer_index, answer="",
                        question=f"{asks} Which option gives the answers for the images, in order?",
                        source_tag=f"VQA_RAD_multichoice_builder_v{VERSION}")
    else:
        reference = " ".join(f"{ORDINALS[i].capitalize()} image: {clean_answer(qa.answer)}."
                             for i, qa in enumerate(combo))
        writer.add_item(FILE_STEM, ABILITY, **common, question=asks, answer=reference,
                        source_tag=f"VQA_RAD_conv_builder_v{VERSION}")


def _yes_no_option(answers: Sequence[str]) -> str:
    return "; ".join(f"{ORDINALS[i]} image: {a}" for i, a in enumerate(answers)).capitalize()

"""``lumiere``: glioblastoma MRI — sequence co-reference, pre/post-operative comparison, PD vs SD.

Raw data (docs/task-format.md, "Raw datasets"): ``LUMIERE-ExpertRating-v202211.csv`` with ``Patient``, ``Date`` (``week-044``,
``week-000-1``: a second scan in the same week) and a long RANO rating column. Its exact header
is unverified, so the rating column is found by name: the one header containing "rating" but not
"rationale" (preferring one that also says "RANO"); a header containing "rationale" is the
rationale column, if any. Ratings are stripped (the file has ``"Post-Op "``) and read
case-insensitively: Pre-Op, Post-Op, Post-Op/PD, CR, PR, SD, PD; other values are skipped and
counted in the card. Volumes: ``Imaging/<Patient>/<Date>/{CT1,T1,T2,FLAIR}.nii.gz``; missing
sequences are skipped (the release is incomplete), an unreadable or empty volume is an error
naming the file and the CSV row. Each volume gives one axial slice (``--option slice=F``, the
fraction of the way up the canonical axial axis, default 0.5) via :mod:`.nifti_io`, written as
``<seq>_LUMIERE_images/<Patient>/axial_<pct>/<Date>.png``.

Items:

- co-reference (``lumiere_coreference.json``): 2-3 sequences of one scan; which is the asked one.
- comparison (``lumiere_comparison.json``): a patient's Pre-Op scan and the next post-operative
  one, in random order; which image is post-operative. When the rationale says CRET/PRET
  (complete/partial resection of the enhancing tumour), also: was it completely or partially
  resected (images in time order).
- temporal (``lumiere_temporal.json``): a scan rated PD or SD and the patient's scan before it;
  progressive or stable disease.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.question_templates import (
    ORDINALS, Draft, ImageJob, check_options, closed_draft, finish_build, image_options, item_rng, open_draft, pick,
    read_table,
)
from medmim_eval.errors import DataError, MedmimError

VERSION = "1"
RATING_CSV = "LUMIERE-ExpertRating-v202211.csv"
SEQUENCES = {"CT1": "T1-weighted post-contrast (CT1)", "T1": "T1-weighted pre-contrast", "T2": "T2-weighted",
             "FLAIR": "FLAIR"}
RATINGS = {"PRE-OP": "pre-op", "POST-OP": "post-op", "POST-OP/PD": "post-op", "CR": "CR", "PR": "PR", "SD": "SD",
           "PD": "PD"}
OPTIONS_HELP = {"slice": "fraction of the way up the axial axis to slice each volume (default 0.5)",
                "csv": f"the rating CSV (default: --source/{RATING_CSV})"}
_DATE = re.compile(r"^week-(\d+)(?:-(\d+))?$")
_COREF = ("Which image is the {s} MRI?", "These are different MRI sequences of the same brain scan. Which one is {s}?",
          "Identify the {s} image among these brain MRI slices.")
_POSTOP = ("One of these contrast-enhanced brain MRI slices was acquired before the operation and the other after it. "
           "Which image is post-operative?",
           "Which of the two brain MRI scans was taken after tumour surgery?")
_RESECTION = "The first image shows the brain MRI before the operation and the second after it. Was the enhancing tumour completely or partially resected?"
_PROGRESSION = ("Compared with the first scan, is the brain tumour in the second scan progressive or stable?",
                "The first image is an earlier follow-up MRI and the second a later one. How would you rate the tumour "
                "course: progressive disease or stable disease?")


@dataclass(frozen=True)
class Scan:
    patient: str
    date: str
    order: tuple[int, int]
    rating: str  # pre-op, post-op, CR, PR, SD, PD
    rationale: str
    where: str
    images: dict[str, str]  # sequence -> output name


def build_lumiere(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``lumiere_coreference.json``, ``lumiere_comparison.json`` and ``lumiere_temporal.json``."""
    extra = check_options(options, OPTIONS_HELP)
    try:
        fraction = float(extra.get("slice", "0.5"))
    except ValueError:
        fraction = -1.0
    if not 0.0 <= fraction <= 1.0:
        raise MedmimError(f"--option slice={extra.get('slice')!r}: expected a fraction between 0 and 1")
    csv_path = Path(extra["csv"]) if extra.get("csv") else options.source / RATING_CSV
    writer.record_input(csv_path)
    scans, jobs, notes = read_scans(csv_path, options.source / "Imaging", fraction)
    by_patient: dict[str, list[Scan]] = defaultdict(list)
    for scan in scans:
        by_patient[scan.patient].append(scan)
    drafts: list[Draft] = []
    for scan in scans:
        drafts += _coreference(scan, options.seed)
    for series in by_patient.values():
        series.sort(key=lambda s: s.order)
        drafts += _comparison(series, options.seed) + _temporal(series, options.seed)
    writer.notes += [f"{n} {what}" for what, n in sorted(notes.items())]
    writer.notes.append(f"rating column matched by name (header unverified); slice fraction {fraction}")
    finish_build(drafts, jobs, options, writer, extra=extra)


def rating_columns(header: list[str], path: Path) -> tuple[str, str | None]:
    """(rating column, rationale column or None), matched by name substring."""
    ratings = [h for h in header if "rating" in h.lower() and "rationale" not in h.lower()]
    if len(ratings) > 1:
        ratings = [h for h in ratings if "rano" in h.lower()] or ratings
    if len(ratings) != 1:
        raise DataError(f"{path}: expected one RANO rating column (a header containing 'rating', not 'rationale'); "
                        f"found {len(ratings)} among: {', '.join(header)}")
    rationale = [h for h in header if "rationale" in h.lower()]
    return ratings[0], rationale[0] if rationale else None


def read_scans(csv_path: Path, imaging: Path, fraction: float) -> tuple[list[Scan], dict[str, ImageJob], Counter[str]]:
    """Rated scans with the sequences present on disk, their image jobs, and counts of skipped rows."""
    from medmim_eval.dataset_builders.nifti_io import load_axial_volume

    rows = read_table(csv_path, ("Patient", "Date"))
    if not rows:
        raise DataError(f"{csv_path}: no rating rows")
    rating_col, rationale_col = rating_columns(list(rows[0][1]), csv_path)
    scans, jobs, notes = [], {}, Counter()
    for line, row in rows:
        where = f"{csv_path} row {line}"
        patient, date = row["Patient"], row["Date"]
        match = _DATE.match(date)
        if not patient or "/" in patient or "\\" in patient or patient.startswith("."):
            raise DataError(f"{where}: Patient {patient!r} is not a patient folder name like Patient-001")
        if match is None:
            raise DataError(f"{where}: Date {date!r} is not like week-044 or week-000-1")
        rating = RATINGS.get(row[rating_col].strip().upper())
        if rating is None:
            notes[f"rating rows skipped: rating {row[rating_col].strip() or 'empty'!r} not in Pre-Op/Post-Op/CR/PR/SD/PD"] += 1
            continue
        images = {}
        for seq in SEQUENCES:
            source = imaging / patient / date / f"{seq}.nii.gz"
            if source.is_file():
                name = f"{seq.lower()}_LUMIERE_images/{patient}/axial_{round(fraction * 100):03d}/{date}.png"
                images[seq] = name
                jobs[name] = ImageJob(source, where, partial(_slice, load=load_axial_volume, fraction=fraction))
        if not images:
            notes["rated scans without any volume under Imaging/"] += 1
        scans.append(Scan(patient, date, (int(match.group(1)), int(match.group(2) or 0)), rating,
                          row.get(rationale_col, "") if rationale_col else "", where, images))
    if not jobs:
        raise DataError(f"{imaging}: no volume found (expected Imaging/<Patient>/<Date>/CT1.nii.gz ...)")
    return scans, jobs, notes


def _slice(path: Path, *, load: Any, fraction: float) -> Any:
    volume = load(path)
    return volume.axial_image(int(round(fraction * (volume.n_axial - 1))))


def _coreference(scan: Scan, seed: int) -> list[Draft]:
    if len(scan.images) < 2:
        return []
    item_id = f"lumiere-coreference-{scan.patient}-{scan.date}"
    rng = item_rng(seed, item_id)
    shown = rng.sample(sorted(scan.images), min(rng.choice((2, 3)), len(scan.images)))
    target = rng.randrange(len(shown))
    name = SEQUENCES[shown[target]]
    common = dict(file_stem="lumiere_coreference", ability="co-reference", item_id=item_id,
                  images=[scan.images[s] for s in shown], context={"images": "different MRI sequences of one brain scan"})
    return [closed_draft(rng, **common, question=pick(rng, _COREF, s=name), options=image_options(len(shown)),
                         gold_index=target, shuffle=False, source_tag="LUMIERE_multichoice_coreference"),
            open_draft(**common, question=pick(rng, _COREF, s=name), answer=f"The {ORDINALS[target]} image is the {name} MRI.",
                       source_tag="LUMIERE_conv_coreference", gold={"position of the asked sequence": ORDINALS[target]},
                       required=[(ORDINALS[target],)])]


def _shared_sequence(a: Scan, b: Scan) -> str | None:
    return next((s for s in ("CT1", "T1", "FLAIR", "T2") if s in a.images and s in b.images), None)


def _comparison(series: list[Scan], seed: int) -> list[Draft]:
    drafts = []
    for before, after in zip(series, series[1:]):
        seq = _shared_sequence(before, after)
        if before.rating != "pre-op" or after.rating != "post-op" or seq is None:
            continue
        item_id = f"lumiere-postop-{after.patient}-{after.date}"
        rng = item_rng(seed, item_id)
        post = rng.randrange(2)
        images = [after.images[seq], before.images[seq]] if post == 0 else [before.images[seq], after.images[seq]]
        common = dict(file_stem="lumiere_comparison", ability="comparison", item_id=item_id, images=images,
                      context={"images": f"{SEQUENCES[seq]} MRI of one patient before and after tumour surgery"})
        drafts += [closed_draft(rng, **common, question=pick(rng, _POSTOP), options=image_options(2), gold_index=post,
                                shuffle=False, source_tag="LUMIERE_multichoice_comparison"),
                   open_draft(**common, question=pick(rng, _POSTOP),
                              answer=f"The {ORDINALS[post]} image is post-operative; the {ORDINALS[1 - post]} is pre-operative.",
                              source_tag="LUMIERE_conv_comparison", gold={"post-operative image": ORDINALS[post]},
                              required=[(ORDINALS[post],)])]
        extent = [x for x, token in (("completely resected", "CRET"), ("partially resected", "PRET"))
                  if re.search(rf"\b{token}\b", after.rationale.upper())]
        if len(extent) == 1:
            drafts.append(closed_draft(
                rng, file_stem="lumiere_comparison", ability="comparison", item_id=f"lumiere-resection-{after.patient}-{after.date}",
                images=[before.images[seq], after.images[seq]], question=_RESECTION,
                options=["completely resected", "partially resected"], gold_index=0 if extent[0].startswith("c") else 1,
                source_tag="LUMIERE_multichoice_comparison", context={"image 1": "pre-operative MRI", "image 2": "post-operative MRI"}))
    return drafts


def _temporal(series: list[Scan], seed: int) -> list[Draft]:
    drafts = []
    for before, now in zip(series, series[1:]):
        seq = "CT1" if "CT1" in before.images and "CT1" in now.images else None
        if now.rating not in ("PD", "SD") or seq is None:
            continue
        item_id = f"lumiere-temporal-{now.patient}-{now.date}"
        rng = item_rng(seed, item_id)
        gold = 0 if now.rating == "PD" else 1
        label = ("progressive disease (PD)", "stable disease (SD)")[gold]
        common = dict(file_stem="lumiere_temporal", ability="temporal", item_id=item_id,
                      images=[before.images[seq], now.images[seq]],
                      context={"image 1": f"earlier {SEQUENCES[seq]} MRI ({before.date})", "image 2": f"later one ({now.date})"})
        drafts += [closed_draft(rng, **common, question=pick(rng, _PROGRESSION),
                                options=["progressive disease", "stable disease"], gold_index=gold,
                                source_tag="LUMIERE_multichoice_temporal"),
                   open_draft(**common, question=pick(rng, _PROGRESSION),
                              answer=f"Compared with the first scan, the tumour shows {label} in the second scan.",
                              source_tag="LUMIERE_conv_temporal", gold={"RANO rating of the second scan": label},
                              required=[("progress",) if gold == 0 else ("stable",)])]
    return drafts

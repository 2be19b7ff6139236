"""``embed``: EMBED mammograms — CC+MLO BI-RADS reasoning, view co-reference, temporal forecasting.

Raw data (docs/task-format.md, "Raw datasets"): ``EMBED_OpenData_clinical.csv`` (one row per finding: ``empi_anon, acc_anon,
asses, side, age_at_study``...) and ``EMBED_OpenData_metadata.csv`` (one row per file:
``empi_anon, acc_anon, anon_dicom_path, ViewPosition, ImageLateralityFinal``, optionally
``FinalImageType``, ``spot_mag``), joined on ``empi_anon`` + ``acc_anon`` and then laterality: a
finding with side L or R applies to that breast's files, side B or empty to all files. Only 2-D
(``FinalImageType`` 2D, when present), non-spot/magnification CC and MLO views are used. The
DICOMs sit under ``--source`` (or ``--option images=DIR``) at the ``cohort_N/...`` tail of
``anon_dicom_path``; each becomes ``cohort_N/<empi_anon>/<StudyUID>/<SeriesUID>/<SOPUID>.png``
(the official layout; no other identifier is used in names, and no header value is written).

Items (BI-RADS ``asses`` codes A/N/B/P/S/M/K = 0-6):

- reasoning (``embed_reasoning.json``): the CC and MLO views of one breast in one exam; which of
  the seven BI-RADS classes applies. Breasts whose findings disagree on the code are skipped.
- co-reference (``embed_coreference.json``): 2-3 views of one exam, exactly one of the asked
  view (CC or MLO); which image it is.
- temporal (``embed_temporal.json``): one view of one breast at 2-3 consecutive visits with the
  ages (``age_at_study``); forecast the next visit's assessment group: negative/benign (1-2),
  follow-up or more imaging (0, 3), suspicious/malignant (4-6).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.question_templates import (
    ORDINALS, Draft, ImageJob, check_options, closed_draft, finish_build, image_options, item_rng, open_draft, pick,
    read_table,
)
from medmim_eval.errors import DataError

VERSION = "1"
CLINICAL = "EMBED_OpenData_clinical.csv"
METADATA = "EMBED_OpenData_metadata.csv"
CLINICAL_COLUMNS = ("empi_anon", "acc_anon", "asses", "side", "age_at_study")
METADATA_COLUMNS = ("empi_anon", "acc_anon", "anon_dicom_path", "ViewPosition", "ImageLateralityFinal")
BIRADS = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
CLASS_TEXT = ("Incomplete: more imaging is needed before a final assessment (BI-RADS 0)",
              "Negative: nothing to report (BI-RADS 1)",
              "A benign finding (BI-RADS 2)",
              "Probably benign: short-interval follow-up (BI-RADS 3)",
              "A suspicious abnormality: biopsy should be considered (BI-RADS 4)",
              "Highly suggestive of malignancy (BI-RADS 5)",
              "A known malignancy, proven by biopsy (BI-RADS 6)")
FORECAST = ("a negative or benign result (BI-RADS 1-2)",
            "a result needing more imaging or short-interval follow-up (BI-RADS 0 or 3)",
            "a suspicious or malignant result (BI-RADS 4-6)")
_FORECAST_GROUP = {1: 0, 2: 0, 0: 1, 3: 1, 4: 2, 5: 2, 6: 2}
VIEWS = {"CC": "craniocaudal (CC)", "MLO": "mediolateral oblique (MLO)"}
SIDES = {"L": "left", "R": "right"}
OPTIONS_HELP = {
    "images": "folder holding the cohort_N/... DICOM tree (default: --source)",
    "missing_images": "error (default) or skip: metadata rows whose DICOM file is absent",
}
_REASONING = ("The first image is the craniocaudal (CC) view and the second the mediolateral oblique (MLO) view of "
              "the same breast. Which BI-RADS assessment fits the findings?",
              "Reading the CC view (first image) together with the MLO view (second image), how should this breast "
              "be categorised?")
_COREF = ("Which image is the {v} view?", "Which of these mammograms was taken in the {v} projection?",
          "Identify the image that shows the {v} view.")
_FORECAST_Q = ("These mammograms of the {s} breast were taken at ages {ages}. What is the most likely assessment "
               "at the next visit, at age {next}?",
               "Given the {s} breast at ages {ages} (images in that order), forecast the result of the following "
               "screening at age {next}.")


@dataclass
class Exam:
    empi: str
    acc: str
    age: float
    codes: dict[str, set[int]] = field(default_factory=lambda: {"L": set(), "R": set()})
    views: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))  # (side, view) -> images


def build_embed(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``embed_reasoning.json``, ``embed_coreference.json`` and ``embed_temporal.json``."""
    extra = check_options(options, OPTIONS_HELP)
    root = Path(extra["images"]) if extra.get("images") else options.source
    exams, notes = read_clinical(options.source / CLINICAL)
    jobs = attach_files(exams, options.source / METADATA, root, skip_missing=extra.get("missing_images") == "skip", notes=notes)
    for name in (CLINICAL, METADATA):
        writer.record_input(options.source / name)
    drafts: list[Draft] = []
    for exam in exams.values():
        drafts += _reasoning(exam, options.seed) + _coreference(exam, options.seed)
    drafts += _temporal(exams, options.seed)
    writer.notes += [f"{n} {what}" for what, n in sorted(notes.items())]
    finish_build(drafts, jobs, options, writer, extra=extra, credentialed="EMBED")


def read_clinical(path: Path) -> tuple[dict[tuple[str, str], Exam], Counter[str]]:
    """Exams by (empi_anon, acc_anon) with their BI-RADS codes per breast; notes count skipped rows."""
    exams: dict[tuple[str, str], Exam] = {}
    notes: Counter[str] = Counter()
    for line, row in read_table(path, CLINICAL_COLUMNS):
        where = f"{path} row {line}"
        key = (row["empi_anon"], row["acc_anon"])
        if not all(key):
            raise DataError(f"{where}: empty empi_anon or acc_anon")
        code = row["asses"].upper()
        if code not in BIRADS:
            notes[f"clinical rows skipped: asses {code or 'empty'!r} is not one of A/N/B/P/S/M/K"] += 1
            continue
        side = row["side"].upper()
        if side not in ("L", "R", "B", ""):
            notes[f"clinical rows skipped: side {side!r} is not L, R, B or empty"] += 1
            continue
        try:
            age = float(row["age_at_study"])
        except ValueError:
            raise DataError(f"{where}: age_at_study {row['age_at_study']!r} is not a number") from None
        exam = exams.setdefault(key, Exam(*key, age=age))
        for s in ("L", "R") if side in ("B", "") else (side,):
            exam.codes[s].add(BIRADS[code])
    return exams, notes


def attach_files(exams: dict[tuple[str, str], Exam], path: Path, root: Path, *, skip_missing: bool,
                 notes: Counter[str]) -> dict[str, ImageJob]:
    """Add each usable metadata row's image to its exam; returns the image jobs by output name."""
    from medmim_eval.dataset_builders.dicom_io import dicom_to_image

    jobs: dict[str, ImageJob] = {}
    for line, row in read_table(path, METADATA_COLUMNS):
        exam = exams.get((row["empi_anon"], row["acc_anon"]))
        view, side = row["ViewPosition"].upper(), row["ImageLateralityFinal"].upper()
        if exam is None or view not in VIEWS or side not in SIDES:
            continue
        if row.get("FinalImageType", "2D").upper() not in ("2D", "") or row.get("spot_mag", "").lower() in ("1", "1.0", "true"):
            continue
        where = f"{path} row {line}"
        parts = row["anon_dicom_path"].replace("\\", "/").split("/")
        start = next((i for i, p in enumerate(parts) if p.startswith("cohort_")), None)
        if start is None or ".." in parts or not parts[-1].lower().endswith(".dcm"):
            raise DataError(f"{where}: anon_dicom_path {row['anon_dicom_path']!r} has no cohort_N/.../<SOPUID>.dcm tail")
        tail = "/".join(parts[start:])
        source = root / tail
        if not source.is_file():
            if not skip_missing:
                raise DataError(f"{where}: DICOM {source} not found; pass --option images=DIR or missing_images=skip")
            notes["metadata rows skipped: DICOM file absent"] += 1
            continue
        name = tail[: -len(".dcm")] + ".png"
        jobs[name] = ImageJob(source, where, dicom_to_image)
        if name not in exam.views[(side, view)]:
            exam.views[(side, view)].append(name)
    return jobs


def _reasoning(exam: Exam, seed: int) -> list[Draft]:
    drafts = []
    for side in SIDES:
        codes, cc, mlo = exam.codes[side], exam.views.get((side, "CC")), exam.views.get((side, "MLO"))
        if len(codes) != 1 or not cc or not mlo:
            continue
        code = next(iter(codes))
        item_id = f"embed-reasoning-{exam.empi}-{exam.acc}-{side}"
        rng = item_rng(seed, item_id)
        images = [rng.choice(sorted(cc)), rng.choice(sorted(mlo))]
        context = {"image 1": f"CC view of the {SIDES[side]} breast", "image 2": "MLO view of the same breast"}
        common = dict(file_stem="embed_reasoning", ability="reasoning", item_id=item_id, images=images, context=context)
        drafts.append(closed_draft(rng, **common, question=pick(rng, _REASONING), options=CLASS_TEXT, gold_index=code,
                                   source_tag="EMBED_multichoice_reasoning"))
        drafts.append(open_draft(**common, question=pick(rng, _REASONING), answer=CLASS_TEXT[code] + ".",
                                 source_tag="EMBED_conv_reasoning", gold={"BI-RADS assessment": CLASS_TEXT[code]},
                                 required=[(f"BI-RADS {code}", f"category {code}")]))
    return drafts


def _coreference(exam: Exam, seed: int) -> list[Draft]:
    by_view = {v: sorted({i for (s, view), imgs in exam.views.items() if view == v for i in imgs}) for v in VIEWS}
    if not by_view["CC"] or not by_view["MLO"]:
        return []
    item_id = f"embed-coreference-{exam.empi}-{exam.acc}"
    rng = item_rng(seed, item_id)
    target = rng.choice(sorted(VIEWS))
    other = by_view["MLO" if target == "CC" else "CC"]
    n = min(rng.choice((2, 3)), 1 + len(other))
    images = [rng.choice(by_view[target]), *rng.sample(other, n - 1)]
    rng.shuffle(images)
    position = next(i for i, img in enumerate(images) if img in by_view[target])
    context = {"views shown": f"one {VIEWS[target]} view and {n - 1} other view(s) of the same exam"}
    common = dict(file_stem="embed_coreference", ability="co-reference", item_id=item_id, images=images, context=context)
    return [closed_draft(rng, **common, question=pick(rng, _COREF, v=VIEWS[target]), options=image_options(n),
                         gold_index=position, shuffle=False, source_tag="EMBED_multichoice_coreference"),
            open_draft(**common, question=pick(rng, _COREF, v=VIEWS[target]),
                       answer=f"The {ORDINALS[position]} image is the {VIEWS[target]} view.",
                       source_tag="EMBED_conv_coreference", gold={"position of the asked view": ORDINALS[position]},
                       required=[(ORDINALS[position],)])]


def _temporal(exams: dict[tuple[str, str], Exam], seed: int) -> list[Draft]:
    visits: dict[tuple[str, str], list[Exam]] = defaultdict(list)  # (empi, side) -> exams
    for exam in exams.values():
        for side in SIDES:
            if len(exam.codes[side]) == 1 and (exam.views.get((side, "CC")) or exam.views.get((side, "MLO"))):
                visits[(exam.empi, side)].append(exam)
    drafts = []
    for (empi, side), series in sorted(visits.items()):
        series.sort(key=lambda e: (e.age, e.acc))
        for t in range(2, len(series)):
            item_id = f"embed-temporal-{empi}-{side}-{series[t].acc}"
            rng = item_rng(seed, item_id)
            history = series[max(0, t - rng.choice((2, 3))):t]
            view = "CC" if all(e.views.get((side, "CC")) for e in history) else "MLO"
            if not all(e.views.get((side, view)) for e in history) or series[t].age <= history[-1].age:
                continue
            images = [rng.choice(sorted(e.views[(side, view)])) for e in history]
            gold = _FORECAST_GROUP[next(iter(series[t].codes[side]))]
            ages = ", ".join(f"{e.age:.1f}" for e in history[:-1]) + f" and {history[-1].age:.1f}"
            fields = {"s": SIDES[side], "ages": ages, "next": f"{series[t].age:.1f}"}
            context = {"images": f"{VIEWS[view]} views of the {SIDES[side]} breast at ages {ages}",
                       "next visit": f"age {series[t].age:.1f}"}
            common = dict(file_stem="embed_temporal", ability="temporal", item_id=item_id, images=images, context=context)
            drafts.append(closed_draft(rng, **common, question=pick(rng, _FORECAST_Q, **fields), options=FORECAST,
                                       gold_index=gold, source_tag="EMBED_multichoice_temporal"))
            drafts.append(open_draft(**common, question=pick(rng, _FORECAST_Q, **fields),
                                     answer=f"The next visit most likely shows {FORECAST[gold]}.",
                                     source_tag="EMBED_conv_temporal", gold={"next visit": FORECAST[gold]},
                                     required=[(FORECAST[gold].split("(")[1].rstrip(")"),)]))
    return drafts

"""``ms-cxr-t``: previous/current chest X-ray pairs with the progression of five findings.

Raw data (docs/task-format.md, "Raw datasets"): ``MS_CXR_T_temporal_image_classification_v1.0.0.csv`` with ``subject_id,
study_id, dicom_id, previous_study_id, previous_dicom_id`` and ``<finding>_progression`` for
consolidation, edema, pleural_effusion, pneumonia and pneumothorax, each improving, stable,
worsening or empty; plus the MIMIC-CXR images, DICOM (``.dcm``) or MIMIC-CXR-JPG (``.jpg``), in
the MIMIC layout ``[files/]pNN/pSUBJECT/sSTUDY/DICOM_ID.ext`` under ``--source`` (or
``--option images=DIR``). ``dicom_id`` is path-like (``p10/p10000032/s50414267/<id>``); a bare id
is placed in that layout from ``subject_id`` and the study id.

Every non-empty progression label gives a closed item (options improving / stable / worsening in a
per-item random order) and an open item, both with image 1 = the previous study, image 2 = the
current one, written to ``ms_cxr_t_comparison.json`` (ability ``comparison``; source tags
``MS_CXR_T_vqa_<finding>`` and ``MS_CXR_T_conv_<finding>`` as in the official release). Images
become ``pNN/pSUBJECT/sSTUDY/<id>.png``. Errors name the CSV file and row (the file's line number).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from medmim_eval.builders_api import BuildOptions, DatasetWriter
from medmim_eval.dataset_builders.question_templates import (
    Draft, ImageJob, check_options, closed_draft, finish_build, item_rng, open_draft, open_raster, pick,
    read_table,
)
from medmim_eval.errors import DataError

VERSION = "1"
CSV_NAME = "MS_CXR_T_temporal_image_classification_v1.0.0.csv"
FILE_STEM = "ms_cxr_t_comparison"
ABILITY = "comparison"
FINDINGS = {"consolidation": "consolidation", "edema": "edema", "pleural_effusion": "pleural effusion",
            "pneumonia": "pneumonia", "pneumothorax": "pneumothorax"}
ID_COLUMNS = ("subject_id", "study_id", "dicom_id", "previous_study_id", "previous_dicom_id")
LABELS = ("improving", "stable", "worsening")
OPTIONS_HELP = {
    "images": "folder holding the MIMIC-CXR images (default: --source)",
    "csv": f"the temporal classification CSV (default: --source/{CSV_NAME})",
}
_EXTENSIONS = (".dcm", ".jpg", ".jpeg", ".png")
_CLOSED = (
    "The first image is the previous chest X-ray and the second image is the current one. How has the {f} changed?",
    "Comparing the current chest X-ray (second image) with the previous one (first image), which statement "
    "best describes the {f}?",
    "Based on these two chest radiographs, the earlier study shown first, what is the progression of the {f}?",
)
_OPEN = (
    "How has the {f} changed from the previous chest X-ray (first image) to the current one (second image)?",
    "The first image is an earlier chest radiograph of this patient and the second a later one. Describe the "
    "course of the {f}.",
)
_OPTION_TEXT = {"improving": "The {f} is improving.", "stable": "The {f} is stable.", "worsening": "The {f} is worsening."}
_ANSWER = {"improving": "The {f} has improved since the previous study.",
           "stable": "The {f} is stable, unchanged from the previous study.",
           "worsening": "The {f} has worsened since the previous study."}
_REQUIRED = {"improving": ("improv", "better", "decreas", "resolv"), "stable": ("stable", "unchanged", "no change"),
             "worsening": ("worse", "increas", "progress")}


def build_ms_cxr_t(options: BuildOptions, writer: DatasetWriter) -> None:
    """Write ``ms_cxr_t_comparison.json`` (closed and open items) and the PNG images it uses."""
    extra = check_options(options, OPTIONS_HELP)
    csv_path = Path(extra["csv"]) if extra.get("csv") else options.source / CSV_NAME
    roots = _image_roots(Path(extra["images"]) if extra.get("images") else options.source)
    columns = (*ID_COLUMNS, *(f"{key}_progression" for key in FINDINGS))
    rows = read_table(csv_path, columns)
    writer.record_input(csv_path)
    drafts: list[Draft] = []
    jobs: dict[str, ImageJob] = {}
    for line, row in rows:
        where = f"{csv_path} row {line}"
        labels = {key: _label(row, key, where) for key in FINDINGS}
        if not any(labels.values()):
            continue
        previous, previous_name = _image(roots, row["previous_dicom_id"], row["subject_id"], row["previous_study_id"], where)
        current, current_name = _image(roots, row["dicom_id"], row["subject_id"], row["study_id"], where)
        if previous_name == current_name:
            raise DataError(f"{where}: dicom_id and previous_dicom_id name the same image")
        images = [previous_name, current_name]
        jobs.update({previous_name: previous, current_name: current})
        for key, label in labels.items():
            if label:
                drafts += _drafts(options.seed, key, label, line, images)
    writer.notes.append("image 1 = the previous study (previous_dicom_id), image 2 = the current one (dicom_id)")
    finish_build(drafts, jobs, options, writer, extra=extra, credentialed="MS-CXR-T / MIMIC-CXR")


def _label(row: dict[str, str], key: str, where: str) -> str:
    value = row[f"{key}_progression"].strip().lower()
    if value and value not in LABELS:
        raise DataError(f"{where}: {key}_progression is {value!r}; expected improving, stable, worsening or empty")
    return value


def _image_roots(root: Path) -> tuple[Path, ...]:
    return (root / "files", root) if (root / "files").is_dir() else (root,)


def _image(roots: tuple[Path, ...], dicom_id: str, subject: str, study: str, where: str) -> tuple[ImageJob, str]:
    """The raw file of one image (``dicom_id`` as a MIMIC-layout path stem, tried as .dcm/.jpg/.png)
    and its output name ``pNN/pSUBJECT/sSTUDY/<id>.png``."""
    stem = dicom_id.strip().replace("\\", "/")
    if not stem:
        raise DataError(f"{where}: empty dicom_id")
    stem = stem[len("files/"):] if stem.startswith("files/") else stem
    if Path(stem).suffix.lower() in _EXTENSIONS:
        stem = stem[: -len(Path(stem).suffix)]
    if "/" not in stem:
        subject, study = subject.strip().lstrip("p"), study.strip().lstrip("s")
        if not subject or not study:
            raise DataError(f"{where}: dicom_id {dicom_id!r} is a bare id and subject_id/study id are empty")
        stem = f"p{subject[:2]}/p{subject}/s{study}/{stem}"
    if Path(stem).is_absolute() or ".." in Path(stem).parts:
        raise DataError(f"{where}: dicom_id {dicom_id!r} must be a relative MIMIC-CXR path")
    for root in roots:
        for ext in _EXTENSIONS:
            path = root / f"{stem}{ext}"
            if path.is_file():
                return ImageJob(path, where, _renderer(ext)), f"{stem}.png"
    raise DataError(f"{where}: image {stem}(.dcm|.jpg|.png) not found under {' or '.join(str(r) for r in roots)}; "
                    "pass --option images=DIR")


def _renderer(ext: str) -> Callable[[Path], Any] | None:
    """DICOM through :func:`.dicom_io.dicom_to_image`; JPEG re-encoded as PNG; PNG copied."""
    if ext == ".dcm":
        from medmim_eval.dataset_builders.dicom_io import dicom_to_image

        return dicom_to_image
    return None if ext == ".png" else open_raster


def _drafts(seed: int, key: str, label: str, line: int, images: list[str]) -> list[Draft]:
    finding = FINDINGS[key]
    item_id = f"ms-cxr-t-{key}-{line}"
    rng = item_rng(seed, item_id)
    context = {"image 1": "previous chest X-ray", "image 2": "current chest X-ray of the same patient",
               "finding": finding}
    closed = closed_draft(
        rng, file_stem=FILE_STEM, ability=ABILITY, item_id=item_id, images=images,
        question=pick(rng, _CLOSED, f=finding), options=[_OPTION_TEXT[x].format(f=finding) for x in LABELS],
        gold_index=LABELS.index(label), source_tag=f"MS_CXR_T_vqa_{key}", context=context)
    open_item = open_draft(
        file_stem=FILE_STEM, ability=ABILITY, item_id=item_id, images=images, question=pick(rng, _OPEN, f=finding),
        answer=_ANSWER[label].format(f=finding), source_tag=f"MS_CXR_T_conv_{key}", context=context,
        gold={"progression of the " + finding: label}, required=[_REQUIRED[label]])
    return [closed, open_item]

"""Reading the ODIR-5K annotation table (the official .xlsx, Kaggle's ``data.xlsx``, or a CSV).

Contract: :func:`read_odir` returns one :class:`OdirPatient` per row, sorted by patient ID, or
raises ``DataError`` naming the table file and its row number (as a spreadsheet shows it: the
header is row 1) — a missing column, an empty or duplicate ID, an empty keyword cell, or a fundus
file name that is not a plain file name. A listed image absent from ``Training Images/`` is not an
error here: the patient's ``missing`` says which, and the builder decides (see
:func:`missing_images_message`). Per-eye truth is only in the keyword strings (the N/D/G/...
labels are per patient), so those are what is read: keywords are split on the full-width comma
``，`` and on the ASCII comma (the release mixes them, e.g. "low image quality,maculopathy") and
stripped, and the notes on the photograph rather than the eye (:data:`QUALITY_NOTES`) are removed.
An eye left with no diagnosis keyword has ``diagnoses == ()`` and is not asked about. Age and sex
are never read.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmim_eval.errors import DataError, MissingBackendError

KNOWN_TABLES = ("ODIR-5K_Training_Annotations(Updated)_V2.xlsx", "data.xlsx")
IMAGE_FOLDER = "Training Images"
REQUIRED_COLUMNS = ("ID", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords", "Right-Diagnostic Keywords")
ODIR_HEADER = ("ID, Patient Age, Patient Sex, Left-Fundus, Right-Fundus, Left-Diagnostic Keywords, "
               "Right-Diagnostic Keywords, N, D, G, C, A, H, M, O")
# U+FF0C FULLWIDTH COMMA, as in most of the release, and the ASCII comma of a few cells.
KEYWORD_SEPARATORS = re.compile("[，,]")
# Keywords that describe the photograph, not the eye: never a diagnosis or an option.
QUALITY_NOTES = frozenset({"anterior segment image", "no fundus image", "lens dust", "low image quality",
                           "image offset", "optic disk photographically invisible"})
MISSING_SHOWN = 3


@dataclass(frozen=True)
class OdirEye:
    image: str  # path relative to the source folder: "Training Images/<file>"
    diagnoses: tuple[str, ...]  # diagnosis keywords in table order, special keywords removed

    @property
    def key(self) -> frozenset[str]:
        """What two eyes must share to have "the same diagnosis"."""
        return frozenset(d.lower() for d in self.diagnoses)

    @property
    def text(self) -> str:
        return ", ".join(self.diagnoses)


@dataclass(frozen=True)
class OdirPatient:
    patient_id: str
    row: int
    left: OdirEye
    right: OdirEye
    missing: tuple[str, ...] = ()  # listed images ("Training Images/<file>") absent under the source


def missing_images_message(table: Path, source: Path, patients: list[OdirPatient]) -> str | None:
    """One line saying how many listed images are absent (with the first few rows), or None if none."""
    lacking = [p for p in patients if p.missing]
    if not lacking:
        return None
    files = sum(len(p.missing) for p in lacking)
    shown = "; ".join(f"row {p.row}: {', '.join(p.missing)}" for p in sorted(lacking, key=lambda p: p.row)[:MISSING_SHOWN])
    more = f"; and {len(lacking) - MISSING_SHOWN} more patient(s)" if len(lacking) > MISSING_SHOWN else ""
    return (f"{table}: {files} listed image(s) of {len(lacking)} of {len(patients)} patient(s) not found under "
            f"{source} ({shown}{more}); add them, or pass --skip-missing to leave those patients out")


def find_table(source: Path, name: str | None) -> Path:
    """The annotation table: ``--option annotations=NAME`` if given, else a known file name, else
    the only .xlsx/.csv file in ``source``."""
    if name:
        path = Path(name) if Path(name).is_absolute() else source / name
        if not path.is_file():
            raise DataError(f"{path}: annotation table not found (--option annotations={name})")
        return path
    for known in KNOWN_TABLES:
        if (source / known).is_file():
            return source / known
    tables = sorted(p for p in source.glob("*") if p.suffix.lower() in (".xlsx", ".csv") and p.is_file())
    if len(tables) == 1:
        return tables[0]
    found = f"found {', '.join(p.name for p in tables)}" if tables else "found none"
    raise DataError(f"{source}: expected one ODIR-5K annotation table ({' or '.join(KNOWN_TABLES)}, or a .csv "
                    f"with the same columns); {found}; name it with --option annotations=FILE")


def read_odir(source: Path, table: Path) -> list[OdirPatient]:
    """Read and validate every row of ``table``; image paths are checked under ``source``."""
    rows = _rows(table)
    header = next(rows, None)
    if header is None:
        raise DataError(f"{table}: empty table; expected the header row {ODIR_HEADER}")
    names = [str(cell).strip() if cell is not None else "" for cell in header[1]]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{table} row 1: missing column(s) {', '.join(repr(m) for m in missing)}; "
                        f"expected the ODIR-5K header: {ODIR_HEADER}")
    column = {name: names.index(name) for name in REQUIRED_COLUMNS}
    patients: dict[str, OdirPatient] = {}
    for row_number, cells in rows:
        if all(cell is None or str(cell).strip() == "" for cell in cells):
            continue

        def cell(name: str) -> str:
            index = column[name]
            return _text(cells[index]) if index < len(cells) else ""

        def fail(problem: str) -> DataError:
            return DataError(f"{table} row {row_number}: {problem}")

        patient_id = cell("ID")
        if not patient_id:
            raise fail("empty 'ID'")
        if patient_id in patients:
            raise fail(f"patient ID {patient_id} already in row {patients[patient_id].row}")
        eyes = []
        missing = []
        for side in ("Left", "Right"):
            image, keywords = cell(f"{side}-Fundus"), cell(f"{side}-Diagnostic Keywords")
            if not image or Path(image).name != image:
                raise fail(f"'{side}-Fundus' must name an image file in '{IMAGE_FOLDER}/', found {image!r}")
            if not (source / IMAGE_FOLDER / image).is_file():
                missing.append(f"{IMAGE_FOLDER}/{image}")
            if not keywords:
                raise fail(f"empty '{side}-Diagnostic Keywords'")
            eyes.append(OdirEye(f"{IMAGE_FOLDER}/{image}", diagnoses_of(keywords)))
        patients[patient_id] = OdirPatient(patient_id, row_number, eyes[0], eyes[1], tuple(missing))
    return sorted(patients.values(), key=_id_order)


def _id_order(patient: OdirPatient) -> tuple[int, str]:
    """Numeric IDs in numeric order, any others after them."""
    pid = patient.patient_id
    return (int(pid), "") if pid.isdigit() else (1 << 62, pid)


def diagnoses_of(keywords: str) -> tuple[str, ...]:
    """Diagnosis keywords of one eye: split on ``，`` and ``,``, stripped, de-duplicated, quality notes removed."""
    found: list[str] = []
    for keyword in KEYWORD_SEPARATORS.split(keywords):
        keyword = " ".join(keyword.split())
        if keyword and keyword.lower() not in QUALITY_NOTES and keyword.lower() not in {f.lower() for f in found}:
            found.append(keyword)
    return tuple(found)


def _text(value: Any) -> str:
    """A cell as text; spreadsheet numbers such as ``12.0`` become ``"12"``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _rows(table: Path) -> Iterator[tuple[int, list[Any]]]:
    """(row number, cells) for every row of a .xlsx (first sheet) or .csv file, header first."""
    suffix = table.suffix.lower()
    if suffix == ".csv":
        try:
            with open(table, newline="", encoding="utf-8-sig") as handle:
                for number, cells in enumerate(csv.reader(handle), start=1):
                    yield number, list(cells)
        except UnicodeDecodeError:
            raise DataError(f"{table}: not UTF-8 text; save the CSV as UTF-8") from None
        return
    if suffix != ".xlsx":
        raise DataError(f"{table}: expected a .xlsx or .csv annotation table")
    try:
        import openpyxl
    except ImportError:
        raise MissingBackendError(f"{table}: reading .xlsx needs openpyxl: pip install 'medmim-eval[medical]' "
                                  "(or save the sheet as CSV)") from None
    try:
        book = openpyxl.load_workbook(table, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for a bad file
        raise DataError(f"{table}: not a readable .xlsx workbook ({type(exc).__name__})") from None
    try:
        sheet = book.worksheets[0]
        for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, list(cells)
    finally:
        book.close()

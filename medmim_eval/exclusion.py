"""Evaluating a clean subset: ``run --exclude KEYS_FILE`` and ``run --exclude-contaminated AUDIT.json``.

The excluded keys of each task are recorded in the manifest (``TaskInfo.excluded_keys``, with the
file they came from), a run directory refuses to be resumed with another exclusion, and every
result cell of such a task carries ``excluded`` (its count) so views mark it with
:data:`EXCLUDED_MARK` and a footer line: a clean run and a full run are never confused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from medmim_eval.errors import DataError
from medmim_eval.medmim_format import read_text_file

if TYPE_CHECKING:
    from medmim_eval.contamination import ContaminationAudit
    from medmim_eval.schema import ResultCell, Sample, TaskInfo

EXCLUDED_MARK = "‡"
AUDIT_COPY = "contamination.json"  # the audit a run excluded by, copied into its run directory


@dataclass(frozen=True)
class Exclusion:
    """Keys to leave out, and where they came from (``kind``: ``keys`` file or contamination ``audit``)."""

    keys: frozenset[str]
    source: str
    kind: str
    sha256: str
    audit: "ContaminationAudit | None" = None

    def describe(self) -> str:
        return f"{self.kind} {self.source} (sha256 {self.sha256[:12]})"


def read_keys_file(path: Path) -> Exclusion:
    """One sample key per line (blank lines and ``#`` comments ignored).

    Raises:
        DataError: a missing or unreadable file, or one without any key.
    """
    text = read_text_file(path)
    keys = frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise DataError(f"{path}: no sample key in this file; write one key per line "
                        "(the 'contaminated_keys' of `medmim-eval audit contamination --format json`)")
    return Exclusion(keys, str(path), "keys", hashlib.sha256(text.encode("utf-8")).hexdigest())


def read_audit(path: Path) -> Exclusion:
    """The contaminated keys of every task of an ``audit contamination --format json`` file.

    Raises:
        DataError: a missing file, malformed JSON or a file that is not such an audit.
    """
    from pydantic import ValidationError

    from medmim_eval.contamination import ContaminationAudit

    text = read_text_file(path)
    try:
        audit = ContaminationAudit.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                        "write it again with `medmim-eval audit contamination --format json -o FILE`") from None
    except ValidationError as exc:
        raise DataError(f"{path}: not a contamination audit ({exc.error_count()} field error(s), e.g. "
                        f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); write it with "
                        "`medmim-eval audit contamination --format json -o FILE`") from None
    if not audit.tasks:
        raise DataError(f"{path}: the audit holds no task; run `medmim-eval audit contamination` with --tasks")
    keys = frozenset(k for t in audit.tasks for k in t.contaminated_keys)
    return Exclusion(keys, str(path), "audit", hashlib.sha256(text.encode("utf-8")).hexdigest(), audit)


def split(samples: Sequence["Sample"], exclusion: Exclusion | None) -> tuple[list["Sample"], list[str]]:
    """(samples kept, keys excluded) of one task, in file order; a control's sample (``KEY@CONTROL``)
    goes with its standard key."""
    from medmim_eval.controls import base_key

    if exclusion is None:
        return list(samples), []
    kept = [s for s in samples if base_key(s.key) not in exclusion.keys]
    return kept, [s.key for s in samples if base_key(s.key) in exclusion.keys]


def check_used(exclusion: Exclusion, excluded: int) -> None:
    """Refuse an exclusion that names no item of the selected tasks (an audit of other files, a typo).

    Raises:
        DataError: naming the file and what keys look like.
    """
    if exclusion.keys and not excluded:
        example = next(iter(sorted(exclusion.keys)))
        raise DataError(f"{exclusion.source}: none of its {len(exclusion.keys)} key(s) (e.g. {example!r}) is an item "
                        "of the selected tasks; keys are FILE_STEM#INDEX#HASH of the task files this run loads "
                        "(was the audit made on other files or tasks?). No model was called.")


def mark_cells(cells: Iterable["ResultCell"], tasks: Iterable["TaskInfo"]) -> list["ResultCell"]:
    """The cells with ``excluded`` set from the manifest's tasks (0 where nothing was excluded)."""
    counts = {t.name: len(t.excluded_keys) for t in tasks}
    return [c.model_copy(update={"excluded": counts.get(c.task, 0)}) if counts.get(c.task, 0) != c.excluded else c
            for c in cells]

"""The run directory: ``samples.jsonl`` (crash-safe), ``manifest.json``, ``results.json``.

Each record is one JSON line, written and flushed as soon as its sample finishes. A process killed
mid-write leaves at most one torn last line; :meth:`RecordStore.load` detects it, drops it and
truncates the file so later appends start on a clean line. While a run is going, a sample may gain
a second line (an error retried; an open answer once its batched scores are in); readers keep the
last line per (model, sample). When a run finishes, :meth:`RecordStore.rewrite` replaces the file
with one line per (model, sample) -- atomically, so a kill at any moment leaves either layout, and
every reader accepts both.

In a data-parallel run each rank appends to its own shard, ``samples.rank-R.jsonl`` (same format,
same repair); :func:`merge_shards` folds every shard into ``samples.jsonl`` and deletes it.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from pydantic import BaseModel, ValidationError

from medmim_eval.errors import MedmimError, os_error_reason
from medmim_eval.schema import SampleRecord

SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"
_SHARD = re.compile(r"^samples\.rank-(\d+)\.jsonl$")


def shard_name(rank: int) -> str:
    """The record file rank ``rank`` of a data-parallel run appends to."""
    return f"samples.rank-{rank}.jsonl"


def shard_paths(run_dir: Path) -> list[Path]:
    """Record shards in ``run_dir``, whatever world size wrote them, in rank order."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("samples.rank-*.jsonl") if (m := _SHARD.match(p.name))]
    return [p for _, p in sorted(found)]


def ensure_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents) and prove a file can be written in it.

    Raises:
        MedmimError: one line naming the folder and why it cannot be used (a parent that is a
            file, a read-only file system, no permission).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedmimError(f"cannot create the run directory {run_dir}: {os_error_reason(exc, run_dir)}; "
                          "pass another --output") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=run_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise MedmimError(f"cannot write files in the run directory {run_dir}: {os_error_reason(exc)}; "
                          "pass another --output") from None


def write_json_atomic(path: Path, model: BaseModel) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(model.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise MedmimError(f"cannot write {path}: {os_error_reason(exc)}; "
                          "move what is in the way and rerun (finished samples are kept)") from None


class RecordStore:
    """Reads and appends the sample records of one run directory."""

    def __init__(self, run_dir: Path, name: str = SAMPLES_FILE) -> None:
        self.path = run_dir / name
        self._handle: IO[str] | None = None
        self.dropped_lines: list[str] = []
        self.lines_read = 0  # complete lines in the file at the last read, corrupt ones included
        self.corrupt_lines = 0

    def load(self, repair: bool = True) -> dict[tuple[str, str], SampleRecord]:
        """The latest record per (model, sample key). Later lines win (a retried error).

        With ``repair``, a torn last line is truncated away; corrupt lines elsewhere are skipped
        and listed in ``dropped_lines``.
        """
        latest: dict[tuple[str, str], SampleRecord] = {}
        for record in self.iter_records(repair=repair):
            latest[(record.model, record.key)] = record
        return latest

    def iter_records(self, repair: bool = False) -> Iterator[SampleRecord]:
        if not self.path.exists():
            return
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise MedmimError(f"{self.path}: cannot read the sample records ({os_error_reason(exc)})") from None
        end = len(data)
        if data and not data.endswith(b"\n"):
            end = data.rfind(b"\n") + 1
            self.dropped_lines.append(f"torn last line ({len(data) - end} bytes) dropped")
            if repair:
                with open(self.path, "r+b") as handle:
                    handle.truncate(end)
        self.lines_read = self.corrupt_lines = 0
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            self.lines_read += 1
            try:
                yield SampleRecord.model_validate_json(line)
            except ValidationError as exc:  # invalid JSON and invalid UTF-8 included
                self.corrupt_lines += 1
                self.dropped_lines.append(f"line {number}: {type(exc).__name__}")
                print(f"warning: {self.path}: line {number} is corrupt and was skipped", file=sys.stderr)

    def append(self, record: SampleRecord) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(record.model_dump_json() + "\n")
        self._handle.flush()

    def needs_rewrite(self, n_latest: int) -> bool:
        """Whether the last read found more lines than (model, sample) pairs, none of them corrupt.

        A file with a corrupt line is left as it is: rewriting it would delete what a person may
        still want to repair by hand.
        """
        return self.lines_read > n_latest and not self.corrupt_lines

    def rewrite(self, records: Iterable[SampleRecord]) -> None:
        """Replace the file with exactly ``records``, one line each, via a temporary file and a rename."""
        self.close()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(record.model_dump_json() + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self._handle is not None:
            try:
                os.fsync(self._handle.fileno())
            finally:
                self._handle.close()
                self._handle = None


@dataclass
class MergeReport:
    """What :func:`merge_shards` did: records appended, records already present, shards removed."""

    appended: int = 0
    already_merged: int = 0
    shards: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _digest(record: SampleRecord) -> bytes:
    return hashlib.sha1(record.model_dump_json().encode("utf-8")).digest()


def merge_shards(run_dir: Path) -> MergeReport:
    """Append every shard's records to ``samples.jsonl``, then delete the shards.

    Idempotent: a shard record identical to a line already in ``samples.jsonl`` is not appended
    again, so a merge killed half-way is completed by the next one. Shard records always postdate
    the merged file (shards are only written after the previous shards were merged), so appending
    keeps "later lines win".
    """
    report = MergeReport()
    shards = shard_paths(run_dir)
    if not shards:
        return report
    merged = RecordStore(run_dir)
    seen = {_digest(record) for record in merged.iter_records(repair=True)}
    report.notes += [f"{merged.path.name}: {note}" for note in merged.dropped_lines]
    try:
        for path in shards:
            shard = RecordStore(run_dir, path.name)
            for record in shard.iter_records(repair=True):
                digest = _digest(record)
                if digest in seen:
                    report.already_merged += 1
                    continue
                merged.append(record)
                seen.add(digest)
                report.appended += 1
            report.notes += [f"{path.name}: {note}" for note in shard.dropped_lines]
    finally:
        merged.close()  # fsync before any shard is deleted
    for path in shards:
        path.unlink()
        report.shards.append(path.name)
    return report

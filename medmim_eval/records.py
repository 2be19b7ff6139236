"""The run directory: ``samples.jsonl`` (append-only, crash-safe), ``manifest.json``, ``results.json``.

Each record is one JSON line, written and flushed as soon as its sample finishes. A process killed
mid-write leaves at most one torn last line; :meth:`RecordStore.load` detects it, drops it and
truncates the file so later appends start on a clean line.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Iterator

from pydantic import BaseModel, ValidationError

from medmim_eval.schema import SampleRecord

SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "manifest.json"
RESULTS_FILE = "results.json"


def write_json_atomic(path: Path, model: BaseModel) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(model.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RecordStore:
    """Reads and appends the sample records of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / SAMPLES_FILE
        self._handle: IO[str] | None = None
        self.dropped_lines: list[str] = []

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
        data = self.path.read_bytes()
        end = len(data)
        if data and not data.endswith(b"\n"):
            end = data.rfind(b"\n") + 1
            self.dropped_lines.append(f"torn last line ({len(data) - end} bytes) dropped")
            if repair:
                with open(self.path, "r+b") as handle:
                    handle.truncate(end)
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield SampleRecord.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
                self.dropped_lines.append(f"line {number}: {type(exc).__name__}")
                print(f"warning: {self.path}: line {number} is corrupt and was skipped", file=sys.stderr)

    def append(self, record: SampleRecord) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(record.model_dump_json() + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            try:
                os.fsync(self._handle.fileno())
            finally:
                self._handle.close()
                self._handle = None

"""One reader of a run directory: its ``manifest.json``, ``results.json`` and ``samples.jsonl``.

The runner, the leaderboard, compare and the HTML drill-down all read a run through
:class:`RunDirectory`, so a file is parsed, and a broken one reported, the same way everywhere:
an unreadable manifest or results file is one :class:`~medmim_eval.errors.MedmimError` line naming
the file and the fix; an absent one is ``None``.
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from medmim_eval.errors import MedmimError, os_error_reason
from medmim_eval.records import MANIFEST_FILE, RESULTS_FILE, RecordStore
from medmim_eval.schema import Results, RunManifest, SampleRecord


class RunDirectory:
    """A run directory, read lazily; each file is read at most once per instance."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.store = RecordStore(self.path)
        self._manifest: RunManifest | None = None
        self._manifest_read = False
        self._records: dict[tuple[str, str], SampleRecord] | None = None

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def has_records(self) -> bool:
        """Whether ``samples.jsonl`` exists (it may still be empty)."""
        return self.store.path.exists()

    def manifest(self) -> RunManifest | None:
        """The manifest, or None when the run has none.

        Raises:
            MedmimError: for a manifest that cannot be read or parsed.
        """
        if not self._manifest_read:
            self._manifest = _read_manifest(self.manifest_path)
            self._manifest_read = True
        return self._manifest

    def results(self) -> Results | None:
        """``results.json``, or None when absent.

        Raises:
            MedmimError: for a results file that cannot be read or parsed (delete it: views
                recompute it from ``samples.jsonl``).
        """
        path = self.results_path
        if not path.exists():
            return None
        try:
            return Results.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
            reason = os_error_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
            raise MedmimError(f"{path}: unreadable results ({reason}); "
                              "delete it to recompute from samples.jsonl") from None

    def records(self, repair: bool = False) -> dict[tuple[str, str], SampleRecord]:
        """The latest record per (model, sample key); ``repair`` drops a torn last line from the
        file (only the process that writes the run may). Lines skipped are in :attr:`dropped_lines`."""
        if self._records is None or repair:
            self._records = self.store.load(repair=repair)
        return self._records

    @property
    def dropped_lines(self) -> list[str]:
        return self.store.dropped_lines


def _read_manifest(path: Path) -> RunManifest | None:
    if not path.exists():
        return None
    try:
        return RunManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        reason = os_error_reason(exc) if isinstance(exc, OSError) else type(exc).__name__
        raise MedmimError(
            f"{path}: not a readable run manifest ({reason}); "
            "use another --output or move the file away"
        ) from None


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The manifest of ``run_dir`` (None when absent); see :meth:`RunDirectory.manifest`."""
    return _read_manifest(Path(run_dir) / MANIFEST_FILE)

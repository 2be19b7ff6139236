"""Progress display for runs: a rich bar (samples/s, ETA, errors) or nothing, behind one protocol."""
from __future__ import annotations

import sys
import time
from typing import Protocol


class RunDisplay(Protocol):
    def start_cell(self, label: str, total: int) -> None: ...
    def advance(self, done: int, errors: int) -> None: ...
    def finish_cell(self) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class QuietDisplay:
    """Prints only messages, to stderr."""

    def start_cell(self, label: str, total: int) -> None:
        return None

    def advance(self, done: int, errors: int) -> None:
        return None

    def finish_cell(self) -> None:
        return None

    def message(self, text: str) -> None:
        print(text, file=sys.stderr)

    def close(self) -> None:
        return None


class PlainDisplay(QuietDisplay):
    """One line per finished model x task, for logs that are not a terminal."""

    def __init__(self) -> None:
        self._label, self._total, self._done, self._errors, self._started = "", 0, 0, 0, 0.0

    def start_cell(self, label: str, total: int) -> None:
        self._label, self._total, self._done, self._errors = label, total, 0, 0
        self._started = time.perf_counter()

    def advance(self, done: int, errors: int) -> None:
        self._done += done
        self._errors += errors

    def finish_cell(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        print(f"{self._label}: {self._done}/{self._total} samples, {self._errors} errors, "
              f"{self._done / elapsed:.1f} samples/s", file=sys.stderr)


class RichDisplay:
    """One progress bar per model x task, on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[errors]}"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self._task: object | None = None
        self._errors = 0

    def start_cell(self, label: str, total: int) -> None:
        self._errors = 0
        self._task = self.progress.add_task(label, total=total, rate="", errors="")

    def advance(self, done: int, errors: int) -> None:
        if self._task is None:
            return
        self._errors += errors
        self.progress.advance(self._task, done)  # type: ignore[arg-type]
        speed = self.progress.tasks[-1].speed
        self.progress.update(
            self._task,  # type: ignore[arg-type]
            rate=f"{speed:.1f} samples/s" if speed else "",
            errors=f"{self._errors} errors" if self._errors else "",
        )

    def finish_cell(self) -> None:
        self._task = None

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()

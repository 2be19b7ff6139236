"""The sweep's live view: cells pending / running / done / failed, samples per second and ETA, on the
display layer of ``run`` (:mod:`medmim_eval.progress`): a rich bar on a terminal, plain lines for CI logs,
or only failures with ``--quiet``."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from medmim_eval.progress import PlainDisplay, QuietDisplay, RichDisplay

PLAIN_EVERY_S = 30.0


@dataclass
class SweepCounts:
    pending: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0

    def describe(self) -> str:
        return f"{self.pending} pending · {self.running} running · {self.done} done · {self.failed} failed"


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class SweepView:
    """Feeds the sweep's state to a run display; ``update`` is called as the sweep polls its cells."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "rich", "plain" or "quiet"
        self.display = RichDisplay() if mode == "rich" else PlainDisplay() if mode == "plain" else QuietDisplay()
        self._total = 0
        self._shown = 0
        self._first: int | None = None
        self._started = time.monotonic()
        self._last_plain = 0.0

    def start(self, total_samples: int, already: int, counts: SweepCounts) -> None:
        self._total, self._shown, self._first = total_samples, already, already
        self._started = time.monotonic()
        if self.mode == "rich":
            self.display.start_cell(f"sweep: {counts.describe()}", total_samples)
            self.display.advance(already, 0)
        elif self.mode == "plain":
            self._plain_status(counts, already, force=True)

    def update(self, counts: SweepCounts, samples: int, force: bool = False) -> None:
        samples = min(samples, self._total)
        if self.mode == "rich" and isinstance(self.display, RichDisplay):
            if samples > self._shown:
                self.display.advance(samples - self._shown, 0)
            if self.display._task is not None:  # noqa: SLF001 - the bar this view started
                self.display.progress.update(self.display._task, description=f"sweep: {counts.describe()}")  # noqa: SLF001
        elif self.mode == "plain":
            self._plain_status(counts, samples, force)
        self._shown = max(self._shown, samples)

    def _rate(self, samples: int) -> float:
        elapsed = time.monotonic() - self._started
        return (samples - (self._first or 0)) / elapsed if elapsed > 0 else 0.0

    def _plain_status(self, counts: SweepCounts, samples: int, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_plain < PLAIN_EVERY_S:
            return
        self._last_plain = now
        rate = self._rate(samples)
        eta = f", ETA {_eta((self._total - samples) / rate)}" if rate > 0 and samples < self._total else ""
        print(f"sweep: {counts.describe()}; {samples}/{self._total} samples, {rate:.1f} samples/s{eta}",
              file=sys.stderr, flush=True)

    def cell_event(self, text: str, failure: bool = False) -> None:
        """A cell started, finished or failed: every mode shows failures, quiet shows nothing else."""
        if failure or self.mode != "quiet":
            self.display.message(text)

    def close(self) -> None:
        self.display.close()

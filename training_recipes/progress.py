"""Training progress on stderr: a rich bar (steps, loss, learning rate, ETA) or plain log lines.

Shown by the main process only; the Trainer's own tqdm bar is switched off.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from transformers import TrainerCallback


class TrainingProgress(TrainerCallback):
    """A ``TrainerCallback`` drawing steps done of the total, the last logged loss and the ETA."""

    def __init__(self, label: str, enabled: bool = True, rich: bool | None = None) -> None:
        self.label, self.enabled = label, enabled
        self.rich = sys.stderr.isatty() if rich is None else rich
        self.progress: Any = None
        self.task: Any = None
        self.loss: float | None = None
        self.started = 0.0
        self.first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not (self.enabled and state.is_world_process_zero):
            return
        self.started, self.first_step = time.monotonic(), state.global_step
        if self.rich:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("steps  loss {task.fields[loss]}  lr {task.fields[lr]}"),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=Console(stderr=True))
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=state.max_steps, completed=state.global_step,
                                               loss="-", lr="-")
        else:
            print(f"{self.label}: {state.max_steps} optimiser steps"
                  + (f", resuming at step {state.global_step}" if state.global_step else ""), file=sys.stderr, flush=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not (self.enabled and state.is_world_process_zero) or not logs or "loss" not in logs:
            return
        self.loss = float(logs["loss"])
        lr = logs.get("learning_rate")
        if self.progress is not None:
            self.progress.update(self.task, loss=f"{self.loss:.4f}", lr=f"{lr:.2e}" if lr is not None else "-")
            return
        done = state.global_step - self.first_step
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        print(f"{self.label}: step {state.global_step}/{state.max_steps}  loss {self.loss:.4f}"
              + (f"  lr {lr:.2e}" if lr is not None else "") + f"  elapsed {elapsed:.0f}s  ETA {eta:.0f}s",
              file=sys.stderr, flush=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None

"""Stopping a run that has not started to learn, so that the recipe can start it over.

A model trained from scratch on the synthetic suite either learns to read the images or sits on a
loss plateau answering each question's most common reply; which one depends on the seed and, since
float sums differ between CPUs, on the machine (`training_recipes/tiny_model.py`). At
``plateau_step`` the :class:`PlateauCheck` averages the losses logged over the last
``plateau_window`` steps; above ``plateau_loss`` it stops the run, and :func:`check_stopped` raises
:class:`TrainingPlateau` instead of saving a model that has not learned.
"""
from __future__ import annotations

from typing import Any

from medmim_eval.errors import MedmimError


class TrainingPlateau(MedmimError):
    """The loss was still on its plateau at the check: ``summary`` says so, ``record`` is for the lineage."""

    def __init__(self, seed: int, step: int, window: int, mean_loss: float, limit: float) -> None:
        self.encoded: Any = None  # the stopped run's encoded rows (an EncodedRows), for the next try
        self.record = {"seed": seed, "stopped_at_step": step, "mean_loss": round(mean_loss, 4), "plateau_loss": limit}
        self.summary = (f"seed {seed}: the mean loss over steps {max(1, step - window + 1)}-{step} was {mean_loss:.4f}, "
                        f"above plateau_loss={limit}: the model has not started to learn")
        super().__init__(f"{self.summary}; train again with another seed (seed=N), or with plateau_step=0 to train "
                         "to the end regardless")


def window_mean(history: list[dict[str, Any]], step: int, window: int) -> float | None:
    """The mean of the losses logged at steps in (step - window, step], or None when none was."""
    losses = [float(e["loss"]) for e in history if "loss" in e and step - window < int(e.get("step", 0)) <= step]
    return sum(losses) / len(losses) if losses else None


class PlateauCheck:
    """At the first log at or after ``step``: stop the run if the window's mean loss exceeds ``limit``.
    A ``transformers.TrainerCallback`` through :func:`plateau_callback`."""

    def __init__(self, step: int, window: int, limit: float) -> None:
        self.step, self.window, self.limit = step, window, limit
        self.checked = False
        self.mean: float | None = None
        self.stopped_at: int | None = None

    def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.checked or state.global_step < self.step:
            return control
        self.checked = True
        self.mean = window_mean(state.log_history, state.global_step, self.window)
        if self.mean is not None and self.mean > self.limit:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            control.should_save = False
        return control


def plateau_callback(step: int, window: int, limit: float) -> PlateauCheck:
    """A :class:`PlateauCheck` that is also a ``TrainerCallback`` (imports transformers)."""
    from transformers import TrainerCallback

    class Callback(PlateauCheck, TrainerCallback):  # type: ignore[misc,valid-type]
        pass

    return Callback(step, window, limit)


def check_stopped(check: PlateauCheck | None, seed: int) -> None:
    """Raise :class:`TrainingPlateau` when ``check`` stopped the run."""
    if check is not None and check.stopped_at is not None and check.mean is not None:
        raise TrainingPlateau(seed, check.stopped_at, check.window, check.mean, check.limit)

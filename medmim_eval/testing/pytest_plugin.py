"""The pytest plugin shipped with medmim-eval (entry point ``pytest11``): fixtures for plugin authors.

Loaded automatically by pytest wherever medmim-eval is installed; it imports nothing heavy.

Fixtures:
    medmim_conformance: ``medmim_conformance(factory, target=..., options=..., other_weights=...,
        other_settings=..., skip=...)`` runs the adapter conformance check
        (:func:`medmim_eval.testing.check_adapter`) in a fresh folder and returns the report; a
        failed check fails the test with one line per failure.
    medmim_samples: a :class:`~medmim_eval.testing.conformance.SampleKit` in a fresh folder: real
        Med-MIM items and images, loaded through the harness's task loader (``kit.samples([kit.item(2)])``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture
def medmim_conformance(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    from medmim_eval.testing.conformance import check_adapter

    def check(factory: Any, **fields: Any) -> Any:
        return check_adapter(factory, tmp_path_factory.mktemp("medmim-conformance"), **fields)

    return check


@pytest.fixture
def medmim_samples(tmp_path: Path) -> Any:
    from medmim_eval.testing.conformance import SampleKit

    return SampleKit(tmp_path / "medmim-samples")

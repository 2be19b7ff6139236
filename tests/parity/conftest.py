"""Parity tests: every test here carries the ``parity`` marker (``pytest -m parity``)."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.parity)


@pytest.fixture(scope="session")
def mantis_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked ``mantis-vl==0.0.5`` wheel (root folder holding ``mantis/``), or skip offline."""
    from references import pypi_wheel

    return pypi_wheel("mantis-vl", "0.0.5", tmp_path_factory.mktemp("mantis-vl"))

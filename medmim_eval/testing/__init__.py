"""The plugin author's test kit: the adapter conformance check and its pytest fixtures.

``from medmim_eval.testing import check_adapter`` runs every check on an adapter factory; the pytest
plugin (:mod:`medmim_eval.testing.pytest_plugin`, loaded automatically once medmim-eval is
installed) offers the same as the ``medmim_conformance`` fixture. See docs/plugins.md.
"""
from medmim_eval.testing.conformance import CHECKS, AdapterCase, ConformanceError, ConformanceReport, check_adapter

__all__ = ["CHECKS", "AdapterCase", "ConformanceError", "ConformanceReport", "check_adapter"]

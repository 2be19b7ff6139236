"""The house rule, drawn from the source: plugin wings (adapters/, tasks/, dataset_builders/,
training_recipes/) import only the core (medmim_eval/), never each other, and the core imports no
wing. Every ``import`` and ``from ... import`` statement is read with :mod:`ast` (relative imports
resolved, imports inside functions included), so a lazy import counts as much as a top-level one."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "medmim_eval"
WINGS = ("adapters", "tasks", "dataset_builders", "training_recipes")


def room_of(module: str) -> str | None:
    """``core``, a wing's name, or None for a module outside the project."""
    parts = module.split(".")
    if parts[0] != CORE:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else "core"


def module_name(path: Path, root: Path) -> tuple[list[str], bool]:
    """The dotted name ``path`` installs as (wings install under ``medmim_eval.``), and whether it
    is a package ``__init__``."""
    rel = list(path.relative_to(root).with_suffix("").parts)
    parts = rel if rel[0] == CORE else [CORE, *rel]
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def imported_modules(node: ast.AST, package: list[str]) -> list[str]:
    """The modules (and ``module.name`` candidates) an import statement reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package[:len(package) - (node.level - 1)]
            head = ".".join(base + ([node.module] if node.module else []))
        else:
            head = node.module or ""
        return [head] + [f"{head}.{alias.name}" for alias in node.names]
    return []


def violations(root: Path) -> list[str]:
    """``file:line: room -> module`` for every import across the house rule."""
    found: list[str] = []
    for top in (CORE, *WINGS):
        for path in sorted((root / top).rglob("*.py")):
            name, is_package = module_name(path, root)
            here = room_of(".".join(name))
            package = name if is_package else name[:-1]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                for target in imported_modules(node, package):
                    there = room_of(target)
                    if there is not None and there != here and there != "core":
                        found.append(f"{path.relative_to(root)}:{node.lineno}: {here} -> {target}")
                        break
    return found


def test_no_wing_imports_another_wing_and_the_core_imports_no_wing() -> None:
    assert violations(ROOT) == []


def test_the_check_sees_every_way_a_module_can_cross(tmp_path: Path) -> None:
    """A synthetic tree with one crossing of each kind: all found, the allowed imports not."""
    files = {
        "medmim_eval/__init__.py": "",
        "medmim_eval/cli/__init__.py": "",
        "medmim_eval/cli/cmd.py": "def f():\n    from medmim_eval.tasks.official import X\n",
        "medmim_eval/ok.py": "import json\nfrom medmim_eval import errors\nfrom . import schema\n",
        "medmim_eval/pull.py": "from medmim_eval import adapters\n",
        "adapters/__init__.py": "",
        "adapters/a.py": "import medmim_eval.training_recipes.sft\nfrom medmim_eval.adapters import b\n",
        "adapters/b.py": "from .c import thing\nfrom ..tasks import synth\n",
        "tasks/__init__.py": "",
        "tasks/t.py": "from medmim_eval.images import load_rgb\n",
        "dataset_builders/__init__.py": "",
        "dataset_builders/d.py": "from medmim_eval.adapters.openai.plugin import host_of\n",
        "training_recipes/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = [line.split(": ", 1)[1] for line in violations(tmp_path)]
    assert sorted(found) == sorted([
        "core -> medmim_eval.tasks.official",
        "core -> medmim_eval.adapters",  # ``from medmim_eval import adapters``
        "adapters -> medmim_eval.training_recipes.sft",
        "adapters -> medmim_eval.tasks",
        "dataset_builders -> medmim_eval.adapters.openai.plugin",
    ])


def imports_of(path: Path) -> set[str]:
    name, is_package = module_name(path, ROOT)
    package = name if is_package else name[:-1]
    return {t for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) for t in imported_modules(node, package)}


def test_the_views_stack_without_a_cycle() -> None:
    """view_model <- exports <- leaderboard: the renderers never reach back up to the leaderboard (or
    a command), and the view model reaches neither."""
    def reaching(path: Path, banned: tuple[str, ...]) -> list[str]:
        return sorted(t for t in imports_of(path) if t.startswith(banned))

    exports = sorted((ROOT / CORE / "exports").rglob("*.py"))
    assert exports
    found = {str(p.relative_to(ROOT)): reaching(p, ("medmim_eval.leaderboard", "medmim_eval.cli")) for p in exports}
    assert {k: v for k, v in found.items() if v} == {}
    assert reaching(ROOT / CORE / "view_model.py", ("medmim_eval.leaderboard", "medmim_eval.exports")) == []

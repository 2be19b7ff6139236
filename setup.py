"""Maps the top-level plugin folders under the ``medmim_eval`` package.

The repository keeps ``adapters/``, ``tasks/``, ``dataset_builders/`` and ``training_recipes/`` at
the top level, but installing them as top-level import names would collide with other packages.
"""
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
PLUGIN_FOLDERS = ("adapters", "tasks", "dataset_builders", "training_recipes")


def _packages_under(folder: str, import_prefix: str) -> dict[str, str]:
    mapping = {}
    for init in sorted((ROOT / folder).rglob("__init__.py")):
        rel = init.parent.relative_to(ROOT)
        sub = rel.relative_to(folder).parts
        mapping[".".join((import_prefix, *sub))] = rel.as_posix()
    return mapping


package_dir = {"medmim_eval": "medmim_eval"}
package_dir.update(_packages_under("medmim_eval", "medmim_eval"))
for name in PLUGIN_FOLDERS:
    package_dir.update(_packages_under(name, f"medmim_eval.{name}"))

setup(
    packages=sorted(package_dir),
    package_dir=package_dir,
    package_data={"": ["*.yaml", "*.json", "*.md"], "medmim_eval": ["data/*.json"],
                  "medmim_eval.adapters.vllm": ["chat_templates/*.jinja"],
                  "medmim_eval.training_recipes": ["configs/*.yaml"]},
    include_package_data=True,
)

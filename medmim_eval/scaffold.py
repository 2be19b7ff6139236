"""``medmim-eval new adapter NAME``: writes an installable third-party adapter package (entry point,
adapter module, README, a test using the conformance kit) that passes its own tests unchanged."""
from __future__ import annotations

import re
from pathlib import Path
from string import Template

from medmim_eval.errors import MedmimError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=70"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name adapter for medmim-eval"
requires-python = ">=3.10"
dependencies = ["medmim-eval"]

[project.optional-dependencies]
test = ["pytest>=8", "pillow"]

# medmim-eval finds the plugin through this entry point once the package is installed.
[project.entry-points.medmim_eval]
$module = "$module.plugin"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """\
# $dist

The `$name` adapter for medmim-eval (its docs/plugins.md describes the plugin contract).

    pip install -e '.[test]'
    medmim-eval list adapters          # shows $name
    medmim-eval run --models $name:WEIGHTS --tasks synth --limit 4
    pytest                              # the conformance kit checks the adapter

The adapter in `$module/adapter.py` is a stand-in that answers without a model: replace
`$class_name.answer` with your model's call, load the weights in `__init__`, put everything that
changes an answer into `fingerprint()`, and keep the tests passing. Options:
`$name:TARGET,answer=first|last,max_images=N,batch=N`.
"""

INIT = '''\
"""The $name adapter for medmim-eval."""
__version__ = "0.1.0"
'''

PLUGIN = '''\
"""Registers the $name adapter with medmim-eval (the entry point in pyproject.toml names this module)."""
from __future__ import annotations

from typing import Callable

from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(AdapterEntry(
        name="$name",
        description="$name: describe the model here",
        factory="$module.adapter:make_adapter",  # imported only when a run uses the adapter
        target="optional",
        example="$name:path/to/weights,answer=first",
    ))
'''

ADAPTER = '''\
"""The $name adapter: one answer per request, images in prompt order, errors returned per request."""
from __future__ import annotations

import asyncio
from typing import Any, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult
from medmim_eval.errors import MedmimError, TooManyImagesError
from medmim_eval.schema import PromptRecord, Sample

from $module import __version__

ANSWERS = ("first", "last")


class $class_name:
    """Stands in for a model: picks the first (or last) option of a closed question; for an open one it
    says how many images it saw. Replace ``answer`` with the model call."""

    def __init__(self, model_id: str, target: str | None, options: dict[str, str]) -> None:
        self.model_id = model_id
        self.target = target  # e.g. the weights folder; load the model here
        self.answer_mode = options.get("answer", "first")
        if self.answer_mode not in ANSWERS:
            raise MedmimError(f"$name: answer={self.answer_mode!r}; use one of {', '.join(ANSWERS)}")
        self.capabilities = Capabilities(max_images=int(options.get("max_images", 3)),
                                         batch_size=int(options.get("batch", 4)), max_concurrency=1)

    def fingerprint(self) -> dict[str, Any]:
        # Everything that changes an answer: code version, weights, prompt settings. The response
        # cache is keyed by it, so bump __version__ whenever the code answers differently.
        return {"adapter": "$name", "version": __version__, "target": self.target, "answer": self.answer_mode,
                "max_images": self.capabilities.max_images}

    def answer(self, sample: Sample, images: list[Any]) -> str:
        if sample.kind == "closed":
            letters = sorted(sample.options)
            return letters[0] if self.answer_mode == "first" else letters[-1]
        return f"I see {len(images)} images."

    def one(self, request: GenerationRequest) -> GenerationResult | BaseException:
        from PIL import Image

        sample = request.sample
        parts = sample.prompt.images  # in prompt order; part.index is the image's place in the item
        if len(parts) > self.capabilities.max_images:
            return TooManyImagesError(len(parts), self.capabilities.max_images, self.model_id)
        try:
            images = []
            for part in parts:
                with Image.open(part.path) as image:
                    images.append(image.convert("RGB"))
        except OSError as exc:  # an unreadable image is an error for this request, never an answer
            return exc
        sent = PromptRecord(n_images=len(images), image_order=[p.index for p in parts],
                            image_sizes=[im.size for im in images])
        return GenerationResult(self.answer(sample, images), sent=sent)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        # A blocking model call belongs in a thread, so the event loop (and Ctrl-C) stays responsive.
        return await asyncio.to_thread(lambda: [self.one(r) for r in requests])

    async def aclose(self) -> None:
        return None  # free the model, close clients; must be safe to call twice


def make_adapter(target: str | None, options: dict[str, str], context: AdapterContext) -> $class_name:
    """The factory the entry names: ``--models $name[:TARGET][,key=value...]``."""
    return $class_name(options.get("label") or "$name", target, options)
'''

TEST = '''\
"""The medmim-eval conformance kit on the $name adapter (fixtures from medmim-eval's pytest plugin)."""
from __future__ import annotations

from typing import Any

FACTORY = "$module.adapter:make_adapter"


def test_the_adapter_conforms(medmim_conformance: Any) -> None:
    report = medmim_conformance(FACTORY, target="weights-a", options={},
                                other_weights=("weights-b", {}),
                                other_settings=("weights-a", {"answer": "last"}))
    assert not report.failed


def test_the_plugin_is_installed() -> None:
    from medmim_eval.plugins import create_plugin_host

    host = create_plugin_host()
    assert "$name" in host.adapters, [f.line() for f in host.failures]
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "$module/__init__.py": INIT,
    "$module/plugin.py": PLUGIN,
    "$module/adapter.py": ADAPTER,
    "tests/test_adapter.py": TEST,
}


def new_adapter(name: str, folder: Path | None = None) -> Path:
    """Write the package for adapter ``name`` into ``folder`` (default ``./medmim-NAME``); returns it.

    Raises:
        MedmimError: for a name that is not lower-case words joined by hyphens, or a folder that is not empty.
    """
    if not NAME.match(name):
        raise MedmimError(f"adapter name {name!r}: use lower-case letters and digits joined by hyphens, e.g. my-model")
    values = {"name": name, "dist": f"medmim-{name}", "module": "medmim_" + name.replace("-", "_"),
              "class_name": "".join(w.capitalize() for w in name.split("-")) + "Adapter"}
    folder = Path(folder) if folder is not None else Path(values["dist"])
    if folder.exists() and any(folder.iterdir()):
        raise MedmimError(f"{folder} exists and is not empty; pass --dir with a new folder")
    for rel, text in FILES.items():
        path = folder / Template(rel).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
    return folder

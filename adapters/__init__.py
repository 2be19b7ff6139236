"""Built-in model adapters, one package per family (installed as ``medmim_eval.adapters``).

``baselines.py`` (with ``plugin.py``), ``openai/``, ``vllm/`` and ``hf/`` (``llava``, ``idefics2``,
``internvl/``, ``deepseek_vl/``, ``med_flamingo/``). The flat module names of earlier releases
(``medmim_eval.adapters.hf_llava`` ...) still import, with a ``DeprecationWarning`` naming the new
path, so saved factory strings and third-party imports keep working.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED: dict[str, str] = {
    "openai_plugin": "openai.plugin",
    "openai_chat": "openai.chat",
    "image_payload": "openai.image_payload",
    "vllm_plugin": "vllm.plugin",
    "vllm_adapter": "vllm.adapter",
    "vllm_server": "vllm.server",
    "vllm_offline": "vllm.offline",
    "vllm_offline_worker": "vllm.offline_worker",
    "vllm_serve_cmd": "vllm.serve_cmd",
    "model_registry": "vllm.model_registry",
    "hf_plugin": "hf.plugin",
    "hf_common": "hf.common",
    "placement_options": "hf.placement_options",
    "legacy_decoding": "hf.legacy_decoding",
    "hf_llava": "hf.llava",
    "hf_idefics2": "hf.idefics2",
    "internvl_plugin": "hf.internvl.plugin",
    "hf_internvl": "hf.internvl.adapter",
    "internvl_processor": "hf.internvl.processor",
    "internvl_tiling": "hf.internvl.tiling",
    "deepseek_flamingo_plugin": "hf.deepseek_vl.plugin",
    "hf_deepseek_vl": "hf.deepseek_vl.adapter",
    "deepseek_vl_package": "hf.deepseek_vl.package",
    "deepseek_vl_prompt": "hf.deepseek_vl.prompt",
    "med_flamingo": "hf.med_flamingo.adapter",
    "med_flamingo_prompt": "hf.med_flamingo.prompt",
    "med_flamingo_setup": "hf.med_flamingo.parts",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old flat adapter module name as the module it moved to (the same object)."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - importlib's signature
        prefix, _, short = fullname.rpartition(".")
        if prefix != __name__ or short not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):  # noqa: ANN001
        return None

    def exec_module(self, module) -> None:  # noqa: ANN001
        new = f"{__name__}.{MOVED[module.__name__.rpartition('.')[2]]}"
        warnings.warn(f"{module.__name__} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        # the import system returns whatever sys.modules holds for the name once this returns
        sys.modules[module.__name__] = importlib.import_module(new)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())

"""Stand-ins for the two imports of InternVL2's code chain that this environment lacks, installed
only if still missing (in the test process by ``references.internvl2_importable``; in a CLI
subprocess by having this folder on ``PYTHONPATH``, where Python imports it at start-up):

* ``timm.models.layers.DropPath``: timm would pull in torchvision; InternViT builds a DropPath only
  for ``drop_path_rate > 0`` and the tiny configs use 0;
* ``transformers.modeling_attn_mask_utils._prepare_4d_causal_attention_mask``: removed in
  transformers 5, imported by InternVL's Phi-3 module, which InternVL2-8B (InternLM2) never runs.

Anything that reaches a stand-in raises NotImplementedError."""
import importlib
import importlib.machinery
import sys
import types


def _missing(*_args, **_kwargs):  # pragma: no cover - raises only if an unused path is taken
    raise NotImplementedError("stand-in for an import this environment lacks; the path is not used here")


STAND_INS = {"timm": {}, "timm.models": {}, "timm.models.layers": {"DropPath": _missing},
             "transformers.modeling_attn_mask_utils": {"_prepare_4d_causal_attention_mask": _missing}}


def install_stand_ins():
    """Put each missing module of ``STAND_INS`` into ``sys.modules``; return their names."""
    added = []
    for name, attributes in STAND_INS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
            added.append(name)
    return added


install_stand_ins()

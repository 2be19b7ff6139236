"""Restoring the non-persistent buffers of models whose code transformers does not know.

transformers 5 builds every model on the meta device and then gives each buffer that is not in the
checkpoint an *uninitialised* tensor (``torch.empty_like``), relying on the model's
``_init_weights`` to fill it. Its own classes do; code written for transformers 4 (a checkpoint's
remote code, such as InternVL2's InternLM2) computed those buffers in ``__init__`` and never
refills them: a rotary embedding's ``cos_cached`` then holds whatever the
memory held, and the model answers garbage or NaN, differently from run to run.

:func:`restore_buffers` rebuilds each module that owns non-persistent buffers from its own
constructor, with the arguments it kept as attributes of the same names (``dim``, ``base``,
``max_position_embeddings``, ``scaling_factor``, ``config``...), on the CPU, and copies the fresh
buffers into the loaded model in the dtype and device the loader chose. Only modules without
parameters of their own are rebuilt (rotary embeddings and the like: nothing large is allocated),
and only under transformers 5 or later; a module that cannot be rebuilt keeps its buffers and is
named in one warning. Imports torch only inside the functions.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any

from medmim_eval.errors import MedmimError


def restore_buffers(model: Any, what: str) -> list[str]:
    """Recompute the non-persistent buffers of ``model``'s parameter-free modules from their
    constructors; return the names of the buffers restored.

    A module that cannot be rebuilt (a constructor argument it did not keep, a constructor that
    fails, a buffer of another shape) keeps the buffers the loader gave it, and one warning on
    stderr names it and ``what``: they are right where the model's own initialisation filled them.
    """
    import torch
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        return []  # transformers 4 ran the constructors on real memory: the buffers are right
    restored: list[str] = []
    unverified: list[str] = []
    for prefix, module in model.named_modules():
        names = [n for n in getattr(module, "_non_persistent_buffers_set", ()) if module._buffers.get(n) is not None]
        if not names:
            continue
        if any(True for _ in module.parameters()):
            continue  # holds weights: rebuilding it would allocate them (and the checkpoint or init covers these)
        label = f"{prefix or '(model)'} ({type(module).__name__})"
        try:
            fresh = _rebuild(module)
        except MedmimError as exc:
            unverified.append(f"{label}: {exc}")
            continue
        for name in names:
            old, new = module._buffers[name], fresh._buffers.get(name)
            if new is None or new.shape != old.shape:
                unverified.append(f"{label}: {name} rebuilt as {None if new is None else tuple(new.shape)}, "
                                  f"loaded as {tuple(old.shape)}")
                continue
            with torch.no_grad():
                module._buffers[name] = new.to(device=old.device, dtype=old.dtype)
            restored.append(f"{prefix}.{name}" if prefix else name)
    if unverified:
        print(f"{what}: warning: buffers this code computes when it builds the model could not be recomputed, and "
              f"transformers {transformers.__version__} may have left them uninitialised: {'; '.join(unverified[:3])}"
              f"{' ...' if len(unverified) > 3 else ''}. If the answers look wrong, load the model with "
              f"transformers < 5", file=sys.stderr, flush=True)
    return restored


def _rebuild(module: Any) -> Any:
    """A fresh instance of ``module``'s class on the CPU, built from the attributes it kept.

    Raises:
        MedmimError: an argument it did not keep, or a constructor that fails.
    """
    import torch

    cls = type(module)
    kwargs: dict[str, Any] = {}
    for name, param in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "device":
            kwargs[name] = "cpu"
        elif hasattr(module, name):
            kwargs[name] = getattr(module, name)
        elif param.default is param.empty:
            raise MedmimError(f"{cls.__name__}({name}=...) cannot be rebuilt: it does not keep {name!r}")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.device("cpu"):
            return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - third-party constructors raise anything
        raise MedmimError(f"rebuilding {cls.__name__} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.set_default_dtype(previous)

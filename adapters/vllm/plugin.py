"""Registers the ``vllm`` and ``vllm-offline`` adapters and the paper models they serve.

Imported by every command: it imports neither vllm nor openai (the checks only look them up).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from medmim_eval.adapters.vllm.model_registry import MODEL_ENTRIES
from medmim_eval.adapters.vllm.options import OFFLINE_OPTIONS, VLLM_OPTIONS
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry

if TYPE_CHECKING:
    import click


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="vllm",
            description="a vLLM OpenAI-compatible server: launched for the model and stopped afterwards, "
                        "or attached to with base_url=URL[|URL...]",
            factory="medmim_eval.adapters.vllm.adapter:make_vllm",
            extras=("vllm", "openai"),
            target="required",
            example="vllm:/models/med-mantis  or  vllm:OpenGVLab/InternVL2-8B,tp=2  or  "
                    "vllm:NAME,base_url=http://127.0.0.1:8000/v1",
            check="medmim_eval.adapters.vllm.adapter:check_vllm",
            remote="medmim_eval.adapters.vllm.adapter:remote_vllm",
            gpus="medmim_eval.adapters.vllm.model_registry:engine_gpus",
            options=VLLM_OPTIONS,
        )
    )
    register(
        AdapterEntry(
            name="vllm-offline",
            description="vLLM's offline engine (vllm.LLM, batched LLM.chat) in a worker process, for "
                        "single-host batch evaluation",
            factory="medmim_eval.adapters.vllm.offline:make_vllm_offline",
            extras=("vllm",),
            target="required",
            example="vllm-offline:/models/mim-llava-med,preset=mim-llava-med,batch=64",
            check="medmim_eval.adapters.vllm.offline:check_vllm_offline",
            gpus="medmim_eval.adapters.vllm.model_registry:engine_gpus",
            options=OFFLINE_OPTIONS,
        )
    )
    for entry in MODEL_ENTRIES:
        register(entry)


@hookimpl
def register_commands(cli: "click.Group") -> None:
    """Adds ``medmim-eval serve``: one vLLM server for a model, shared between runs."""
    from medmim_eval.adapters.vllm.serve_cmd import serve

    cli.add_command(serve)

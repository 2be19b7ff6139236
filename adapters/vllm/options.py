"""The ``key=value`` options of ``vllm:``, ``vllm-offline:`` and ``medmim-eval serve``, declared as data.

The core checks a spec against them before any engine starts (an unknown key is refused with the
list of known ones, instead of being ignored), and ``medmim-eval list adapters --options`` shows
them. Values the adapter parses itself (a preset name, seconds, JSON) keep their specific checks in
:mod:`medmim_eval.adapters.vllm.model_registry` and the adapters.
"""
from __future__ import annotations

from medmim_eval.adapter_options import AdapterOption
from medmim_eval.adapters.openai.plugin import OPTIONS as OPENAI_OPTIONS
from medmim_eval.adapters.vllm.model_registry import DEFAULT_MAX_IMAGES, PRESETS
from medmim_eval.adapters.vllm.server import DEFAULT_STARTUP_TIMEOUT_S

_FLAG = "1|true|yes|on"


def _engine_options(data_parallel_help: str) -> tuple[AdapterOption, ...]:
    """What shapes the engine, for the server and the offline engine alike."""
    return (
        AdapterOption("preset", "choice", choices=tuple(sorted(PRESETS)), default="the preset whose hub id is the target",
                      help="launch flags and chat template of a paper model"),
        AdapterOption("launcher", metavar="PYTHON", default="$MEDMIM_VLLM_PYTHON, else this python",
                      help="the python whose environment has vLLM"),
        AdapterOption("env.*", metavar="VALUE", default="$MEDMIM_VLLM_ENV",
                      help="env.NAME=VALUE: environment of the engine (wins over $MEDMIM_VLLM_ENV)"),
        AdapterOption("max_images", "int", minimum=1, default=f"the preset's, else {DEFAULT_MAX_IMAGES}",
                      help="images a prompt may hold (--limit-mm-per-prompt); more are flagged, never truncated"),
        AdapterOption("max_model_len", "int", minimum=1, default="the preset's, else the model's",
                      help="context length of the engine"),
        AdapterOption("trust_remote_code", metavar=_FLAG, default="the preset's, else off",
                      help="let the engine run the checkpoint's own code"),
        AdapterOption("chat_template", metavar="FILE|NAME", default="the preset's",
                      help="a Jinja file, or the name of a bundled template"),
        AdapterOption("tp", "int", minimum=1, default="1", help="tensor-parallel GPUs"),
        AdapterOption("dp", "int", minimum=1, default="1", help=data_parallel_help),
        AdapterOption("dtype", metavar="auto|bfloat16|float16|float32", default="the engine's (auto)",
                      help="weights dtype of the engine"),
        AdapterOption("enforce_eager", metavar=_FLAG, default="off", help="no CUDA graphs"),
        AdapterOption("startup_timeout", metavar="SECONDS", default=f"{DEFAULT_STARTUP_TIMEOUT_S:g}",
                      help="how long to wait for the engine to be ready"),
        AdapterOption("log", metavar="FILE", default="a new file under the cache's vllm-logs/",
                      help="where the engine's output goes"),
    )


_SERVER_ONLY = (
    AdapterOption("served_name", metavar="NAME", default="label=, else the target",
                  help="the model name the server answers to"),
    AdapterOption("args", metavar="WORDS", default="$MEDMIM_VLLM_ARGS",
                  help="extra api_server arguments (shell words, after $MEDMIM_VLLM_ARGS)"),
)

#: ``medmim-eval serve -o KEY=VALUE``: how the one server is started (its address: ``--host``, ``--port``).
SERVE_OPTIONS = _engine_options("data-parallel engines in the server") + _SERVER_ONLY

_REQUEST = tuple(o for o in OPENAI_OPTIONS if o.name not in ("base_url", "api_key_env", "max_images"))

#: ``vllm:TARGET,...``: launch options, ``base_url`` to attach instead, and the openai adapter's request options.
VLLM_OPTIONS = SERVE_OPTIONS + (
    AdapterOption("host", metavar="ADDRESS", default="127.0.0.1", help="address the launched server listens on"),
    AdapterOption("port", "int", minimum=0, default="0 (a free port)", help="port of the launched server"),
    AdapterOption("base_url", metavar="URL[|URL...]", default="launch a server here",
                  help="attach to running servers (e.g. medmim-eval serve) instead of launching one"),
) + _REQUEST

#: What only a server medmim-eval launches uses; refused with ``base_url`` (the running server's own settings apply).
LAUNCH_ONLY = tuple(o for o in VLLM_OPTIONS if o.name not in ("served_name", "max_images", "base_url")
                    and o not in _REQUEST)


def launch_only(options: dict[str, str]) -> list[str]:
    """The keys of ``options`` that only shape a launched server (``env.NAME`` included)."""
    return sorted(k for k in options if any(o.matches(k) for o in LAUNCH_ONLY))


#: ``vllm-offline:TARGET,...``: the engine options, ``engine.KEY=JSON``, batching and the image policy.
OFFLINE_OPTIONS = _engine_options("not offline: use vllm:...,dp=N") + (
    AdapterOption("engine.*", metavar="JSON", help="engine.KEY=JSON: any other vllm.LLM argument, "
                  "e.g. engine.gpu_memory_utilization=0.85"),
    AdapterOption("batch", "int", minimum=1, default="32", help="prompts per LLM.chat call"),
) + tuple(o for o in OPENAI_OPTIONS if o.name in ("max_side", "jpeg_quality"))

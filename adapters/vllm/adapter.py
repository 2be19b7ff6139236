"""The ``vllm:`` adapter: a model on a vLLM OpenAI-compatible server, launched here or attached to.

Spec: ``vllm:PATH_OR_HUB_ID[,key=value...]``.

* Without ``base_url=`` it launches ``python -m vllm.entrypoints.openai.api_server`` for the target
  (see :mod:`medmim_eval.adapters.vllm.server`) with the launch flags of the model's preset
  (:mod:`medmim_eval.adapters.vllm.model_registry`), waits until it is healthy, evaluates through
  :class:`~medmim_eval.adapters.openai.chat.OpenAIChatAdapter` and stops it in ``aclose``.
* With ``base_url=URL[|URL...]`` it attaches to running servers (e.g. ``medmim-eval serve``) that
  serve the target under that name (or whose checkpoint root is the target) and stops nothing.

Launch options: ``preset``, ``served_name``, ``launcher`` (``$MEDMIM_VLLM_PYTHON``), ``env.NAME``
(``$MEDMIM_VLLM_ENV``), ``args`` (``$MEDMIM_VLLM_ARGS``), ``host``, ``port``, ``max_images``,
``max_model_len``, ``trust_remote_code``, ``chat_template``, ``tp``, ``dp``, ``dtype``,
``enforce_eager``, ``startup_timeout``, ``log``. Request options are the openai adapter's
(``concurrency``, ``timeout``, ``max_retries``, ``max_side``...); they pass through.

The fingerprint names the checkpoint, the served name, the vLLM version, the launch flags that
change answers, the chat template's hash and a cheap digest of local weights -- never the port,
so a rerun on another free port resumes the same run.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Sequence

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult
from medmim_eval.adapter_options import options_problem
from medmim_eval.adapters.openai.http_client import httpx_installed
from medmim_eval.adapters.vllm.model_registry import EngineSettings, engine_settings, server_args, unservable_reason
from medmim_eval.adapters.vllm.options import VLLM_OPTIONS, launch_only
from medmim_eval.adapters.vllm.server import (DEFAULT_STARTUP_TIMEOUT_S, LaunchSpec, ServerProcess, describe_server,
                                              extra_args, launch, launch_env, launcher_python, vllm_missing)
from medmim_eval.errors import MedmimError, MissingBackendError
from medmim_eval.weights import weights_digest

HTTPX_HINT = "the vllm adapter talks to its server over httpx, which is not installed: pip install 'medmim-eval[openai]'"


def is_local_target(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or Path(target).expanduser().is_dir()


def target_problem(target: str | None) -> str | None:
    """A missing local folder or an architecture vLLM cannot load, as one line, or None."""
    if not target:
        return "name the model: vllm:PATH_OR_HUB_ID"
    if is_local_target(target) and not Path(target).expanduser().is_dir():
        return f"no model folder {target}"
    return unservable_reason(target)


def check_vllm(target: str | None, options: dict[str, str]) -> str | None:
    """Cheap prerequisite check for ``vllm:`` (imports nothing heavy; the launcher probe is cached)."""
    if not httpx_installed():
        return HTTPX_HINT
    declared = options_problem("vllm", VLLM_OPTIONS, options)  # a typo before the launcher probe
    if declared:
        return declared
    if options.get("base_url"):
        from medmim_eval.adapters.openai.plugin import base_urls

        if not target:
            return "name the served model: vllm:SERVED_NAME,base_url=URL"
        try:
            base_urls(options)
        except MedmimError as exc:
            return str(exc)
        ignored = launch_only(options)
        if ignored:
            return (f"vllm:{target},base_url=...: {', '.join(ignored)} only shape(s) a server medmim-eval launches; "
                    f"the running server keeps its own settings. Drop {'it' if len(ignored) == 1 else 'them'}, or "
                    f"start the server with them (medmim-eval serve -o KEY=VALUE)")
        return None
    return target_problem(target) or vllm_missing(options)


def remote_vllm(target: str | None, options: dict[str, str]) -> str | None:
    """Hosts off this machine that prompts go to: only an attached ``base_url`` can be remote."""
    if not options.get("base_url"):
        return None
    from medmim_eval.adapters.openai.plugin import remote_openai

    return remote_openai(target, options)


def model_identity(target: str, settings: EngineSettings | None) -> dict[str, Any]:
    """What identifies the model beyond its name: local weights digest, answer-relevant flags."""
    identity: dict[str, Any] = {}
    local = Path(target).expanduser()
    if local.is_dir():
        identity["weights_sha256"] = weights_digest(local)
    if settings is not None:
        if settings.chat_template is not None:
            identity["chat_template_sha256"] = hashlib.sha256(settings.chat_template.read_bytes()).hexdigest()
        identity["engine"] = {"max_images": settings.max_images, "max_model_len": settings.max_model_len,
                              "trust_remote_code": settings.trust_remote_code, "hf_overrides": settings.hf_overrides,
                              "mm_processor_kwargs": settings.mm_processor_kwargs, "dtype": settings.dtype}
    return identity


def default_served_name(target: str, options: dict[str, str]) -> str:
    """``served_name=``, else ``label=``, else the folder name or hub id."""
    if options.get("served_name"):
        return options["served_name"]
    if options.get("label"):
        return options["label"]
    return Path(target).name if is_local_target(target) else target


class VLLMAdapter:
    """A vLLM server (launched or attached) behind an ``OpenAIChatAdapter`` (``ModelAdapter``)."""

    def __init__(self, model_id: str, chat: Any, identity: dict[str, Any], server: ServerProcess | None) -> None:
        self.model_id = model_id
        self.chat = chat
        self.capabilities = chat.capabilities
        self.identity = identity
        self.server = server

    def fingerprint(self) -> dict[str, Any]:
        images = {"max_side": self.chat.options.max_side, "jpeg_quality": self.chat.options.jpeg_quality}
        return {"adapter": "vllm", **self.identity, "images": images}

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        return await self.chat.generate(requests)

    async def aclose(self) -> None:
        try:
            await self.chat.aclose()
        finally:
            if self.server is not None:
                self.server.stop()
                self.server = None


def _chat(model_id: str, served: str, urls: list[str], options: dict[str, str]) -> Any:
    from medmim_eval.adapters.openai.chat import OpenAIChatAdapter

    return OpenAIChatAdapter(model_id, served, urls, api_key=None, options=options)


def _attach(model_id: str, target: str, options: dict[str, str]) -> VLLMAdapter:
    from medmim_eval.adapters.openai.plugin import base_urls

    urls = base_urls(options)
    info = describe_server(urls[0])
    served = options.get("served_name")
    if not served:
        by_root = [m.get("id") for m in info.models if str(m.get("root")) in (target, str(Path(target).expanduser()))]
        served = target if target in info.served_names() else (str(by_root[0]) if by_root else target)
    if served not in info.served_names():
        names = ", ".join(info.served_names()) or "no model"
        raise MedmimError(f"the server at {urls[0]} serves {names}, not '{target}'; use vllm:<served name>,base_url=...")
    chat = _chat(model_id, served, urls, options)
    chat.attach()  # every endpoint must serve it
    root = next((str(m.get("root")) for m in info.models if m.get("id") == served), served)
    identity = {"model": served, "checkpoint": root, "server_version": info.version, **model_identity(root, None)}
    return VLLMAdapter(model_id, chat, identity, server=None)


def _launch(model_id: str, target: str, options: dict[str, str]) -> VLLMAdapter:
    settings = engine_settings(target, options)
    model = str(Path(target).expanduser().resolve()) if is_local_target(target) else target
    served = default_served_name(target, options)
    try:
        port = int(options.get("port") or 0)
        timeout = float(options.get("startup_timeout") or DEFAULT_STARTUP_TIMEOUT_S)
    except ValueError:
        raise MedmimError("options port= and startup_timeout= must be numbers") from None
    spec = LaunchSpec(model=model, served_name=served, python=launcher_python(options),
                      host=options.get("host") or "127.0.0.1", port=port,
                      args=server_args(settings) + extra_args(options), env=launch_env(options),
                      log_path=Path(options["log"]).expanduser() if options.get("log") else None,
                      startup_timeout=timeout)
    server = launch(spec, announce=lambda s: print(
        f"vllm: starting a server for {model} (served as '{served}', pid {s.pid}); log: {s.log_path}",
        file=sys.stderr, flush=True))
    try:
        info = describe_server(server.base_url)
        chat_options = {**options, "max_images": str(settings.max_images)}
        chat = _chat(model_id, served, [server.base_url], chat_options)
        print(f"vllm: server ready at {server.base_url} (vLLM {info.version})", file=sys.stderr, flush=True)
        identity = {"model": served, "checkpoint": model, "server_version": info.version,
                    **model_identity(model, settings)}
        return VLLMAdapter(model_id, chat, identity, server=server)
    except BaseException:
        server.stop()
        raise


def make_vllm(target: str | None, options: dict[str, str], context: AdapterContext) -> VLLMAdapter:
    """The factory registered for ``vllm:``. Raises MedmimError with the fix when it cannot run."""
    reason = check_vllm(target, options)
    if reason:
        raise (MissingBackendError if reason == HTTPX_HINT else MedmimError)(reason)
    assert target is not None  # check_vllm names a missing target
    model_id = options.get("label") or f"vllm:{target}"
    return _attach(model_id, target, options) if options.get("base_url") else _launch(model_id, target, options)

"""Registers the ``openai`` adapter (any OpenAI-compatible chat-completions server) and GPT-4o.

This module is imported by every ``medmim-eval`` command, so it stays light: it never imports
``openai``. It owns how a spec's options are read, so that the prerequisite check, the
data-governance guard and the adapter (:mod:`medmim_eval.adapters.openai.chat`) agree.

Spec: ``openai:MODEL[,key=value...]``. Options (all optional):

=================  ==========================================================================
``base_url``       endpoint(s), ``|``-separated replicas of one model (default: the OpenAI API).
                   Requests go to the replica with the fewest outstanding requests (ties:
                   round-robin), skipping replicas held back by ``Retry-After``.
``api_key_env``    the environment variable holding the key (default ``OPENAI_API_KEY``); needed
                   for api.openai.com, optional elsewhere (without one a placeholder is sent,
                   as vLLM without ``--api-key`` expects). The key is never written anywhere.
``concurrency``    requests in flight per endpoint (default 64 for a local server, 16 otherwise).
``max_retries``    retries after the first attempt (default 5) on 429, 408/409, 5xx, timeouts,
                   dropped connections and 2xx bodies that are not JSON (cut off mid-answer, an
                   HTML page); other 4xx, JSON without ``choices`` and ``insufficient_quota``
                   fail at once. A failed sample is recorded as an error; a rerun retries it.
                   An answer records the requests it took in ``sent.attempts``.
``timeout``        seconds for one attempt, start to end (default 120).
``backoff``        first retry delay in seconds, doubled per retry, 50-100 % jitter (default 1).
``max_wait``       longest single wait (default 120); a ``Retry-After`` above it fails the sample.
``max_side``       longest image side sent; larger images are shrunk to JPEG (default 2048,
                   ``0``/``none``: never resize). See :mod:`medmim_eval.adapters.openai.image_payload`.
``jpeg_quality``   quality of re-encoded images (default 90).
``detail``         OpenAI image detail ``low``/``high``/``auto`` (default: not sent).
``max_images``     the most images per prompt (default 16); a sample with more is an error,
                   never silently truncated.
=================  ==========================================================================

Backoff: a 429 or 503 halves the endpoint's window of requests in flight (once per hold-back;
each success adds ``1/window`` back, up to ``concurrency``) and holds the endpoint back for the
``Retry-After`` (seconds, ``retry-after-ms`` or an HTTP date) or, without one, the backoff delay;
any response with ``Retry-After`` holds its endpoint back likewise. Other retryable failures wait
the backoff delay in the failing request only. Requests go out over ``httpx`` with no retries of
its own (the ``openai`` SDK, which brings ``httpx``, is not imported); ``OPENAI_ORG_ID`` and
``OPENAI_PROJECT_ID``, where set, are sent as the SDK sends them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from medmim_eval.adapter_options import AdapterOption, known_names, options_problem
from medmim_eval.adapters.openai.http_client import httpx_installed
from medmim_eval.adapters.openai.image_payload import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_SIDE
from medmim_eval.endpoints import (DEFAULT_KEY_ENV, OPENAI_BASE_URL, OPENAI_HOST, base_urls,  # noqa: F401
                                   host_of, is_local_url)
from medmim_eval.errors import MedmimError
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry, ModelEntry

INSTALL_HINT = "the openai adapter's HTTP client (httpx) is not installed: pip install 'medmim-eval[openai]'"


def api_key_env(options: dict[str, str]) -> str:
    """The environment variable holding the API key: ``api_key_env=NAME``, else OPENAI_API_KEY."""
    return options.get("api_key_env") or DEFAULT_KEY_ENV


@dataclass(frozen=True)
class ChatOptions:
    """The numeric and image options of the spec, parsed and checked (see the module docstring)."""

    concurrency: int
    max_retries: int = 5
    timeout: float = 120.0
    backoff: float = 1.0
    max_wait: float = 120.0
    max_side: int | None = DEFAULT_MAX_SIDE
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    detail: str | None = None
    max_images: int = 16

    @classmethod
    def parse(cls, options: Mapping[str, str], local: bool) -> "ChatOptions":
        """Raises MedmimError naming the option for a value of the wrong type or range."""

        def number(name: str, kind: type, default: Any, low: float, high: float = float("inf")) -> Any:
            raw = options.get(name)
            if raw in (None, ""):
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise MedmimError(f"openai option {name}={raw!r} is not a {kind.__name__}") from None
            if not low <= value <= high:
                raise MedmimError(f"openai option {name}={raw} is out of range ({low:g} to {high:g})")
            return value

        no_resize = str(options.get("max_side", "")).lower() in ("0", "none", "off")
        detail = options.get("detail") or None
        if detail not in (None, "low", "high", "auto"):
            raise MedmimError(f"openai option detail={detail!r}: use low, high or auto")
        return cls(
            concurrency=number("concurrency", int, 64 if local else 16, 1, 4096),
            max_retries=number("max_retries", int, 5, 0, 100),
            timeout=number("timeout", float, 120.0, 0.01),
            backoff=number("backoff", float, 1.0, 0.0),
            max_wait=number("max_wait", float, 120.0, 0.0),
            max_side=None if no_resize else number("max_side", int, DEFAULT_MAX_SIDE, 16),
            jpeg_quality=number("jpeg_quality", int, DEFAULT_JPEG_QUALITY, 1, 95),
            detail=detail,
            max_images=number("max_images", int, 16, 1),
        )


OPTIONS = (
    AdapterOption("base_url", metavar="URL[|URL...]", default="the OpenAI API",
                  help="endpoint(s); |-separated replicas of one model, least-loaded first"),
    AdapterOption("api_key_env", metavar="NAME", default=DEFAULT_KEY_ENV,
                  help="the environment variable holding the key (never the key itself)"),
    AdapterOption("concurrency", metavar="INT", default="64 local, 16 remote", help="requests in flight per endpoint"),
    AdapterOption("max_retries", metavar="INT", default="5", help="retries after the first attempt"),
    AdapterOption("timeout", metavar="SECONDS", default="120", help="one attempt, start to end"),
    AdapterOption("backoff", metavar="SECONDS", default="1", help="first retry delay, doubled per retry"),
    AdapterOption("max_wait", metavar="SECONDS", default="120", help="longest single wait (Retry-After above it fails)"),
    AdapterOption("max_side", metavar="PIXELS|none", default=str(DEFAULT_MAX_SIDE),
                  help="longest image side sent; larger images are shrunk to JPEG"),
    AdapterOption("jpeg_quality", metavar="1-95", default=str(DEFAULT_JPEG_QUALITY), help="quality of re-encoded images"),
    AdapterOption("detail", "choice", choices=("low", "high", "auto"), default="not sent", help="OpenAI image detail"),
    AdapterOption("max_images", metavar="INT", default="16", help="images per prompt; more is an error, never truncated"),
)
KNOWN_OPTIONS = frozenset(known_names(OPTIONS))


def check_openai(target: str | None, options: dict[str, str]) -> str | None:
    """Why ``openai:TARGET`` cannot run here (one line naming the fix), or None. Imports nothing."""
    if "api_key" in options:
        return "never put the API key in the model spec; export it and pass api_key_env=NAME"
    if not httpx_installed():
        return INSTALL_HINT
    try:
        urls = base_urls(options)
    except MedmimError as exc:
        return str(exc)
    declared = options_problem("openai", OPTIONS, options)
    if declared:
        return declared
    remote = [u for u in urls if not is_local_url(u)]
    try:
        ChatOptions.parse(options, local=not remote)
    except MedmimError as exc:
        return str(exc)
    name = api_key_env(options)
    if any(host_of(u) == OPENAI_HOST for u in urls) and not os.environ.get(name):
        return f"set {name} to the API key for {OPENAI_HOST} (or name another variable with api_key_env=NAME)"
    return None


def remote_openai(target: str | None, options: dict[str, str]) -> str | None:
    """The hosts off this machine that prompts and images go to (comma-joined), or None."""
    try:
        urls = base_urls(options)
    except MedmimError:
        return options.get("base_url") or OPENAI_BASE_URL  # unparseable: treat as remote, never as local
    hosts = sorted({host_of(u) for u in urls if not is_local_url(u)})
    return ", ".join(hosts) or None


@hookimpl
def register_adapters(register: Callable[[object], None]) -> None:
    register(
        AdapterEntry(
            name="openai",
            description="any OpenAI-compatible chat-completions server (OpenAI API, vLLM, transformers serve)",
            factory="medmim_eval.adapters.openai.chat:make_openai",
            extras=("openai",),
            target="required",
            example="openai:gpt-4o  or  openai:MODEL,base_url=http://127.0.0.1:8000/v1|http://127.0.0.1:8001/v1",
            check=check_openai,
            remote=remote_openai,
            options=OPTIONS,
        )
    )
    register(
        ModelEntry(
            name="gpt-4o",
            description="GPT-4o through the OpenAI API (paper model)",
            routes=("openai:gpt-4o",),
            paper=True,
        )
    )

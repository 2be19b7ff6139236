"""Chat-completions requests over ``httpx``, without the ``openai`` SDK on the request path.

The adapter sends a body it has built itself and reads back plain JSON, so the SDK has nothing to
add there but cost: importing it takes ~0.3 s of CPU (its generated types), and each request went
through its option building, its pure-Python JSON encoder and its auth wrappers (~0.4 ms of CPU per
request on a 2-core machine, measured against a bare ``httpx`` client on the same vLLM server).
This module posts with the ``httpx`` client the SDK itself is built on (``httpx2`` where ``openai``
>= 3 installed it, else ``httpx``) and reports failures as a few exception types of its own, which
:func:`medmim_eval.adapters.openai.chat.classify` maps onto retries and errors.

The key goes in the ``Authorization`` header only; it is never part of a message raised here.
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Mapping

USER_AGENT = "medmim-eval"
# What the openai SDK reads from the environment and sends with every request, sent here the same way.
ACCOUNT_HEADERS = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}


def account_headers() -> dict[str, str]:
    """``OpenAI-Organization`` and ``OpenAI-Project`` from ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID``,
    where set (a key shared by several organizations or projects bills the one named)."""
    return {header: os.environ[env].strip() for env, header in ACCOUNT_HEADERS.items() if os.environ.get(env, "").strip()}


def httpx_installed() -> bool:
    """Whether ``httpx2`` or ``httpx`` can be imported, without importing either (a prerequisite check).

    Only the client is needed, not the ``openai`` SDK: ``pip install 'medmim-eval[openai]'`` brings it,
    as does ``vllm`` (through its own ``openai`` dependency)."""
    return any(importlib.util.find_spec(name) is not None for name in ("httpx2", "httpx"))


def httpx_module() -> Any:
    """``httpx2`` (what ``openai`` >= 3 installs) or ``httpx`` (what older ``openai`` installs)."""
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx


class NotJSON(ValueError):
    """A 2xx answer whose body is not JSON: an HTML or text page, or JSON cut off mid-way."""


class StatusError(Exception):
    """An HTTP error status. ``message`` and ``code`` come from an OpenAI-style ``{"error": {...}}``
    body when there is one; ``message`` is otherwise the start of the body's text."""

    def __init__(self, status: int, headers: Mapping[str, str], message: str, code: str | None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.headers, self.message, self.code = status, headers, message, code


def _error_fields(content: bytes) -> tuple[str, str | None]:
    """(message, code) of an error body: ``{"error": {"message", "code"}}``, ``{"message"}`` or text."""
    text = content.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or "no message", None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or text
        code = error.get("code") if isinstance(error.get("code"), str) else None
        return str(message)[:300], code
    return str(error)[:300], None


class ChatHTTPClient:
    """One connection pool to one endpoint, posting JSON bodies and returning decoded JSON.

    Args:
        url: the ``.../v1`` base URL.
        api_key: sent as ``Authorization: Bearer``.
        max_connections, max_keepalive: the pool's limits.
        timeout: seconds for connecting, writing and reading.
        local: a server on this machine: never reached through a proxy from the environment.
        headers: more headers for every request (the OpenAI organization and project).
    """

    def __init__(self, url: str, api_key: str, *, max_connections: int, max_keepalive: int, timeout: float,
                 local: bool, headers: Mapping[str, str] | None = None) -> None:
        httpx = httpx_module()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
        # Plain http needs no certificates: loading the CA store costs ~0.1 s of CPU per client.
        tls: dict[str, Any] = {} if url.lower().startswith("https://") else {"verify": False}
        self._client = httpx.AsyncClient(base_url=url.rstrip("/") + "/", limits=limits, timeout=timeout,
                                         trust_env=not local, **tls,
                                         headers={"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT,
                                                  "Content-Type": "application/json", "Accept": "application/json",
                                                  **(headers or {})})

    async def post_json(self, route: str, body: bytes) -> Any:
        """POST ``body`` (JSON text) to ``route`` (relative to the base URL); the decoded answer.

        Raises:
            StatusError: an HTTP status of 400 or more.
            NotJSON: a 2xx body that does not decode as JSON.
            httpx.TimeoutException, httpx.TransportError: no (complete) answer.
        """
        response = await self._client.post(route.lstrip("/"), content=body)
        content = response.content
        if response.status_code >= 400:
            message, code = _error_fields(content)
            raise StatusError(response.status_code, response.headers, message, code)
        try:
            return json.loads(content)
        except ValueError:
            if "json" in response.headers.get("content-type", "").lower():
                raise NotJSON("the answer is not valid JSON (cut off?)") from None
            raise NotJSON("the answer is not JSON (an HTML or text page? wrong content type?)") from None

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = ["ChatHTTPClient", "NotJSON", "StatusError", "httpx_module", "account_headers", "USER_AGENT"]

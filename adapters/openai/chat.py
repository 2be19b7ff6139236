"""The ``openai`` adapter: chat completions on any OpenAI-compatible server, asynchronously.

Options and the retry policy are documented in :mod:`medmim_eval.adapters.openai.plugin`. In
short: text and image parts go in prompt order, images as data URLs (original bytes when they
need no change, see :mod:`medmim_eval.adapters.openai.image_payload`); requests are spread over
replicas (least outstanding requests, ties round-robin) with a window per endpoint that halves
on overload; 429/5xx/timeouts/dropped connections and answers that are not JSON (cut off by a
proxy or a restarting server) are retried with backoff honouring ``Retry-After``. Requests go
through :mod:`medmim_eval.adapters.openai.http_client` (``httpx``, the client the ``openai`` SDK is
built on; the SDK itself is not imported). A successful answer records how many requests it took
(``PromptRecord.attempts``).
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult
from medmim_eval.adapters.openai.http_client import ChatHTTPClient, NotJSON, StatusError, account_headers, httpx_module
from medmim_eval.adapters.openai.image_payload import ImagePayloadCache
from medmim_eval.adapters.openai.plugin import (INSTALL_HINT, OPENAI_HOST, ChatOptions, api_key_env, base_urls,
                                                check_openai, host_of, is_local_url)
from medmim_eval.errors import MedmimError, MissingBackendError, TooManyImagesError
from medmim_eval.schema import PromptRecord, Sample, TextPart, content_hash

PLACEHOLDER_KEY = "no-key-given"  # sent when no key is given: key-less servers ignore it
# OpenAI list prices, USD per 1M tokens (input, output), as of PRICE_TABLE_DATE. An estimate: cached
# input and batch discounts are ignored. Longest matching prefix of the model name wins.
PRICE_TABLE_DATE = "2025-01"
PRICES_USD_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o": (2.50, 10.00),
}
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_*\-]{4,}")


class ChatRequestError(Exception):
    """A request that failed for good: after ``max_retries`` retries, or at once where retrying cannot help."""


class RateLimited(ChatRequestError):
    """HTTP 429."""


class ServerError(ChatRequestError):
    """HTTP 5xx or 409."""


class RequestTimeout(ChatRequestError):
    """No complete answer within ``timeout`` (or HTTP 408)."""


class ConnectionFailed(ChatRequestError):
    """Connection refused, reset or dropped before an answer."""


class RequestRejected(ChatRequestError):
    """HTTP 4xx that retrying cannot fix (400, 401, 403, 404, 422...)."""


class MalformedResponse(ChatRequestError):
    """A 2xx answer that is no chat completion: not JSON at all (retried), or JSON without
    ``choices[0].message`` (not retried: the server will say the same again)."""


SHARD_SLOTS = 16  # request slots per HTTP connection pool: httpcore scans its whole pool on every request


@dataclass
class Endpoint:
    """One server: its clients (one connection pool per ``SHARD_SLOTS`` slots, used in turn), its
    configured limit, adaptive window, requests in flight and hold-back time."""

    url: str
    clients: list[Any]
    limit: int
    window: float = 0.0
    in_flight: int = 0
    held_until: float = 0.0
    sent: int = 0

    def __post_init__(self) -> None:
        self.window = float(self.limit)

    def next_client(self) -> Any:
        return self.clients[self.sent % len(self.clients)]


class EndpointPool:
    """Client-side balancing over replicas: least outstanding requests, ties round-robin."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self._next = 0
        self._changed: asyncio.Event | None = None

    async def acquire(self) -> Endpoint:
        """A slot on the least-loaded endpoint that is not held back; waits while none has one."""
        if self._changed is None:
            self._changed = asyncio.Event()
        count = len(self.endpoints)
        while True:
            now = time.monotonic()
            ready = [i for i, e in enumerate(self.endpoints) if e.held_until <= now and e.in_flight < int(e.window)]
            if ready:
                best = min(ready, key=lambda i: (self.endpoints[i].in_flight, (i - self._next) % count))
                self._next = (best + 1) % count
                endpoint = self.endpoints[best]
                endpoint.in_flight += 1
                endpoint.sent += 1
                return endpoint
            holds = [e.held_until - now for e in self.endpoints if e.held_until > now]
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(holds) if holds else None)
            except asyncio.TimeoutError:
                pass

    def release(self, endpoint: Endpoint, *, ok: bool, overload: bool = False, hold: float = 0.0) -> None:
        """Free the slot; adapt the window (success: +1/window; overload: halve once per hold-back)."""
        endpoint.in_flight -= 1
        now = time.monotonic()
        if ok:
            endpoint.window = min(float(endpoint.limit), endpoint.window + 1.0 / endpoint.window)
        elif overload and endpoint.held_until <= now:
            endpoint.window = max(1.0, endpoint.window / 2)
        if hold > 0:
            endpoint.held_until = max(endpoint.held_until, now + hold)
        if self._changed is not None:
            self._changed.set()


@dataclass(frozen=True)
class _Failure:
    kind: type[ChatRequestError]
    detail: str
    retryable: bool
    overload: bool = False
    retry_after: float | None = None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), or None."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def classify(exc: BaseException) -> _Failure:
    """What a failed attempt means: the error to report, and whether and how to retry."""
    httpx = httpx_module()

    if isinstance(exc, ChatRequestError):
        return _Failure(type(exc), str(exc), False)
    if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
        return _Failure(RequestTimeout, "no answer within the timeout", True)
    if isinstance(exc, httpx.TransportError):  # refused, reset, closed without an answer
        return _Failure(ConnectionFailed, f"connection failed ({type(exc).__name__}: {exc})", True)
    if isinstance(exc, StatusError):
        status = exc.status
        retry_after = retry_after_seconds(exc.headers)
        if status == 429:
            return _Failure(RateLimited, str(exc), exc.code != "insufficient_quota", overload=True, retry_after=retry_after)
        if status >= 500 or status in (408, 409):
            kind = RequestTimeout if status == 408 else ServerError
            return _Failure(kind, str(exc), True, overload=status == 503, retry_after=retry_after)
        return _Failure(RequestRejected, str(exc), False)
    if isinstance(exc, NotJSON):  # a proxy page, or a body cut off by a proxy or a restarting server
        return _Failure(MalformedResponse, str(exc), True)
    return _Failure(ChatRequestError, f"{type(exc).__name__}: {exc}", False)


def price_for(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for ``model`` by longest prefix, or None when unknown."""
    matches = [name for name in PRICES_USD_PER_1M if model.startswith(name)]
    return PRICES_USD_PER_1M[max(matches, key=len)] if matches else None


def served_model_info(urls: Sequence[str], model: str, api_key: str, timeout: float = 5.0) -> dict[str, str]:
    """Ask each endpoint other than the OpenAI API which models it serves (``GET {url}/models``).

    Returns ``{"server_model": id, "server_root": root}`` (root: vLLM's checkpoint) for the first
    endpoint that lists ``model``; ``{}`` when none could tell. An endpoint without the route is
    accepted silently.

    Raises:
        MedmimError: an endpoint that does not answer at all, or answers without ``model``.
    """
    info: dict[str, str] = {}
    for url in urls:
        if host_of(url) == OPENAI_HOST:
            continue
        handlers = [urllib.request.ProxyHandler({})] if is_local_url(url) else []
        request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {api_key}"})
        try:
            with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as response:
                listing = json.load(response)
        except urllib.error.HTTPError:
            continue  # no /models route: nothing to learn, not a reason to stop
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MedmimError(f"no OpenAI-compatible server answers at {url} ({reason}); start it or fix base_url=") from None
        served = {m.get("id"): m for m in listing.get("data", []) if isinstance(m, dict)} if isinstance(listing, dict) else {}
        if model not in served:
            names = ", ".join(sorted(str(n) for n in served)) or "no model"
            raise MedmimError(f"the server at {url} serves {names}, not '{model}'; use openai:<served name>")
        if not info:
            info["server_model"] = str(model)
            root = served[model].get("root")
            if root and root != model:
                info["server_root"] = str(root)
    return info


class OpenAIChatAdapter:
    """A model behind one or more OpenAI-compatible chat-completions endpoints (``ModelAdapter``).

    The constructor is public and stable: the vLLM adapter builds one after launching its server.

    Args:
        model_id: the row name in tables.
        model: the model name sent with each request (``gpt-4o``, a vLLM served model name).
        base_urls: ``http(s)://host:port/v1`` endpoints serving ``model``; requests are spread
            across them (least outstanding requests, ties round-robin).
        api_key: the key; required for api.openai.com, else None sends a placeholder (a server
            without authentication, such as vLLM without ``--api-key``). Never written anywhere.
        options: the spec's ``key=value`` strings (module docstring); unknown keys are ignored here
            (:func:`make_openai` rejects them), so a caller may pass its own options through.

    Raises:
        MissingBackendError: neither httpx2 nor httpx is installed (``openai`` brings one).
        MedmimError: an invalid option value, or no key for api.openai.com.
    """

    def __init__(self, model_id: str, model: str, base_urls: list[str], *, api_key: str | None,
                 options: dict[str, str]) -> None:
        try:
            httpx_module()
        except ImportError:
            raise MissingBackendError(INSTALL_HINT) from None
        self.model_id, self.model = model_id, model
        self.base_urls = [u.rstrip("/") for u in base_urls]
        if not self.base_urls:
            raise MedmimError(f"model '{model_id}': no base_url given")
        local = all(is_local_url(u) for u in self.base_urls)
        if not api_key and any(host_of(u) == OPENAI_HOST for u in self.base_urls):
            raise MedmimError(f"model '{model_id}': no API key for {OPENAI_HOST}; set OPENAI_API_KEY")
        self._api_key = api_key or PLACEHOLDER_KEY
        self.options = ChatOptions.parse(options, local)
        self.capabilities = Capabilities(max_images=self.options.max_images, interleaved=True, batch_size=1,
                                         max_concurrency=self.options.concurrency * len(self.base_urls))
        self.server_info: dict[str, str] = {}
        shards = -(-self.options.concurrency // SHARD_SLOTS)
        self.pool = EndpointPool([Endpoint(u, [self._client(u) for _ in range(shards)], self.options.concurrency)
                                  for u in self.base_urls])
        self.images = ImagePayloadCache(self.options.max_side, self.options.jpeg_quality)
        self.usage = {"prompt": 0, "completion": 0}
        self._cost: float | None = None

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"OpenAIChatAdapter({self.model_id!r}, model={self.model!r}, base_urls={self.base_urls!r})"

    def _client(self, url: str) -> ChatHTTPClient:
        # keep-alive connections for every slot; a local server is never reached through a proxy
        return ChatHTTPClient(url, self._api_key, max_connections=self.options.concurrency + 8,
                              max_keepalive=min(self.options.concurrency, SHARD_SLOTS) + 8,
                              timeout=self.options.timeout, local=is_local_url(url), headers=account_headers())

    def attach(self, timeout: float = 5.0) -> None:
        """Record what the server says it serves (:func:`served_model_info`); see its errors."""
        self.server_info = served_model_info(self.base_urls, self.model, self._api_key, timeout)

    def fingerprint(self) -> dict[str, Any]:
        """Model, endpoints, image policy and the served model; never the key, never the cost."""
        images: dict[str, Any] = {"max_side": self.options.max_side, "jpeg_quality": self.options.jpeg_quality}
        if self.options.detail:
            images["detail"] = self.options.detail
        return {"adapter": "openai", "model": self.model, "base_urls": list(self.base_urls), "images": images,
                **self.server_info}

    def cost_usd(self) -> float | None:
        """Estimated USD of this adapter's answered requests so far (``PRICES_USD_PER_1M`` as of
        ``PRICE_TABLE_DATE``), or None when none went to a priced model on api.openai.com. Cache
        hits cost nothing; failed attempts report no usage and are not counted."""
        return self._cost

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        """One result per request; a failed request is returned as its exception, never raised."""
        return list(await asyncio.gather(*(self._answer(r) for r in requests)))

    async def aclose(self) -> None:
        self.images.close()
        for endpoint in self.pool.endpoints:
            for client in endpoint.clients:
                await client.aclose()

    def redact(self, text: str) -> str:
        """``text`` without the key or anything shaped like an OpenAI key."""
        if len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return _KEY_LIKE.sub("sk-***", text)

    async def _answer(self, request: GenerationRequest) -> GenerationResult | BaseException:
        try:
            return await self._complete(request)
        except Exception as exc:  # recorded per sample by the runner
            message = str(exc)
            clean = self.redact(message)
            if clean == message:
                return exc
            return (type(exc) if isinstance(exc, ChatRequestError) else ChatRequestError)(clean)

    async def _content(self, sample: Sample) -> tuple[list[str], PromptRecord]:
        """The user message's parts (text and images in prompt order) as JSON text, and the record of
        what it holds.

        An image part is written around its data URL rather than through ``json.dumps``: a data URL
        (``data:<mime>;base64,...``, built by :mod:`.image_payload`) holds nothing JSON escapes, and
        scanning ~100 kB of base64 per image for escapes cost ~1 ms of CPU per request."""
        images = sample.prompt.images
        if len(images) > self.options.max_images:
            raise TooManyImagesError(len(images), self.options.max_images, self.model_id)
        encoded = iter(await asyncio.gather(*(self.images.get(p.path) for p in images)))
        detail = f', "detail": {json.dumps(self.options.detail)}' if self.options.detail else ""
        content: list[str] = []
        rendered: list[Any] = []
        sizes, notes = [], []
        for part in sample.prompt.parts:
            if isinstance(part, TextPart):
                if part.text:
                    content.append(json.dumps({"type": "text", "text": part.text}))
                    rendered.append(part.text)
                continue
            image = next(encoded)
            content.append(f'{{"type": "image_url", "image_url": {{"url": "{image.data_url}"{detail}}}}}')
            rendered.append({"image": image.sha256, "mime": image.mime})
            sizes.append(image.size)
            if image.note:
                notes.append(f"image {len(sizes)}: {image.note}")
        record = PromptRecord(n_images=len(images), image_order=[p.index for p in images], image_sizes=sizes,
                              rendered_prompt_sha256=content_hash(json.dumps(rendered)), notes=notes)
        return content, record

    async def _complete(self, request: GenerationRequest) -> GenerationResult:
        content, record = await self._content(request.sample)
        settings = request.settings
        head = json.dumps({"model": self.model, "max_tokens": settings.max_new_tokens,
                           "temperature": settings.temperature, "seed": settings.seed})
        # ASCII throughout: json.dumps escapes any other character, and a data URL has none.
        body = f'{head[:-1]}, "messages": [{{"role": "user", "content": [{", ".join(content)}]}}]}}'.encode("ascii")
        attempt = 0
        while True:
            attempt += 1
            endpoint = await self.pool.acquire()
            try:
                answer = await asyncio.wait_for(endpoint.next_client().post_json("chat/completions", body),
                                                self.options.timeout)
                result = self._result(answer, record.model_copy(update={"attempts": attempt}), endpoint)
            except Exception as exc:
                failure = classify(exc)
            except BaseException:
                self.pool.release(endpoint, ok=False)
                raise
            else:
                self.pool.release(endpoint, ok=True)
                return result
            where = f"from {endpoint.url} after {attempt} attempt(s)"
            if failure.retry_after is not None and failure.retry_after > self.options.max_wait:
                self.pool.release(endpoint, ok=False)
                raise failure.kind(f"{failure.detail} {where}; the server asked to wait {failure.retry_after:.0f} s, "
                                   f"more than max_wait={self.options.max_wait:g}; rerun later")
            delay = failure.retry_after
            if delay is None:
                delay = min(self.options.max_wait, self.options.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            hold_back = failure.overload or failure.retry_after is not None
            self.pool.release(endpoint, ok=False, overload=failure.overload, hold=delay if hold_back else 0.0)
            if not failure.retryable or attempt > self.options.max_retries:
                raise failure.kind(f"{failure.detail} {where}")
            if not hold_back:  # a held-back endpoint makes the next acquire wait instead
                await asyncio.sleep(delay)

    def _result(self, body: Any, record: PromptRecord, endpoint: Endpoint) -> GenerationResult:
        """The answer in one decoded chat-completion body.

        Raises:
            MalformedResponse: JSON that is no chat completion.
        """
        if not isinstance(body, dict):
            raise MalformedResponse("the answer is JSON but not an object with choices[0].message")
        try:
            choice = body["choices"][0]
            message = choice["message"]
            text = message.get("content")
            text = text if text is not None else (message.get("refusal") or "")
        except (AttributeError, IndexError, KeyError, TypeError):
            raise MalformedResponse("the answer is not a chat completion with choices[0].message") from None
        if not isinstance(text, str):
            raise MalformedResponse("the answer's message content is not text")
        notes = list(record.notes)
        if choice.get("finish_reason") == "length":
            notes.append("output stopped at max_new_tokens")
        tokens = None
        usage = body.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            tokens = {"prompt": usage["prompt_tokens"], "completion": int(usage.get("completion_tokens") or 0)}
            self.usage["prompt"] += tokens["prompt"]
            self.usage["completion"] += tokens["completion"]
            price = price_for(str(body.get("model") or self.model)) or price_for(self.model)
            if price is not None and host_of(endpoint.url) == OPENAI_HOST:
                cost = (tokens["prompt"] * price[0] + tokens["completion"] * price[1]) / 1e6
                self._cost = (self._cost or 0.0) + cost
                notes.append(f"estimated cost ${cost:.6f} (OpenAI list prices of {PRICE_TABLE_DATE})")
        return GenerationResult(text=text, sent=record.model_copy(update={"notes": notes}), tokens=tokens)


def make_openai(target: str | None, options: dict[str, str], context: AdapterContext) -> OpenAIChatAdapter:
    """The factory registered for ``openai:MODEL``: checks options, reads the key, asks the server."""
    if not target:
        raise MedmimError("the openai adapter needs a model: openai:MODEL (e.g. openai:gpt-4o)")
    reason = check_openai(target, options)
    if reason:
        raise (MissingBackendError if reason == INSTALL_HINT else MedmimError)(reason)
    urls = base_urls(options)
    key = os.environ.get(api_key_env(options)) or None
    info = served_model_info(urls, target, key or PLACEHOLDER_KEY)
    adapter = OpenAIChatAdapter(options.get("label") or f"openai:{target}", target, urls, api_key=key, options=options)
    adapter.server_info = info
    return adapter


__all__ = ["OpenAIChatAdapter", "ChatOptions", "make_openai", "served_model_info", "retry_after_seconds",
           "ChatRequestError", "RateLimited", "ServerError", "RequestTimeout", "ConnectionFailed",
           "RequestRejected", "MalformedResponse", "PRICES_USD_PER_1M", "PRICE_TABLE_DATE"]

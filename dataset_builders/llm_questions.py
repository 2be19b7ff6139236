"""Optional LLM question writing through any OpenAI-compatible chat-completions endpoint.

Enabled by builder options (``--option KEY=VALUE``; several may share one ``--option`` joined by
commas, e.g. ``llm_base_url=http://127.0.0.1:8000/v1,llm_model=NAME``):

- ``llm=openai:MODEL[,base_url=URL][,api_key_env=NAME]`` or ``llm_base_url=URL`` + ``llm_model=NAME``
  (the OpenAI API when no URL is given); ``llm_api_key_env`` (default ``OPENAI_API_KEY``).
- ``llm_attempts`` (3): answers per item before it is rejected; ``llm_workers`` (4) concurrent
  requests; ``llm_timeout`` (60 s); ``llm_json_mode`` (1: ask for ``response_format=json_object``);
  ``llm_client`` (``auto``: the ``openai`` package when installed, else ``http``); ``llm_cache=DIR``.
- ``allow_credentialed_upload=1``: needed to send text of a credentialed dataset off this machine.

Contract: the prompts are the files in ``prompts/``; every answer is parsed as JSON and checked
against ``prompts/<kind>_question.schema.json`` plus the item's own checks (no ``<image>`` tokens
or option lines; an open answer names its gold fact). An invalid answer is sent back with the
errors, at most ``llm_attempts`` times in all; an item whose answers all fail is rejected and never
written. Valid answers are cached by the hash of the first prompt, so a rebuild sends nothing it
already has. Closed items keep their options and gold; only the question is reworded. The API
key is read from the environment and only ever sent in the request header.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from functools import lru_cache
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Callable

from medmim_eval.dataset_builders.question_templates import Draft
from medmim_eval.endpoints import OPENAI_BASE_URL, host_of, is_local_url
from medmim_eval.errors import MedmimError, MissingBackendError

PROMPTS = "medmim_eval.dataset_builders.prompts"
_EXTRA_OPTION = re.compile(r",(?=\s*[A-Za-z_][\w-]*=)")
_OPTION_LINE = re.compile(r"(^|\n)\s*[A-G]:\s")
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_SECRET = re.compile(r"sk-[A-Za-z0-9_\-*]{4,}")
RETRY_NOTE = "That reply is not valid: {errors}. Reply again with only a JSON object that satisfies the instructions."


class LLMEndpointError(MedmimError):
    """The endpoint failed (not an invalid answer): the build stops; cached answers survive."""


@dataclass(frozen=True)
class LLMSettings:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    attempts: int = 3
    workers: int = 4
    timeout_s: float = 60.0
    json_mode: bool = True
    client: str = "auto"
    cache_dir: Path | None = None


def expand_options(extra: dict[str, str]) -> dict[str, str]:
    """Split ``llm_*`` values holding more ``,key=value`` pairs into separate options."""
    out: dict[str, str] = {}
    for key, value in extra.items():
        if key.startswith("llm_") or key == "allow_credentialed_upload":
            first, *rest = _EXTRA_OPTION.split(value)
            out[key] = first.strip()
            for pair in rest:
                k, _, v = pair.partition("=")
                out[k.strip()] = v.strip()
        else:
            out[key] = value
    return out


def settings_from_options(extra: dict[str, str], *, credentialed: str | None = None) -> LLMSettings | None:
    """The LLM settings the options ask for, or None (templates only).

    Raises:
        MedmimError: for a key passed as an option, a non-OpenAI spec, no model, or a credentialed
            dataset (``credentialed`` names it) going to a non-local endpoint without permission.
    """
    opts = expand_options(extra)
    spec: dict[str, str] = {}
    if "llm" in opts:
        adapter, _, rest = opts["llm"].partition(":")
        if adapter.strip() != "openai" or not rest:
            raise MedmimError(f"--option llm={opts['llm']!r}: expected openai:MODEL[,base_url=URL] "
                              "(any OpenAI-compatible endpoint)")
        target, *pairs = _EXTRA_OPTION.split(rest)
        spec = {"model": target.strip(), **{k.strip(): v.strip() for k, _, v in (p.partition("=") for p in pairs)}}
    elif "llm_base_url" not in opts and "llm_model" not in opts:
        return None
    for key in list(opts) + list(spec):
        if "api_key" in key and not key.endswith("api_key_env"):
            raise MedmimError("never pass an API key as an option; export it (OPENAI_API_KEY) or name the "
                              "variable with llm_api_key_env=NAME")
    model = opts.get("llm_model") or spec.get("model")
    if not model:
        raise MedmimError("LLM question writing needs a model: --option llm_model=NAME (or llm=openai:NAME)")
    base_url = (opts.get("llm_base_url") or spec.get("base_url") or OPENAI_BASE_URL).rstrip("/")
    if not base_url.startswith(("http://", "https://")) or not host_of(base_url):
        raise MedmimError(f"llm base URL {base_url!r} is not an http(s) URL like http://127.0.0.1:8000/v1")
    if credentialed and not is_local_url(base_url) and opts.get("allow_credentialed_upload") not in ("1", "true", "yes"):
        raise MedmimError(f"refusing to send {credentialed} label text to {host_of(base_url)}: its data-use "
                          "agreement forbids sharing with third parties. Use a local endpoint, or pass "
                          "--option allow_credentialed_upload=1 if your agreement covers this service")
    settings = LLMSettings(
        base_url=base_url, model=model, api_key_env=opts.get("llm_api_key_env") or spec.get("api_key_env") or "OPENAI_API_KEY",
        attempts=_int(opts, "llm_attempts", 3, 1), workers=_int(opts, "llm_workers", 4, 1),
        timeout_s=float(_int(opts, "llm_timeout", 60, 1)), json_mode=opts.get("llm_json_mode", "1") not in ("0", "false", "no"),
        client=opts.get("llm_client", "auto"), cache_dir=Path(opts["llm_cache"]) if opts.get("llm_cache") else None)
    if settings.client not in ("auto", "openai", "http"):
        raise MedmimError(f"--option llm_client={settings.client!r}: expected auto, openai or http")
    if not is_local_url(base_url) and not os.environ.get(settings.api_key_env):
        raise MedmimError(f"set {settings.api_key_env} to the API key for {host_of(base_url)}")
    return settings


def _int(opts: dict[str, str], key: str, default: int, minimum: int) -> int:
    try:
        value = int(opts.get(key, default))
    except ValueError:
        raise MedmimError(f"--option {key}={opts[key]!r}: expected an integer") from None
    if value < minimum:
        raise MedmimError(f"--option {key}={value}: must be at least {minimum}")
    return value


# --------------------------------------------------------------------------- prompts and checks
@lru_cache(maxsize=None)
def prompt_file(name: str) -> str:
    """The text of one packaged prompt or schema file."""
    return resources.files(PROMPTS).joinpath(name).read_text(encoding="utf-8")


def prompt_digest() -> str:
    """sha256 over every prompt and schema file (recorded in the dataset card)."""
    names = sorted(p.name for p in resources.files(PROMPTS).iterdir() if p.name.endswith((".md", ".json")))
    return hashlib.sha256("".join(n + prompt_file(n) for n in names).encode("utf-8")).hexdigest()[:16]


def first_messages(draft: Draft) -> list[dict[str, str]]:
    """The system and user messages for one draft (the cache key hashes these)."""
    fields = {"n_images": str(len(draft.images)), "context": json.dumps(draft.context, ensure_ascii=False),
              "gold": json.dumps(draft.gold, ensure_ascii=False), "question": draft.question, "answer": draft.answer,
              "options": json.dumps(list(draft.options or ()), ensure_ascii=False)}
    user = Template(prompt_file(f"{draft.kind}_question.md")).substitute(fields)
    return [{"role": "system", "content": prompt_file("system.md").strip()}, {"role": "user", "content": user.strip()}]


def schema_errors(value: Any, schema: dict[str, Any], where: str = "answer") -> list[str]:
    """Errors of ``value`` against a JSON-schema subset: type, required, properties,
    additionalProperties (false), minLength, maxLength, enum, items, minItems, maxItems."""
    kinds = {"object": dict, "string": str, "array": list, "boolean": bool, "integer": int, "number": (int, float)}
    expected = schema.get("type")
    if expected and (not isinstance(value, kinds[expected]) or (expected in ("integer", "number") and isinstance(value, bool))):
        return [f"{where} must be of type {expected}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where} must be one of {schema['enum']}")
    if isinstance(value, str):
        if len(value.strip()) < schema.get("minLength", 0):
            errors.append(f"{where} is shorter than {schema['minLength']} characters")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where} is longer than {schema['maxLength']} characters")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{where} has {len(value)} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{where} lacks '{k}'" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where} has unexpected key '{k}'" for k in value if k not in props]
        for k, sub in props.items():
            if k in value:
                errors += schema_errors(value[k], sub, f"{where}.{k}")
    return errors


def check_reply(content: str, draft: Draft) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse and validate one reply: (the JSON object, []) or (None, errors)."""
    try:
        value = json.loads(_FENCE.sub("", content.strip()))
    except json.JSONDecodeError as exc:
        return None, [f"not JSON ({exc.msg} at character {exc.pos})"]
    errors = schema_errors(value, json.loads(prompt_file(f"{draft.kind}_question.schema.json")))
    if errors:
        return None, errors
    for name in ("question", "answer"):
        text = value.get(name, "")
        if "<image>" in text or _OPTION_LINE.search(text):
            errors.append(f"{name} must not contain <image> tokens or lettered option lines")
    if draft.kind == "open":
        answer = value["answer"].lower()
        for group in draft.required:
            if not any(phrase.lower() in answer for phrase in group):
                errors.append(f"the answer must state the gold fact ({' or '.join(repr(p) for p in group)})")
    return (None, errors) if errors else (value, [])


# --------------------------------------------------------------------------- cache and transport
class ResponseCache:
    """Valid answers as JSON files ``<dir>/<hh>/<hash>.json``; hits found in ``read_dirs`` are copied
    into ``write_dir`` so the output's own cache holds exactly the answers it used."""

    def __init__(self, write_dir: Path, read_dirs: tuple[Path, ...] = ()) -> None:
        self.write_dir, self.read_dirs = write_dir, read_dirs

    def _path(self, root: Path, key: str) -> Path:
        return root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        for root in (self.write_dir, *self.read_dirs):
            path = self._path(root, key)
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if root != self.write_dir:
                self.put(key, entry)
            return entry
        return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(self.write_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}-{id(entry)}")
        tmp.write_text(json.dumps(entry, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _scrub(text: str, key: str | None) -> str:
    text = text.replace(key, "***") if key else text
    return _SECRET.sub("sk-***", text)[:300]


def make_client(settings: LLMSettings) -> Callable[[list[dict[str, str]]], str]:
    """A function sending messages and returning the reply text; transport failures raise
    :class:`LLMEndpointError` (after bounded retries of 429/5xx/connection errors)."""
    key = os.environ.get(settings.api_key_env) or None
    body_extra: dict[str, Any] = {"temperature": 0}
    if settings.json_mode:
        body_extra["response_format"] = {"type": "json_object"}
    use_openai = settings.client == "openai" or (settings.client == "auto" and _has_openai())
    host = host_of(settings.base_url)
    if use_openai:
        try:
            import openai
        except ImportError:
            raise MissingBackendError("llm_client=openai needs the openai package: pip install 'medmim-eval[openai]' "
                                      "(or use llm_client=http)") from None

        client = openai.OpenAI(base_url=settings.base_url, api_key=key or "not-needed", max_retries=2,
                               timeout=settings.timeout_s)

        def send_openai(messages: list[dict[str, str]]) -> str:
            try:
                reply = client.chat.completions.create(model=settings.model, messages=messages, **body_extra)
            except openai.APIError as exc:
                raise LLMEndpointError(f"LLM endpoint {host} failed: {type(exc).__name__}: {_scrub(str(exc), key)}") from None
            try:
                return reply.choices[0].message.content or ""
            except (AttributeError, IndexError, TypeError):
                raise LLMEndpointError(f"LLM endpoint {host} failed: the reply is not a chat-completions response") from None
        return send_openai

    # A proxy from the environment must not see requests meant for this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if is_local_url(settings.base_url) \
        else urllib.request.build_opener()

    def send_http(messages: list[dict[str, str]]) -> str:
        data = json.dumps({"model": settings.model, "messages": messages, **body_extra}).encode("utf-8")
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        for attempt in range(3):
            request = urllib.request.Request(f"{settings.base_url}/chat/completions", data=data, headers=headers)
            try:
                with opener.open(request, timeout=settings.timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as exc:
                detail = f"HTTP {exc.code}: {_scrub(exc.read().decode('utf-8', 'replace'), key)}"
                if exc.code != 429 and exc.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                detail = _scrub(str(exc), key)
            except (ValueError, KeyError, IndexError, TypeError):
                detail = "the reply is not a chat-completions response"
                break
            if attempt < 2:
                time.sleep(0.5 * 2 ** attempt)
        raise LLMEndpointError(f"LLM endpoint {host} failed: {detail}")
    return send_http


def _has_openai() -> bool:
    import importlib.util

    return importlib.util.find_spec("openai") is not None


# --------------------------------------------------------------------------- generation
@dataclass
class LLMReport:
    requests: int = 0
    cache_hits: int = 0
    retried: int = 0
    rejected: list[str] = field(default_factory=list)


def generate(drafts: list[Draft], settings: LLMSettings, cache: ResponseCache,
             send: Callable[[list[dict[str, str]]], str] | None = None) -> tuple[list[Draft], LLMReport]:
    """Reword ``drafts`` through the LLM; returns the accepted drafts (order kept) and a report."""
    send = send or make_client(settings)
    report = LLMReport()
    lock = threading.Lock()
    failed: list[LLMEndpointError] = []  # after one endpoint failure, the other items stop at once

    def count(name: str, n: int = 1) -> None:
        with lock:
            setattr(report, name, getattr(report, name) + n)

    def one(draft: Draft) -> Draft | None:
        messages = first_messages(draft)
        key = hashlib.sha256(json.dumps({"model": settings.model, "messages": messages, "json_mode": settings.json_mode},
                                        sort_keys=True).encode("utf-8")).hexdigest()
        hit = cache.get(key)
        value = check_reply(json.dumps(hit["reply"]), draft)[0] if hit and "reply" in hit else None
        if value is not None:
            count("cache_hits")
        for attempt in range(settings.attempts if value is None else 0):
            if failed:
                raise failed[0]
            count("requests")
            count("retried", int(attempt > 0))
            try:
                content = send(messages)
            except LLMEndpointError as exc:
                failed.append(exc)
                raise
            value, errors = check_reply(content, draft)
            if value is not None:
                cache.put(key, {"model": settings.model, "reply": value, "attempts": attempt + 1})
                break
            messages = [*messages, {"role": "assistant", "content": content},
                        {"role": "user", "content": RETRY_NOTE.format(errors="; ".join(errors))}]
        if value is None:
            with lock:
                report.rejected.append(draft.key)
            return None
        return draft.with_text(question=value["question"], answer=value.get("answer"), origin=f"llm:{settings.model}")

    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        results = list(pool.map(one, drafts))
    return [d for d in results if d is not None], report

"""The ``vllm-offline:`` adapter: vLLM's offline engine (``vllm.LLM``, batched ``LLM.chat``).

vLLM usually lives in another environment than the harness, so the engine runs in a worker
process (:mod:`medmim_eval.adapters.vllm.offline_worker`, run by file path with the launcher
python: ``launcher=`` / ``$MEDMIM_VLLM_PYTHON`` / this python), started once per model and stopped
in ``aclose``. Batches of ``batch=`` prompts (default 32) go to it as JSON lines; images go as file
paths when the file can be used as it is, else as data URLs made by the openai adapter's image
policy (:mod:`medmim_eval.adapters.openai.image_payload`: 16-bit scaled, oversized images shrunk), so both
vLLM routes see the same pixels.

Options: those of ``vllm:`` that shape the engine (``preset``, ``launcher``, ``env.NAME``,
``max_images``, ``max_model_len``, ``trust_remote_code``, ``chat_template``, ``tp``, ``dtype``,
``enforce_eager``, ``startup_timeout``, ``log``), ``engine.KEY=JSON`` for any other ``vllm.LLM``
argument (e.g. ``engine.gpu_memory_utilization=0.85``), ``batch``, ``max_side``, ``jpeg_quality``.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import select
import subprocess
import sys
import time
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from medmim_eval.adapter import AdapterContext, Capabilities, GenerationRequest, GenerationResult
from medmim_eval.adapter_options import options_problem
from medmim_eval.adapters.vllm.adapter import is_local_target, model_identity, target_problem
from medmim_eval.adapters.vllm.model_registry import EngineSettings, engine_settings
from medmim_eval.adapters.vllm.options import OFFLINE_OPTIONS
from medmim_eval.adapters.vllm.server import (DEFAULT_STARTUP_TIMEOUT_S, close_process_group, launch_env,
                                              launcher_python, vllm_missing)
from medmim_eval.errors import MedmimError, TooManyImagesError
from medmim_eval.schema import PromptRecord, Sample, TextPart

WORKER = Path(__file__).with_name("offline_worker.py")
DEFAULT_BATCH = 32
_LIVE: "weakref.WeakSet[VLLMOfflineAdapter]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for adapter in list(_LIVE):
        adapter.stop()


def check_vllm_offline(target: str | None, options: dict[str, str]) -> str | None:
    """Cheap prerequisite check: the declared options, the target and a launcher python that has vllm."""
    return options_problem("vllm-offline", OFFLINE_OPTIONS, options) or target_problem(target) or vllm_missing(options)


def engine_kwargs(settings: EngineSettings, options: dict[str, str], seed: int) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for ``settings`` plus ``engine.KEY=JSON`` options."""
    if settings.data_parallel > 1:
        raise MedmimError("dp= needs the server: use vllm:...,dp=N (or several servers with base_url=A|B)")
    kwargs: dict[str, Any] = {"limit_mm_per_prompt": {"image": settings.max_images}, "seed": seed,
                              "trust_remote_code": settings.trust_remote_code,
                              "tensor_parallel_size": settings.tensor_parallel, "enforce_eager": settings.enforce_eager}
    for key, value in (("max_model_len", settings.max_model_len), ("hf_overrides", settings.hf_overrides),
                       ("mm_processor_kwargs", settings.mm_processor_kwargs), ("dtype", settings.dtype)):
        if value:
            kwargs[key] = value
    for key, raw in options.items():
        if key.startswith("engine."):
            try:
                kwargs[key[7:]] = json.loads(raw)
            except ValueError:
                kwargs[key[7:]] = raw
    return kwargs


class VLLMOfflineAdapter:
    """The worker process and the requests' translation (``ModelAdapter``)."""

    def __init__(self, model_id: str, model: str, settings: EngineSettings, options: dict[str, str],
                 context: AdapterContext) -> None:
        from medmim_eval.adapters.openai.image_payload import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_SIDE, ImagePayloadCache

        self.model_id, self.model, self.settings = model_id, model, settings
        try:
            batch = int(options.get("batch") or DEFAULT_BATCH)
            no_resize = str(options.get("max_side", "")).lower() in ("0", "none", "off")
            self.max_side = None if no_resize else int(options.get("max_side") or DEFAULT_MAX_SIDE)
            self.jpeg_quality = int(options.get("jpeg_quality") or DEFAULT_JPEG_QUALITY)
            timeout = float(options.get("startup_timeout") or DEFAULT_STARTUP_TIMEOUT_S)
        except ValueError:
            raise MedmimError("options batch=, max_side=, jpeg_quality=, startup_timeout= must be numbers") from None
        self.capabilities = Capabilities(max_images=settings.max_images, batch_size=max(1, batch), max_concurrency=1)
        self.images = ImagePayloadCache(self.max_side, self.jpeg_quality)
        self._lock = asyncio.Lock()
        self._next_id = 0
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        from medmim_eval.datadir import cache_dir

        self.log_path = Path(options["log"]).expanduser() if options.get("log") else \
            cache_dir() / "vllm-logs" / f"offline-{stamp}-{os.getpid()}.log"
        config = {"model": model, "engine": engine_kwargs(settings, options, context.seed), "parent": os.getpid(),
                  "chat_template": settings.chat_template.read_text(encoding="utf-8") if settings.chat_template else None}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [launcher_python(options), str(WORKER), json.dumps(config)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, **launch_env(options)), start_new_session=True)
        print(f"vllm-offline: starting the engine for {model} (pid {self.proc.pid}); log: {self.log_path}",
              file=sys.stderr, flush=True)
        _LIVE.add(self)
        try:
            ready = self._read(timeout, "start-up")
            if "fatal" in ready:
                raise MedmimError(f"the vLLM offline engine for {model} failed to start: {ready['fatal']}; "
                                  f"last lines of {self.log_path}:\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise
        self.vllm_version = ready.get("vllm_version")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _read(self, timeout: float | None, during: str) -> dict[str, Any]:
        """The worker's next protocol line (blocking); raises MedmimError if it dies or times out."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line:
                    return json.loads(line)
            if self.proc.poll() is not None or ready:
                raise MedmimError(f"the vLLM offline worker for {self.model} exited during {during}; "
                                  f"last lines of {self.log_path}:\n{self._log_tail()}")
            if deadline is not None and time.monotonic() > deadline:
                raise MedmimError(f"the vLLM offline engine for {self.model} did not start within {timeout:.0f} s "
                                  f"(raise startup_timeout=SECONDS); last lines of {self.log_path}:\n{self._log_tail()}")

    def fingerprint(self) -> dict[str, Any]:
        return {"adapter": "vllm-offline", "checkpoint": self.model, "vllm_version": self.vllm_version,
                **model_identity(self.model, self.settings),
                "images": {"max_side": self.max_side, "jpeg_quality": self.jpeg_quality}}

    async def _image_part(self, path: str) -> tuple[dict[str, str], str | None]:
        encoded = await self.images.get(path)
        if encoded.note is None:
            return {"image": path}, None  # the file as it is: the worker reads it itself
        return {"image_url": encoded.data_url}, encoded.note

    async def _request(self, sample: Sample, request: GenerationRequest) -> tuple[dict[str, Any], PromptRecord]:
        parts: list[dict[str, str]] = []
        notes: list[str] = []
        for part in sample.prompt.parts:
            if isinstance(part, TextPart):
                if part.text:
                    parts.append({"text": part.text})
                continue
            ref, note = await self._image_part(part.path)
            parts.append(ref)
            if note:
                notes.append(f"image {len(notes) + 1}: {note}")
        settings = request.settings
        payload = {"parts": parts, "max_tokens": settings.max_new_tokens, "temperature": settings.temperature,
                   "seed": settings.seed}
        images = sample.prompt.images
        return payload, PromptRecord(n_images=len(images), image_order=[p.index for p in images], notes=notes)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | BaseException]:
        """One result per request; a request the engine refuses comes back as its exception."""
        out: list[GenerationResult | BaseException | None] = [None] * len(requests)
        payloads, records, slots = [], [], []
        for i, request in enumerate(requests):
            n_images = len(request.sample.prompt.images)
            if n_images > self.settings.max_images:
                out[i] = TooManyImagesError(n_images, self.settings.max_images, self.model_id)
                continue
            try:
                payload, record = await self._request(request.sample, request)
            except OSError as exc:
                out[i] = exc
                continue
            payloads.append(payload)
            records.append(record)
            slots.append(i)
        if payloads:
            async with self._lock:
                self._next_id += 1
                message = json.dumps({"id": self._next_id, "requests": payloads}) + "\n"
                reply = await asyncio.to_thread(self._roundtrip, message)
            for i, record, result in zip(slots, records, reply["results"], strict=True):
                out[i] = self._result(result, record)
        return [r if r is not None else RuntimeError("no answer") for r in out]

    def _roundtrip(self, message: str) -> dict[str, Any]:
        if self.proc is None or self.proc.stdin is None:
            raise MedmimError("the vLLM offline worker was stopped")
        try:
            self.proc.stdin.write(message.encode("utf-8"))
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise MedmimError(f"the vLLM offline worker is gone; last lines of {self.log_path}:\n{self._log_tail()}") from None
        return self._read(None, "a batch")

    @staticmethod
    def _result(result: dict[str, Any], record: PromptRecord) -> GenerationResult | BaseException:
        if "error" in result:
            return RuntimeError(f"vLLM refused the request: {result['error']}")
        sent = record.model_copy(update={"image_sizes": [tuple(s) for s in result.get("image_sizes", [])],
                                         "rendered_prompt_sha256": result.get("prompt_sha256")})
        tokens = {"prompt": int(result.get("prompt_tokens", 0)), "completion": int(result.get("completion_tokens", 0))}
        return GenerationResult(text=result["text"], sent=sent, tokens=tokens)

    def stop(self, grace: float = 20.0) -> None:
        """Close the worker's stdin (it exits, taking the engine along); SIGKILL its group if slow."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        close_process_group(proc, proc.pid, grace)  # the worker leads its own session

    async def aclose(self) -> None:
        self.images.close()
        await asyncio.to_thread(self.stop)


def make_vllm_offline(target: str | None, options: dict[str, str], context: AdapterContext) -> VLLMOfflineAdapter:
    """The factory registered for ``vllm-offline:``. Raises MedmimError with the fix when it cannot run."""
    reason = check_vllm_offline(target, options)
    if reason:
        raise MedmimError(reason)
    assert target is not None
    model = str(Path(target).expanduser().resolve()) if is_local_target(target) else target
    settings = engine_settings(target, options)
    return VLLMOfflineAdapter(options.get("label") or f"vllm-offline:{target}", model, settings, options, context)

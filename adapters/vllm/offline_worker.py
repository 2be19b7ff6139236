"""The ``vllm-offline`` worker: vLLM's offline engine behind a JSON-lines pipe.

Run by the python that has vLLM (it imports nothing from medmim_eval, only the standard library,
Pillow and vllm): ``python offline_worker.py CONFIG_JSON``, where CONFIG_JSON is
``{"model": ..., "engine": {LLM keyword arguments}, "chat_template": TEXT|null, "parent": PID}``.

Protocol (one JSON object per line; the protocol has stdout to itself -- everything else that
writes to fd 1, vLLM's logging included, is sent to stderr):

* worker -> harness, once: ``{"ready": true, "vllm_version": V}`` or ``{"fatal": MESSAGE}``.
* harness -> worker: ``{"id": N, "requests": [{"parts": [{"text": T} | {"image": PATH} |
  {"image_url": DATA_URL}, ...], "max_tokens": M, "temperature": X, "seed": S}, ...]}``.
* worker -> harness: ``{"id": N, "results": [{"text", "prompt_tokens", "completion_tokens",
  "prompt_sha256", "image_sizes"} | {"error": MESSAGE, "type": NAME}, ...]}``, in request order.
  A batch that vLLM rejects as a whole is retried one request at a time, so one bad request
  (e.g. too many images) fails alone.

The worker leads its own process group. It exits, killing the group (engine core and workers
included), when stdin closes or its parent process goes away.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import sys
import threading
import time
from typing import Any


def _die() -> None:
    """Exit, taking the engine's processes along when this worker leads its process group."""
    sys.stderr.flush()
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(0)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            _die()


def _image(part: dict[str, str]) -> Any:
    from PIL import Image

    if "image" in part:
        image = Image.open(part["image"])
    else:
        _, _, payload = part["image_url"].partition(",")
        image = Image.open(io.BytesIO(base64.b64decode(payload)))
    return image.convert("RGB")


def _conversation(request: dict[str, Any]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    content: list[dict[str, Any]] = []
    sizes: list[list[int]] = []
    for part in request["parts"]:
        if "text" in part:
            content.append({"type": "text", "text": part["text"]})
        else:
            image = _image(part)
            sizes.append([image.width, image.height])
            content.append({"type": "image_pil", "image_pil": image})
    return [{"role": "user", "content": content}], sizes


def _error(exc: BaseException) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    return {"error": lines[0] if lines else type(exc).__name__, "type": type(exc).__name__}


def _success(output: Any, sizes: list[list[int]]) -> dict[str, Any]:
    completion = output.outputs[0]
    prompt = output.prompt or ""
    return {"text": completion.text, "prompt_tokens": len(output.prompt_token_ids or []),
            "completion_tokens": len(completion.token_ids), "image_sizes": sizes,
            "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest()}


def _answer(llm: Any, requests: list[dict[str, Any]], template: str | None) -> list[dict[str, Any]]:
    """One result per request, in order. A batch vLLM refuses is retried request by request."""
    from vllm import SamplingParams

    results: list[dict[str, Any]] = [{} for _ in requests]
    runnable: list[tuple[int, list[dict[str, Any]], list[list[int]], Any]] = []
    for i, request in enumerate(requests):
        try:
            conversation, sizes = _conversation(request)
            params = SamplingParams(max_tokens=request.get("max_tokens", 256),
                                    temperature=request.get("temperature", 0.0), seed=request.get("seed"))
        except Exception as exc:  # an unreadable image fails its request only
            results[i] = _error(exc)
            continue
        runnable.append((i, conversation, sizes, params))

    def run(items: list[tuple[int, list[dict[str, Any]], list[list[int]], Any]]) -> list[Any]:
        return list(llm.chat([c for _, c, _, _ in items], sampling_params=[p for _, _, _, p in items],
                             use_tqdm=False, chat_template=template))

    outputs: list[Any] = []
    try:
        outputs = run(runnable) if runnable else []
    except Exception:  # isolate the request vLLM refuses
        outputs = []
        for item in runnable:
            try:
                outputs.extend(run([item]))
            except Exception as exc:
                outputs.append(exc)
    for (i, _, sizes, _), output in zip(runnable, outputs, strict=True):
        results[i] = _error(output) if isinstance(output, Exception) else _success(output, sizes)
    return results


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # vLLM logs to stdout; keep the protocol channel clean
    sys.stdout = sys.stderr
    config = json.loads(sys.argv[1])
    threading.Thread(target=_watch_parent, args=(int(config["parent"]),), daemon=True).start()

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        import vllm

        llm = vllm.LLM(model=config["model"], **config.get("engine", {}))
    except BaseException as exc:  # noqa: BLE001 - report any start-up failure, then exit
        send({"fatal": f"{type(exc).__name__}: {exc}"})
        raise
    send({"ready": True, "vllm_version": getattr(vllm, "__version__", None)})
    template = config.get("chat_template")
    for line in sys.stdin:
        if not line.strip():
            continue
        batch = json.loads(line)
        try:
            results = _answer(llm, batch["requests"], template)
        except Exception as exc:  # noqa: BLE001 - the whole batch failed; say why, keep serving
            results = [{"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__}] * len(batch["requests"])
        send({"id": batch["id"], "results": results})
    protocol.close()
    _die()  # engine core and workers too, at once


if __name__ == "__main__":  # vLLM starts its engine with multiprocessing: never run on re-import
    main()

"""A real OpenAI-compatible HTTP server for tests and benchmarks, with faults on demand.

It speaks the chat-completions protocol over real HTTP/1.1 (keep-alive) on 127.0.0.1:
``POST /v1/chat/completions`` answers with a proper ``chat.completion`` body (choices, message,
usage) and ``GET /v1/models`` lists the served models; ``GET /_log`` returns what it recorded.
It answers deterministically from the request: ``[[answer=X]]`` in the prompt makes it answer X;
otherwise a prompt with options (``\\nA:``) gets ``A`` and any other ``I see N images.``

Each request is recorded (:attr:`FakeOpenAIServer.requests`): arrival, reply and end times, the message
parts in order, for each image its mime type, size, mode, SHA-256 of the bytes received and
(for small images) its extrema, the Authorization header, the settings and the fault applied.

Faults are asked for per prompt by a marker in its text, ``[[fault=KIND*N]]`` or
``[[fault=KIND*N retry_after=S]]``: the first N attempts of that prompt get the fault, later ones
a normal answer (attempts are counted for the server's life, across runs). Kinds: ``429``
(``Retry-After: S``), ``429date`` (``Retry-After`` as an HTTP date at least S seconds ahead),
``quota`` (429 ``insufficient_quota``, no ``Retry-After``), ``500``, ``503``, ``400``, ``401``
(echoes the bearer token in its message, as some servers do),
``hang`` (no answer until the client gives up), ``drop`` (connection closed without a response),
``malformed`` (200 with a body that is not JSON), ``html`` (200, text/html), ``nochoices``
(200 with ``"choices": []``).

``rules`` script answers without touching the prompt: each ``(TEXT, MARKERS)`` makes a prompt that
contains TEXT behave as if it also held MARKERS (``[[answer=B]]``, ``[[fault=500*1]]``), so a
second-stage prompt that quotes a first answer (an extraction judge's) can be given its answer.

Run it on its own (the benchmark does): ``python tests/fake_openai_server.py --latency 0.2``
prints its base URL on the first line of stdout and serves until killed.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import re
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_FAULT = re.compile(r"\[\[fault=(\w+)\*(\d+)(?: retry_after=([\d.]+))?\]\]")
_ANSWER = re.compile(r"\[\[answer=([^\]]*)\]\]")
DECODE_LIMIT = 512 * 512  # images up to this many pixels are fully decoded for their extrema


class FakeOpenAIServer:
    """The server, in a background thread. Use as a context manager or call start()/stop().

    Args:
        latency: seconds each answer waits before it is sent (a model's compute time).
        models: the model names it serves (``GET /v1/models``); requests for others get 404.
        inspect: look into each image (size, mode, hash); the benchmark turns it off (mime and
            byte count only).
        rules: ``(TEXT, MARKERS)`` pairs: a prompt containing TEXT is answered as if it also held MARKERS.
    """

    def __init__(self, latency: float = 0.0, models: tuple[str, ...] = ("test-model",), inspect: bool = True,
                 port: int = 0, rules: tuple[tuple[str, str], ...] = ()) -> None:
        self.latency, self.models, self.inspect, self.rules = latency, models, inspect, rules
        self.requests: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self.httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def chat_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def next_attempt(self, key: str) -> int:
        with self.lock:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            return self.attempts[key]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the benchmark opens hundreds of connections at once
    owner: FakeOpenAIServer


def _image_info(url: str, inspect: bool) -> dict[str, Any]:
    header, _, payload = url.partition(",")
    mime = header[len("data:"):].split(";")[0]
    if not inspect:  # the benchmark: only what costs nothing
        return {"mime": mime, "nbytes": len(payload) * 3 // 4}
    data = base64.b64decode(payload)
    info: dict[str, Any] = {"mime": mime, "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if inspect:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            info.update(size=list(image.size), mode=image.mode, format=image.format)
            if image.size[0] * image.size[1] <= DECODE_LIMIT:
                info["extrema"] = image.getextrema()
    return info


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server: _Server
    replied_at: float | None = None

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.replied_at = time.time()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers=headers)

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.path != "/_log":
            with owner.lock:
                owner.requests.append({"path": self.path, "start": time.time(), "auth": self.headers.get("Authorization")})
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": "fake", "root": f"/checkpoints/{m}"} for m in owner.models]})
        elif self.path == "/_log":
            with owner.lock:
                self._json(200, {"requests": owner.requests, "max_in_flight": owner.max_in_flight})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        started = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        record: dict[str, Any] = {"path": self.path, "start": started, "auth": self.headers.get("Authorization"),
                                  "organization": self.headers.get("OpenAI-Organization"),
                                  "project": self.headers.get("OpenAI-Project")}
        with owner.lock:  # recorded on arrival, so a hung request shows up while it hangs
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
            owner.requests.append(record)
        self.replied_at = None
        try:
            self._chat(owner, body, record)
        finally:
            record["replied"] = self.replied_at  # before the first byte of the answer left
            record["end"] = time.time()
            with owner.lock:
                owner.in_flight -= 1

    def _chat(self, owner: FakeOpenAIServer, body: bytes, record: dict[str, Any]) -> None:
        if not self.path.endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        request = json.loads(body)
        content = request["messages"][-1]["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts = [p["text"] for p in parts if p["type"] == "text"]
        images = [_image_info(p["image_url"]["url"], owner.inspect) for p in parts if p["type"] == "image_url"]
        text = "".join(texts)
        key = hashlib.sha256(json.dumps([texts, [i.get("sha256") for i in images]]).encode()).hexdigest()[:16]
        record.update(model=request.get("model"), order=[p["type"] for p in parts], texts=texts, images=images,
                      key=key, attempt=owner.next_attempt(key), settings={
                          k: request.get(k) for k in ("max_tokens", "temperature", "seed")},
                      detail=[p["image_url"].get("detail") for p in parts if p["type"] == "image_url"])
        text += "".join(markers for needle, markers in owner.rules if needle in text)
        fault = _FAULT.search(text)
        if fault and record["attempt"] <= int(fault.group(2)):
            record["fault"] = fault.group(1)
            return self._fault(fault.group(1), float(fault.group(3) or 1), record)
        if request.get("model") not in owner.models:
            return self._json(404, {"error": {"message": f"model {request.get('model')} does not exist"}})
        if owner.latency:
            owner.stopping.wait(owner.latency)
        forced = _ANSWER.search(text)
        answer = forced.group(1) if forced else ("A" if "\nA:" in text else f"I see {len(images)} images.")
        record["answer"] = answer
        self._json(200, {
            "id": f"chatcmpl-{key}-{record['attempt']}", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(text.split()) + 85 * len(images), "completion_tokens": len(answer.split()),
                      "total_tokens": len(text.split()) + 85 * len(images) + len(answer.split())},
        })

    def _fault(self, kind: str, seconds: float, record: dict[str, Any]) -> None:
        owner = self.server.owner
        if kind == "429":
            return self._json(429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                              headers={"Retry-After": f"{seconds:g}"})
        if kind == "quota":  # what api.openai.com sends when the account has run out of credit
            return self._json(429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                              "code": "insufficient_quota"}})
        if kind == "429date":
            retry_at = math.ceil(time.time() + seconds)
            record["retry_at"] = retry_at
            return self._json(429, {"error": {"message": "Rate limit reached"}},
                              headers={"Retry-After": formatdate(retry_at, usegmt=True)})
        if kind in ("500", "503", "400"):
            return self._json(int(kind), {"error": {"message": f"injected {kind}"}})
        if kind == "401":
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            return self._json(401, {"error": {"message": f"Incorrect API key provided: {token}.", "code": "invalid_api_key"}})
        if kind == "hang":
            owner.stopping.wait(60)
        elif kind == "malformed":
            return self._send(200, b'{"id": "chatcmpl-x", "choices": [{"message": ')
        elif kind == "html":
            return self._send(200, b"<html><body>Bad gateway</body></html>", content_type="text/html")
        elif kind == "nochoices":
            return self._json(200, {"id": "chatcmpl-x", "object": "chat.completion", "choices": [],
                                    "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}})
        # hang and drop: close the connection without a response
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--no-inspect", action="store_true", help="do not decode or hash images")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(latency=args.latency, models=tuple(args.model or ["test-model"]),
                              inspect=not args.no_inspect, port=args.port)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()

"""The ``openai`` adapter against a real HTTP server speaking the chat-completions protocol.

The server (tests/fake_openai_server.py) answers from the request and injects faults on demand,
so these tests check what really crossed the wire: images, order, retries, concurrency, the key.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import run_cli
from fake_openai_server import FakeOpenAIServer
from PIL import Image

from medmim_eval.adapter import AdapterContext
from medmim_eval.adapters.openai.chat import (PRICES_USD_PER_1M, Endpoint, EndpointPool, OpenAIChatAdapter,
                                              make_openai, retry_after_seconds)
from medmim_eval.adapters.openai.image_payload import ImagePayloadCache, encode_image
from medmim_eval.records import RecordStore
from medmim_eval.schema import SampleRecord

FAKE_KEY = "sk-test-DoNotLeak-7f3a9c2e51b84d06"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _item(images: list[str], question: str, source: str = "T", options: bool = True) -> dict:
    tokens = "".join("<image>" for _ in images)
    user = f"{tokens}{question}\nA: yes\nB: no\n" if options else f"{tokens}{question}"
    answer = "A: yes" if options else "a reference answer"
    return {"id": "x", "images": images, "source": source,
            "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _task(folder: Path, questions: list[str], source: str = "T") -> Path:
    """One two-image closed item per question, over two small PNGs."""
    Image.new("L", (8, 8), 40).save(folder / "a.png")
    Image.new("L", (8, 8), 220).save(folder / "b.png")
    path = folder / "task.json"
    path.write_text(json.dumps([_item(["a.png", "b.png"], q, source) for q in questions]))
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]


def _run(spec: str, task: Path, out: Path, *extra: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return run_cli("run", "--models", spec, "--tasks", str(task), "--output", str(out), "--no-cache", "--quiet",
                   *extra, env=env)


# --- what reaches the server -------------------------------------------------------------------

def test_images_arrive_in_prompt_order_as_original_bytes_or_a_shrunk_jpeg(server: FakeOpenAIServer, tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "small.png")
    Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp_path / "small.jpg", quality=80)
    Image.effect_noise((1600, 800), 60).convert("RGB").save(tmp_path / "big.png")
    item = {"id": "x", "images": ["small.png", "small.jpg", "big.png"], "source": "T",
            "conversation": [{"role": "user", "content": "First <image> then <image> and <image>. Same?\nA: yes\nB: no\n"},
                             {"role": "assistant", "content": "A: yes"}]}
    task = tmp_path / "task.json"
    task.write_text(json.dumps([item]))
    out = tmp_path / "run"
    result = _run(f"openai:test-model,base_url={server.url},max_side=512,jpeg_quality=70", task, out)
    assert result.returncode == 0, result.stderr

    (request,) = server.chat_requests()
    assert request["order"] == ["text", "image_url", "text", "image_url", "text", "image_url", "text"]
    first, second, third = request["images"]
    assert (first["mime"], first["sha256"]) == ("image/png", _sha(tmp_path / "small.png"))  # the file's own bytes
    assert (second["mime"], second["sha256"]) == ("image/jpeg", _sha(tmp_path / "small.jpg"))
    assert (third["mime"], third["format"], third["size"]) == ("image/jpeg", "JPEG", [512, 256])
    (record,) = _records(out)
    assert record["correct"] is True and record["tokens"]["completion"] == 1 and record["tokens"]["prompt"] > 3 * 85
    sent = record["sent"]
    assert sent["n_images"] == 3 and sent["image_order"] == [0, 1, 2]
    assert sent["image_sizes"] == [[64, 48], [40, 30], [512, 256]]
    assert sent["notes"] == ["image 3: resized 1600x800 -> 512x256, JPEG q70"]
    assert request["settings"] == {"max_tokens": 256, "temperature": 0.0, "seed": 0}


def test_text_arrives_exactly_and_detail_reaches_every_image(server: FakeOpenAIServer, tmp_path: Path) -> None:
    """The body is written as JSON text around the data URLs: quotes, backslashes, non-ASCII and
    control characters in the prompt must still arrive as they were."""
    question = 'Is the \u201cleft\u201d lung "clear"? C:\\scan\tR\u00f6ntgen \u80ba \U0001F600'
    task = _task(tmp_path, [question])
    result = _run(f"openai:test-model,base_url={server.url},detail=low", task, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    (request,) = server.chat_requests()
    assert request["texts"][0] == f"{question}\nA: yes\nB: no\n"
    assert request["detail"] == ["low", "low"] and request["order"] == ["image_url", "image_url", "text"]


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "LA", "P", "1", "CMYK"])
def test_unusual_modes_are_reencoded_only_when_they_must_be(mode: str, tmp_path: Path) -> None:
    import numpy as np

    ramp = np.linspace(1000, 4000, 64 * 32).reshape(32, 64)  # a 12-bit scan's range, all above 255
    if mode == "I;16":
        image = Image.fromarray(ramp.astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray(ramp.astype(np.float32))
    else:
        image = Image.new("RGBA", (64, 32), (200, 100, 50, 128)).convert(mode)
    path = tmp_path / {"CMYK": "img.jpg", "F": "img.tif"}.get(mode, "img.png")
    image.save(path)
    encoded = encode_image(str(path), max_side=1024)
    header, payload = encoded.data_url.split(",", 1)
    data = __import__("base64").b64decode(payload)
    with Image.open(io.BytesIO(data)) as sent:
        sent.load()
    if mode in ("RGBA", "LA", "P", "1"):  # servers decode these faithfully: the file's own bytes
        assert encoded.note is None and data == path.read_bytes() and header == "data:image/png;base64"
        return
    assert header == "data:image/jpeg;base64" and sent.format == "JPEG" and sent.mode in ("L", "RGB")
    assert encoded.size == encoded.original_size == (64, 32)
    if mode in ("I;16", "F"):
        assert sent.getextrema() == (0, 255)  # stretched, not clipped to white
        assert "scaled min-max (1000..4000) to 8-bit" in (encoded.note or "")


def test_alpha_is_composited_on_black_when_an_image_must_shrink(tmp_path: Path) -> None:
    Image.new("RGBA", (300, 100), (255, 255, 255, 0)).save(tmp_path / "clear.png")
    encoded = encode_image(str(tmp_path / "clear.png"), max_side=150)
    with Image.open(io.BytesIO(__import__("base64").b64decode(encoded.data_url.split(",", 1)[1]))) as sent:
        assert sent.size == (150, 50) and sent.convert("L").getextrema()[1] < 8
    assert encoded.note == "resized 300x100 -> 150x50, RGBA alpha composited on black, JPEG q90"


def test_each_image_is_encoded_once_and_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 100), (0, 0, 255)).save(path)

    async def fetch_many() -> tuple[int, set[str]]:
        cache = ImagePayloadCache(max_side=256, jpeg_quality=80)
        try:
            results = await asyncio.gather(*(cache.get(str(path)) for _ in range(20)))
            first = cache.encoded
            Image.new("RGB", (2000, 120), (0, 0, 255)).save(path)
            changed = await cache.get(str(path))
            return first, {r.sha256 for r in results} | {changed.sha256}
        finally:
            cache.close()

    encoded_first, digests = asyncio.run(fetch_many())
    assert encoded_first == 1  # twenty concurrent requests for one image share one encode
    assert len(digests) == 2  # the rewritten file was encoded anew


def test_original_bytes_are_read_on_the_loop_and_only_reencodes_and_big_files_use_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from medmim_eval.adapters.openai import image_payload

    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "small.png")  # sent as it is
    Image.effect_noise((900, 300), 60).convert("RGB").save(tmp_path / "wide.png")  # shrunk to 256
    threads: dict[str, set[str]] = {"original_payload": set(), "encode_bytes": set()}
    for name in threads:
        real = getattr(image_payload, name)

        def traced(*args: object, _real=real, _name=name, **kwargs: object) -> object:  # type: ignore[no-untyped-def]
            threads[_name].add(threading.current_thread().name.split("_")[0])
            return _real(*args, **kwargs)
        monkeypatch.setattr(image_payload, name, traced)

    async def both() -> list[image_payload.EncodedImage]:
        cache = ImagePayloadCache(max_side=256)
        try:
            return [await cache.get(str(tmp_path / n)) for n in ("small.png", "wide.png")]
        finally:
            cache.close()

    inline = asyncio.run(both())
    assert threads == {"original_payload": {"MainThread"}, "encode_bytes": {"medmim-image"}}
    assert inline[0].sha256 == _sha(tmp_path / "small.png") and inline[1].size == (256, 85)
    monkeypatch.setattr(image_payload, "INLINE_MAX_BYTES", 0)  # every file is "big": all in the pool
    threads = {"original_payload": set(), "encode_bytes": set()}
    pooled = asyncio.run(both())
    assert threads == {"original_payload": {"medmim-image"}, "encode_bytes": {"medmim-image"}}
    assert pooled == inline  # the same payloads either way


def test_a_file_that_is_no_image_is_one_error_and_the_cache_goes_on(tmp_path: Path) -> None:
    from medmim_eval.adapters.openai.image_payload import ImageUnreadable

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut off here")
    Image.new("L", (8, 8), 40).save(tmp_path / "fine.png")

    async def attempt() -> tuple[BaseException | None, str]:
        cache = ImagePayloadCache()
        try:
            try:
                await cache.get(str(tmp_path / "broken.png"))
            except ImageUnreadable as exc:
                error: BaseException | None = exc
            else:
                error = None
            return error, (await cache.get(str(tmp_path / "fine.png"))).sha256
        finally:
            cache.close()

    error, digest = asyncio.run(attempt())
    assert error is not None and str(error).startswith(f"image {tmp_path / 'broken.png'} cannot be sent: UnidentifiedImageError")
    assert str(error).endswith("replace the file and rerun (only the samples that failed are sent again)")
    assert digest == _sha(tmp_path / "fine.png")


# --- faults, retries and resume ----------------------------------------------------------------

FAULTS = {
    "clean": "Clean?",
    "429": "Busy? [[fault=429*1 retry_after=1]]",
    "500x2": "Flaky? [[fault=500*2]]",
    "hang": "Slow? [[fault=hang*1]]",
    "drop": "Dropped? [[fault=drop*1]]",
    "malformed": "Garbled? [[fault=malformed*1]]",
    "nochoices": "Empty? [[fault=nochoices*1]]",
    "400": "Rejected? [[fault=400*1]]",
    "500x4": "Broken? [[fault=500*4]]",
}


def test_faults_are_retried_or_recorded_and_a_rerun_redoes_only_the_errors(server: FakeOpenAIServer, tmp_path: Path) -> None:
    task = _task(tmp_path, list(FAULTS.values()))
    out = tmp_path / "run"
    spec = f"openai:test-model,base_url={server.url},max_retries=2,backoff=0.05,timeout=1"
    first = _run(spec, task, out)
    assert first.returncode == 2 and "3 sample(s) ended in errors" in first.stderr
    by_question = {r["key"]: r for r in _records(out)}
    assert len(by_question) == len(FAULTS)  # nothing lost
    errors = sorted((r["error"]["type"], r["error"]["message"].split(" from ")[0]) for r in by_question.values() if r["error"])
    assert errors == [
        ("MalformedResponse", "the answer is not a chat completion with choices[0].message"),
        ("RequestRejected", "HTTP 400: injected 400"),
        ("ServerError", "HTTP 500: injected 500"),
    ]
    assert any("after 3 attempt(s)" in r["error"]["message"] for r in by_question.values() if r["error"])
    assert all(r["correct"] is None for r in by_question.values() if r["error"])  # an error is never a wrong answer
    faults = [r.get("fault") for r in server.chat_requests()]
    assert faults.count("500") == 2 + 3 and faults.count("hang") == 1 and faults.count("drop") == 1
    assert faults.count("malformed") == 1 and faults.count("nochoices") == 1  # a cut-off body is retried, JSON without choices not

    seen = len(server.chat_requests())
    second = _run(spec, task, out)
    assert second.returncode == 0, second.stderr
    rerun = server.chat_requests()[seen:]
    errored_texts = {FAULTS[k] for k in ("nochoices", "400", "500x4")}
    assert {r["texts"][0].split("\n")[0] for r in rerun} == errored_texts  # only the errored samples were redone
    latest = RecordStore(out).load()
    assert len(latest) == len(FAULTS) and all(r.done and r.correct for r in latest.values())


# Every request fails once, in each way a proxy, a busy or a restarting server fails it.
ONCE_EACH = {
    "429": "Busy? [[fault=429*1 retry_after=1]]",
    "500": "Flaky? [[fault=500*1]]",
    "cut": "Cut off? [[fault=malformed*1]]",  # a 200 whose body stops mid-JSON
    "html": "Proxy page? [[fault=html*1]]",  # a 200 whose body is an HTML page
    "drop": "Dropped? [[fault=drop*1]]",
    "slow": "Slow? [[fault=hang*1]]",  # no answer within timeout=1
}


def test_one_run_answers_every_sample_when_each_request_fails_once(server: FakeOpenAIServer, tmp_path: Path) -> None:
    questions = [f"{text} (item {i})" for i in range(2) for text in ONCE_EACH.values()]
    task = _task(tmp_path, questions)
    out = tmp_path / "run"
    result = _run(f"openai:test-model,base_url={server.url},max_retries=2,backoff=0.05,timeout=1", task, out)
    assert result.returncode == 0, result.stderr
    records = [SampleRecord.model_validate(r) for r in _records(out)]
    assert len(records) == len(questions) and all(r.done and r.correct for r in records)
    assert [r.sent.attempts for r in records if r.sent] == [2] * len(questions)  # the retry is counted
    requests = server.chat_requests()
    assert len(requests) == 2 * len(questions)
    by_prompt: dict[str, list[str | None]] = {}
    for request in sorted(requests, key=lambda r: r["start"]):
        by_prompt.setdefault(request["key"], []).append(request.get("fault"))
    assert sorted(faults[0] for faults in by_prompt.values()) == sorted(["429", "500", "malformed", "html", "drop", "hang"] * 2)
    assert all(faults[1] is None for faults in by_prompt.values())


@pytest.mark.parametrize("fault, kind, message", [
    ("nochoices", "MalformedResponse", "the answer is not a chat completion with choices[0].message"),  # it would say the same again
    ("quota", "RateLimited", "HTTP 429: You exceeded your current quota"),  # a retry cannot add credit
])
def test_answers_a_retry_cannot_change_are_one_clear_error_at_once(server: FakeOpenAIServer, tmp_path: Path, fault: str,
                                                                   kind: str, message: str) -> None:
    task = _task(tmp_path, ["Fine?", f"Hopeless? [[fault={fault}*1]]"])
    out = tmp_path / "run"
    result = _run(f"openai:test-model,base_url={server.url},max_retries=3,backoff=0.05", task, out)
    assert result.returncode == 2 and "1 sample(s) ended in errors" in result.stderr
    errors = [r["error"] for r in _records(out) if r["error"]]
    assert errors == [{"type": kind, "attempts": 1, "message": f"{message} from {server.url} after 1 attempt(s)"}]
    assert [r.get("fault") for r in server.chat_requests()].count(fault) == 1  # asked once
    assert len(server.chat_requests()) == 2


@pytest.mark.parametrize("sdk", ["broken", "absent"])
@pytest.mark.parametrize("adapter", ["openai", "vllm"])
def test_a_served_run_needs_httpx_not_the_openai_sdk(server: FakeOpenAIServer, tmp_path: Path, adapter: str,
                                                     sdk: str) -> None:
    """The SDK costs ~0.3 s of import and ~0.4 ms of CPU per request, for nothing the adapters use: a run
    neither imports it ("broken": importing it fails) nor asks for it ("absent": not installed at all)."""
    site = tmp_path / "site"
    if sdk == "broken":
        (site / "openai").mkdir(parents=True)
        (site / "openai" / "__init__.py").write_text("raise ImportError('the openai SDK must not be imported by a run')\n")
    else:  # importlib.util.find_spec("openai") is None, as where the package was never installed
        site.mkdir()
        (site / "sitecustomize.py").write_text("import sys\nsys.modules['openai'] = None\n")
    task = _task(tmp_path, ["Fine?", "Again? [[fault=500*1]]"])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"{adapter}:test-model,base_url={server.url},backoff=0.05", "--tasks", str(task),
                     "--output", str(out), "--no-cache", "--quiet", pythonpath=[site], subprocess_=True)
    assert result.returncode == 0, result.stderr
    records = _records(out)
    assert len(records) == 2 and all(r["correct"] and not r["error"] for r in records)
    assert sorted(r["sent"]["attempts"] for r in records) == [1, 2]
    assert "must not be imported" not in result.stderr


@pytest.mark.parametrize("adapter", ["openai", "vllm"])
def test_without_an_http_client_the_check_names_the_extra(monkeypatch: pytest.MonkeyPatch, adapter: str) -> None:
    import importlib.util

    from medmim_eval.adapters.openai.plugin import check_openai
    from medmim_eval.adapters.vllm.adapter import check_vllm

    check = {"openai": check_openai, "vllm": check_vllm}[adapter]
    options = {"base_url": "http://127.0.0.1:9/v1"}
    assert check("test-model", options) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("httpx", "httpx2") else real(name, *a))
    problem = check("test-model", options)
    assert problem and "httpx" in problem and "pip install 'medmim-eval[openai]'" in problem


def test_retry_after_is_honoured_in_seconds_and_as_an_http_date(server: FakeOpenAIServer, tmp_path: Path) -> None:
    task = _task(tmp_path, ["Seconds? [[fault=429*2 retry_after=1]]", "Date? [[fault=429date*1 retry_after=1]]"])
    result = _run(f"openai:test-model,base_url={server.url},backoff=0", task, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    attempts: dict[str, list[dict]] = {}
    for request in sorted(server.chat_requests(), key=lambda r: r["start"]):
        attempts.setdefault(request["texts"][0][:5], []).append(request)
    seconds, date = attempts["Secon"], attempts["Date?"]
    assert [r.get("fault") for r in seconds] == ["429", "429", None]
    assert all(later["start"] - earlier["replied"] >= 1.0 for earlier, later in zip(seconds, seconds[1:]))
    assert [r.get("fault") for r in date] == ["429date", None]
    assert date[1]["start"] >= date[0]["retry_at"] - 0.01  # not before the date the server named


def test_requests_overlap_up_to_the_concurrency_limit(tmp_path: Path) -> None:
    task = _task(tmp_path, [f"Question {i}?" for i in range(24)])
    with FakeOpenAIServer(latency=0.3) as slow:
        result = _run(f"openai:test-model,base_url={slow.url},concurrency=8", task, tmp_path / "run")
        assert result.returncode == 0, result.stderr
        assert slow.max_in_flight == 8
    with FakeOpenAIServer(latency=0.05) as serial:
        result = _run(f"openai:test-model,base_url={serial.url},concurrency=8", task, tmp_path / "run1", "--concurrency", "1")
        assert result.returncode == 0, result.stderr
        assert serial.max_in_flight == 1


def test_two_base_urls_share_the_requests(tmp_path: Path) -> None:
    task = _task(tmp_path, [f"Question {i}?" for i in range(20)])
    with FakeOpenAIServer(latency=0.05) as one, FakeOpenAIServer(latency=0.05) as two:
        result = _run(f"openai:test-model,base_url={one.url}|{two.url},concurrency=4", task, tmp_path / "run")
        assert result.returncode == 0, result.stderr
        counts = [len(one.chat_requests()), len(two.chat_requests())]
    assert sum(counts) == 20 and min(counts) >= 7, counts
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["models"][0]["fingerprint"]["base_urls"] == [one.url, two.url]


def test_a_sample_with_too_many_images_is_an_error_not_a_truncation(server: FakeOpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _run(f"openai:test-model,base_url={server.url},max_images=1", _task(tmp_path, ["Two?"]), out)
    assert result.returncode == 0 and "1 sample(s) not evaluated: more images than the model accepts" in result.stderr
    (record,) = _records(out)
    assert record["error"]["type"] == "TooManyImagesError" and "2 images" in record["error"]["message"]
    assert "max_images=1; nothing was sent" in record["error"]["message"]
    assert server.chat_requests() == []


# --- the key ------------------------------------------------------------------------------------

def test_the_api_key_is_sent_but_never_written(server: FakeOpenAIServer, tmp_path: Path) -> None:
    task = _task(tmp_path, ["Fine?", "Who are you? [[fault=401*1]]"])
    out = tmp_path / "run"
    env = {"MY_SERVER_KEY": FAKE_KEY}
    result = _run(f"openai:test-model,base_url={server.url},api_key_env=MY_SERVER_KEY", task, out, env=env)
    assert result.returncode == 2  # the 401 is an error, not retried
    assert {r["auth"] for r in server.chat_requests()} == {f"Bearer {FAKE_KEY}"}
    rejected = next(r for r in _records(out) if r["error"])
    assert rejected["error"]["type"] == "RequestRejected" and "Incorrect API key provided: ***" in rejected["error"]["message"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"samples.jsonl", "manifest.json", "results.json"}
    for text in [*(p.read_text(errors="replace") for p in written), result.stdout, result.stderr]:
        assert FAKE_KEY not in text and "DoNotLeak" not in text


def test_the_organization_and_project_are_sent_as_the_sdk_sends_them(server: FakeOpenAIServer, tmp_path: Path) -> None:
    task = _task(tmp_path, ["Fine?"])
    env = {"OPENAI_ORG_ID": "org-test123", "OPENAI_PROJECT_ID": "proj_test456"}
    result = _run(f"openai:test-model,base_url={server.url}", task, tmp_path / "run", env=env)
    assert result.returncode == 0, result.stderr
    (request,) = server.chat_requests()
    assert (request["organization"], request["project"]) == ("org-test123", "proj_test456")
    result = _run(f"openai:test-model,base_url={server.url}", task, tmp_path / "run2",
                  env={"OPENAI_ORG_ID": "", "OPENAI_PROJECT_ID": ""})
    assert result.returncode == 0, result.stderr
    assert (server.chat_requests()[-1]["organization"], server.chat_requests()[-1]["project"]) == (None, None)


def test_the_key_stays_out_of_the_fingerprint_and_repr(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    adapter = make_openai("test-model", {"base_url": server.url}, AdapterContext())
    try:
        assert adapter.fingerprint() == {
            "adapter": "openai", "model": "test-model", "base_urls": [server.url],
            "images": {"max_side": 2048, "jpeg_quality": 90},
            "server_model": "test-model", "server_root": "/checkpoints/test-model"}
        assert "DoNotLeak" not in repr(adapter) and adapter.capabilities.max_concurrency == 64
    finally:
        asyncio.run(adapter.aclose())
    assert [r["auth"] for r in server.requests] == [f"Bearer {FAKE_KEY}"]  # the /models lookup


def test_no_key_for_the_openai_api_is_one_line_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = _run("gpt-4o", _task(tmp_path, ["Q?"]), tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model 'gpt-4o' cannot run here: openai: set OPENAI_API_KEY to the API key for api.openai.com" in result.stderr
    bad = _run("openai:m,base_url=http://127.0.0.1:9/v1,concurency=4", _task(tmp_path, ["Q?"]), tmp_path / "run2")
    assert bad.returncode == 2 and "unknown option(s) concurency" in bad.stderr


# --- data governance ----------------------------------------------------------------------------

def test_credentialed_images_are_refused_for_the_openai_api_before_any_request(tmp_path: Path) -> None:
    task = _task(tmp_path, ["Dense?"], source="EMBED_multichoice_x")
    out = tmp_path / "run"
    result = _run("openai:gpt-4o", task, out, env={"OPENAI_API_KEY": FAKE_KEY})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "refusing to send EMBED (data-use agreement) images to api.openai.com" in result.stderr
    assert "--allow-credentialed-upload" in result.stderr
    assert not (out / "samples.jsonl").exists()


def test_credentialed_images_may_go_to_a_local_server_without_a_flag(server: FakeOpenAIServer, tmp_path: Path) -> None:
    task = _task(tmp_path, ["Dense?"], source="EMBED_multichoice_x")
    result = _run(f"openai:test-model,base_url={server.url}", task, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert len(server.chat_requests()) == 1


def test_the_upload_flag_lets_a_remote_endpoint_past_the_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a server other than api.openai.com needs no key
    task = _task(tmp_path, ["Dense?"], source="EMBED_multichoice_x")
    remote = "openai:test-model,base_url=http://192.0.2.1:9/v1"  # TEST-NET-1: never routed
    refused = _run(remote, task, tmp_path / "run")
    assert refused.returncode == 2 and "refusing to send EMBED" in refused.stderr and "192.0.2.1" in refused.stderr
    allowed = _run(remote, task, tmp_path / "run", "--allow-credentialed-upload")
    assert "refusing" not in allowed.stderr
    assert "no OpenAI-compatible server answers at http://192.0.2.1:9/v1" in allowed.stderr  # it tried to reach it


def test_a_model_the_server_does_not_serve_fails_to_load_with_the_served_names(server: FakeOpenAIServer,
                                                                                tmp_path: Path) -> None:
    result = _run(f"openai:other-model,base_url={server.url}", _task(tmp_path, ["Q?"]), tmp_path / "run")
    assert result.returncode == 2
    assert f"the server at {server.url} serves test-model, not 'other-model'" in result.stderr
    assert server.chat_requests() == []


# --- light imports, registration, policy units --------------------------------------------------

def test_gpt4o_is_listed_without_a_key() -> None:
    # That listing imports no openai is checked with torch and vllm in test_light_imports.py.
    listing = run_cli("list", "models", env={"OPENAI_API_KEY": ""})
    assert "gpt-4o" in listing.stdout and "GPT-4o through the OpenAI API (paper model)" in listing.stdout


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 28 <= (retry_after_seconds({"retry-after": future}) or 0) <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


def test_the_window_halves_on_overload_and_grows_back() -> None:
    async def scenario() -> list[float]:
        endpoint = Endpoint("http://127.0.0.1:1/v1", clients=[], limit=8)
        pool = EndpointPool([endpoint])
        windows = []
        taken = [await pool.acquire() for _ in range(3)]
        pool.release(taken[0], ok=False, overload=True, hold=0.05)
        pool.release(taken[1], ok=False, overload=True, hold=0.05)  # same overload episode: no second cut
        windows.append(endpoint.window)
        pool.release(taken[2], ok=True)
        windows.append(endpoint.window)
        started = time.monotonic()
        await pool.acquire()  # held back until the hold ends
        windows.append(round(time.monotonic() - started, 2))
        return windows

    halved, grown, waited = asyncio.run(scenario())
    assert halved == 4.0 and grown == 4.25 and waited >= 0.04


def test_cost_is_estimated_for_the_openai_api_only() -> None:
    from medmim_eval.schema import PromptRecord

    completion = {  # a chat-completion body as the API sends it
        "id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "B"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 100_000, "total_tokens": 1_100_000}}
    api = OpenAIChatAdapter("gpt-4o", "gpt-4o", ["https://api.openai.com/v1"], api_key=FAKE_KEY, options={})
    local = OpenAIChatAdapter("local", "gpt-4o", ["http://127.0.0.1:1/v1"], api_key=None, options={})
    record = PromptRecord(n_images=0)
    result = api._result(completion, record, api.pool.endpoints[0])
    local._result(completion, record, local.pool.endpoints[0])
    asyncio.run(api.aclose())
    asyncio.run(local.aclose())
    price_in, price_out = PRICES_USD_PER_1M["gpt-4o"]
    assert api.cost_usd() == pytest.approx(price_in + price_out / 10) and local.cost_usd() is None
    assert result.tokens == {"prompt": 1_000_000, "completion": 100_000}
    assert any(n.startswith("estimated cost $") for n in result.sent.notes)  # type: ignore[union-attr]
    assert "cost" not in json.dumps(api.fingerprint()) and FAKE_KEY not in json.dumps(api.fingerprint())
    assert api.capabilities.max_concurrency == 16  # the default for an endpoint off this machine


# --- the real MIM-RAD task ----------------------------------------------------------------------

@pytest.mark.slow
def test_real_mim_rad_through_the_server(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeOpenAIServer() as srv:
        spec = f"openai:test-model,base_url={srv.url},concurrency=32,max_side=1024"  # 69 of its 285 images are larger
        result = run_cli("run", "--models", spec, "--tasks", "held-out-rad",
                         "--output", str(out), "--data-dir", str(shared_data), "--quiet")
        assert result.returncode == 0, result.stderr
        requests = srv.chat_requests()
        assert srv.max_in_flight > 1
    records = [SampleRecord.model_validate(r) for r in _records(out)]
    answered = {r.key: r for r in records}
    assert len(answered) == 366 and len(requests) == 366
    assert all(r.done and r.sent and r.sent.n_images == r.n_images == len(r.sent.image_sizes) for r in answered.values())
    assert all(max(max(size) for size in r.sent.image_sizes) <= 1024 for r in answered.values())  # type: ignore[union-attr]
    resized = [r for r in answered.values() if any("resized" in n for n in r.sent.notes)]  # type: ignore[union-attr]
    assert resized and len(resized) < len(answered)
    closed = [r for r in answered.values() if r.kind == "closed"]
    assert len(closed) == 293 and all(r.extracted == "A" for r in closed)
    originals = {i["sha256"] for req in requests for i in req["images"] if i["mime"] == "image/jpeg" and max(i["size"]) < 1024}
    folder = shared_data / "vqa-rad"
    files = {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.jp*g")}
    assert originals and originals <= files  # small images arrived byte-identical to the files

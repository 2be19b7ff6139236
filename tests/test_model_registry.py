"""The paper models' registry entries, launch flags, chat templates, prerequisite checks and the
server supervisor's failure paths. Fast: no vLLM engine starts here (see test_vllm_integration)."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from test_vllm_integration import group_alive

from medmim_eval.adapters.vllm import model_registry as registry
from medmim_eval.adapters.vllm.adapter import check_vllm, remote_vllm
from medmim_eval.adapters.vllm.server import LaunchSpec, ServerProcess, has_vllm, launch_env
from medmim_eval.errors import MedmimError
from medmim_eval.plugins import create_plugin_host
from medmim_eval.run_setup import route_for

PAPER_MODELS = {"internvl2-8b", "mantis-8b", "mantis-8b-idefics2", "llava-med-7b", "mim-llava-med",
                "med-mantis"}


def _checkpoint(folder: Path, architecture: str = "LlavaForConditionalGeneration") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "llava"}))
    return folder


@pytest.fixture
def python_with_vllm(tmp_path: Path) -> str:
    """A python executable whose environment has a (stub) ``vllm`` package, for the cheap check only."""
    site = tmp_path / "site"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "__init__.py").write_text("")
    wrapper = tmp_path / "python-with-vllm"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


IN_PROCESS_ROUTES = {"mantis-8b": "hf-llava:{weights},format=mantis_llama3",
                     "med-mantis": "hf-llava:{weights},format=mantis_llama3",
                     "llava-med-7b": "hf-llava:{weights},format=llava_med_mistral",
                     "mim-llava-med": "hf-llava:{weights},format=llava_med_mistral"}


def test_paper_models_try_vllm_first_then_in_process() -> None:
    host = create_plugin_host()
    assert PAPER_MODELS <= set(host.models.names())
    for name in PAPER_MODELS:
        entry = host.models.get(name)
        assert entry.paper
        served = tuple(route for route in entry.routes if route.startswith("vllm:{weights}"))
        assert entry.routes[: len(served)] == served, entry.routes  # served routes come first
    for name, route in IN_PROCESS_ROUTES.items():
        assert route in host.models.get(name).routes[1:], (name, host.models.get(name).routes)
    assert host.models.get("mantis-8b-idefics2").routes == ("hf-idefics2:{weights}",)  # vLLM has no Idefics2
    assert host.models.get("internvl2-8b").weights == "OpenGVLab/InternVL2-8B"
    assert host.models.get("llava-med-7b").weights is None  # never the original-format hub checkpoint
    assert {"vllm", "vllm-offline"} <= set(host.adapters.names())


def test_launch_flags_per_model() -> None:
    internvl = registry.server_args(registry.engine_settings("OpenGVLab/InternVL2-8B", {}))
    assert "--trust-remote-code" in internvl
    assert internvl[internvl.index("--limit-mm-per-prompt") + 1] == '{"image": 3}'
    assert internvl[internvl.index("--max-model-len") + 1] == "16384"

    mantis = registry.server_args(registry.engine_settings("/w/med-mantis", {"preset": "med-mantis", "tp": "2", "dp": "4"}))
    overrides = json.loads(mantis[mantis.index("--hf-overrides") + 1])
    assert overrides == {"architectures": ["LlavaForConditionalGeneration"]}
    assert Path(mantis[mantis.index("--chat-template") + 1]).name == "mantis_llama3.jinja"
    assert mantis[mantis.index("--tensor-parallel-size") + 1] == "2"
    assert mantis[mantis.index("--data-parallel-size") + 1] == "4"
    assert "--trust-remote-code" not in mantis

    generic = registry.server_args(registry.engine_settings("/w/x", {"max_images": "4", "enforce_eager": "1"}))
    assert generic == ["--limit-mm-per-prompt", '{"image": 4}', "--enforce-eager"]
    with pytest.raises(MedmimError, match="unknown preset"):
        registry.engine_settings("/w/x", {"preset": "nope"})


def _render(template: str, content: list[dict], bos: str = "<s>", eos: str = "</s>") -> str:
    pytest.importorskip("jinja2")
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # As transformers renders chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    source = registry.bundled_template(template).read_text(encoding="utf-8")
    return env.from_string(source).render(messages=[{"role": "user", "content": content}], bos_token=bos,
                                          eos_token=eos, add_generation_prompt=True)


CONTENT = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Which scan is newer?\nA: first\nB: second"}]


def test_mantis_template_renders_the_mantis_interleaved_format() -> None:
    text = _render("mantis_llama3", CONTENT, bos="<|begin_of_text|>")
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate chatbot who always responds in pirate speak!<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\n"
                    "(image 1: <Image><image></Image>)(image 2: <Image><image></Image>)"
                    "Which scan is newer?\nA: first\nB: second<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # Images keep their place between text parts.
    middle = _render("mantis_llama3", [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " and "},
                                       {"type": "image"}])
    assert "Compare (image 1: <Image><image></Image>) and (image 2: <Image><image></Image>)<|eot_id|>" in middle


def test_llava_med_and_internvl_templates() -> None:
    expected = "<s>[INST] <image>\n<image>\nWhich scan is newer?\nA: first\nB: second [/INST]"
    assert _render("llava_med_mistral", CONTENT) == expected
    internvl = _render("internvl2_internlm2", CONTENT)
    assert internvl.startswith("<s><|im_start|>system\n")
    # internlm2-chat has no newline after <|im_end|> (tests/parity checks it against InternVL2's code).
    assert internvl.endswith("助手。<|im_end|><|im_start|>user\nImage-1: <image>\nImage-2: <image>\nWhich scan is newer?"
                             "\nA: first\nB: second<|im_end|><|im_start|>assistant\n")
    with pytest.raises(MedmimError, match="no bundled chat template"):
        registry.bundled_template("nope")


def test_check_names_the_fix_when_vllm_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    folder = _checkpoint(tmp_path / "med-mantis")
    if has_vllm(sys.executable):
        pytest.skip("this python has vllm")
    reason = check_vllm(str(folder), {})
    assert reason and "pip install vllm on a GPU host" in reason and "MEDMIM_VLLM_PYTHON" in reason and "base_url=" in reason
    assert "is not an executable" in (check_vllm(str(folder), {"launcher": str(tmp_path / "nope")}) or "")
    assert check_vllm(str(tmp_path / "missing"), {}) == f"no model folder {tmp_path / 'missing'}"
    # Attaching needs no local vLLM; the URL is still checked.
    assert check_vllm("tiny", {"base_url": "http://127.0.0.1:8000/v1"}) is None
    assert "not an http(s) URL" in (check_vllm("tiny", {"base_url": "ftp://x"}) or "")
    # Launch options would be silently ignored by a running server: refused, with the fix.
    url = "http://127.0.0.1:8000/v1"
    reason = check_vllm("tiny", {"base_url": url, "max_model_len": "4096", "env.VLLM_CPU_KVCACHE_SPACE": "2"})
    assert reason and "env.VLLM_CPU_KVCACHE_SPACE, max_model_len only shape(s) a server medmim-eval launches" in reason
    assert "medmim-eval serve -o KEY=VALUE" in reason
    assert check_vllm("tiny", {"base_url": url, "max_images": "2", "served_name": "t", "timeout": "30"}) is None


def test_check_passes_with_a_launcher_that_has_vllm(tmp_path: Path, python_with_vllm: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    folder = _checkpoint(tmp_path / "med-mantis")
    assert check_vllm(str(folder), {"launcher": python_with_vllm}) is None
    monkeypatch.setenv("MEDMIM_VLLM_PYTHON", python_with_vllm)
    assert check_vllm(str(folder), {}) is None
    original = _checkpoint(tmp_path / "llava-med", "LlavaMistralForCausalLM")
    assert "HF-format" in (check_vllm(str(original), {}) or "")


def test_route_for_uses_weights_and_reports_every_reason(tmp_path: Path, python_with_vllm: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    host = create_plugin_host()
    route, reason = route_for(host.models.get("med-mantis"), host)
    assert route is None and "no weights" in reason and "MEDMIM_WEIGHTS_MED_MANTIS" in reason
    folder = _checkpoint(tmp_path / "med-mantis")
    monkeypatch.setenv("MEDMIM_WEIGHTS_MED_MANTIS", str(folder))
    monkeypatch.setenv("MEDMIM_VLLM_PYTHON", python_with_vllm)
    route, reason = route_for(host.models.get("med-mantis"), host)
    assert route is not None, reason
    assert (route.adapter, route.target) == ("vllm", str(folder))
    assert route.option_dict == {"preset": "med-mantis", "label": "med-mantis"}
    route, reason = route_for(host.models.get("mantis-8b-idefics2"), host)
    assert route is None and reason.startswith("hf-idefics2: no weights") and "MEDMIM_WEIGHTS_MANTIS_8B_IDEFICS2" in reason


def test_models_all_runs_the_baselines_and_lists_each_unavailable_model(tmp_path: Path) -> None:
    pytest.importorskip("openai")
    mantis = _checkpoint(tmp_path / "weights" / "med-mantis")
    original = _checkpoint(tmp_path / "weights" / "llava-med-7b", "LlavaMistralForCausalLM")
    result = run_cli("run", "--models", "all", "--tasks", "synth-comparison:closed", "--limit", "2", "--output",
                     str(tmp_path / "run"), "--quiet",
                     env={"MEDMIM_WEIGHTS_DIR": str(mantis.parent), "MEDMIM_VLLM_PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    skipped = {line.split("'")[1]: line for line in result.stderr.splitlines() if line.startswith("skipping model")}
    assert PAPER_MODELS <= set(skipped)
    assert "vllm is not installed for" in skipped["med-mantis"] and "base_url=" in skipped["med-mantis"]
    assert str(original) in skipped["llava-med-7b"] and "HF-format" in skipped["llava-med-7b"]
    assert "no weights" in skipped["internvl2-8b"]
    models = {json.loads(line)["model"] for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()}
    assert models == {"random", "majority", "longest-option", "shortest-option", "question-overlap"}


def test_registering_imports_no_backend() -> None:
    code = ("import sys\nfrom medmim_eval.plugins import create_plugin_host\nhost = create_plugin_host()\n"
            "host.adapters.get('vllm').missing_prerequisite('/nowhere', {})\n"
            "print(sorted(m for m in ('vllm', 'openai', 'torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_remote_only_when_attached() -> None:
    assert remote_vllm("/models/x", {}) is None
    assert remote_vllm("x", {"base_url": "http://127.0.0.1:8000/v1"}) is None
    assert remote_vllm("x", {"base_url": "http://gpu-node-3:8000/v1"}) == "gpu-node-3"


def test_launch_env_from_environment_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDMIM_VLLM_ENV", "VLLM_HOST_IP=127.0.0.1 VLLM_CPU_KVCACHE_SPACE=1")
    assert launch_env({"env.VLLM_CPU_KVCACHE_SPACE": "4"}) == {"VLLM_HOST_IP": "127.0.0.1", "VLLM_CPU_KVCACHE_SPACE": "4"}
    monkeypatch.setenv("MEDMIM_VLLM_ENV", "oops")
    with pytest.raises(MedmimError, match="NAME=VALUE"):
        launch_env({})


def _fake_vllm(tmp_path: Path, body: str) -> dict[str, str]:
    """A ``vllm.entrypoints.openai.api_server`` module doing ``body``: a stand-in server process
    for the supervisor's failure paths (it answers no request)."""
    module = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    module.mkdir(parents=True)
    for folder in (module, module.parent, module.parent.parent):
        (folder / "__init__.py").write_text("")
    (module / "api_server.py").write_text(body)
    return {"PYTHONPATH": str(tmp_path / "fake")}


def test_a_server_that_dies_at_start_up_reports_its_log(tmp_path: Path) -> None:
    env = _fake_vllm(tmp_path, "import sys\nprint('Model architectures FooForCausalLM are not supported')\nsys.exit(3)\n")
    spec = LaunchSpec(model="/m", served_name="m", env=env, log_path=tmp_path / "server.log", startup_timeout=30)
    server = ServerProcess(spec).start()
    with pytest.raises(MedmimError) as info:
        server.wait_healthy()
    message = str(info.value)
    assert "exited during start-up" in message and "FooForCausalLM" in message and str(tmp_path / "server.log") in message
    assert "exited with code 3" in message  # the supervisor's line


def test_a_server_that_never_gets_healthy_is_killed_with_its_group(tmp_path: Path) -> None:
    body = ("import signal, subprocess, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "time.sleep(600)'])\nprint('loading...', flush=True)\ntime.sleep(600)\n")
    spec = LaunchSpec(model="/m", served_name="m", env=_fake_vllm(tmp_path, body), log_path=tmp_path / "server.log",
                      startup_timeout=3, stop_grace=1)
    server = ServerProcess(spec).start()
    pgid = server.pgid
    assert pgid is not None
    started = time.monotonic()
    with pytest.raises(MedmimError, match="not healthy after 3 s"):
        server.wait_healthy()
    assert time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid), "the server ignored SIGTERM, its group must be SIGKILLed"
    assert "loading..." in (tmp_path / "server.log").read_text()
    server.stop()  # idempotent


def test_serve_resolves_a_named_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_with_vllm: str) -> None:
    pytest.importorskip("openai")
    from medmim_eval.adapters.vllm.serve_cmd import resolve_target

    folder = _checkpoint(tmp_path / "internvl")
    monkeypatch.setenv("MEDMIM_WEIGHTS_INTERNVL2_8B", str(folder))
    monkeypatch.setenv("MEDMIM_VLLM_PYTHON", python_with_vllm)
    host = create_plugin_host()
    target, options = resolve_target("internvl2-8b", {"tp": "2"}, host)
    assert target == str(folder) and options["preset"] == "internvl2-8b" and options["tp"] == "2"
    assert resolve_target("/m/x,max_images=2", {}, host) == ("/m/x", {"max_images": "2"})
    assert resolve_target("vllm:org/model", {"tp": "4"}, host) == ("org/model", {"tp": "4"})


def test_named_models_resolve_to_in_process_routes_when_weights_exist(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from tiny_models import tiny_idefics2, tiny_llava_clip_mistral

    from medmim_eval.adapter import parse_model_specs
    from medmim_eval.run_setup import resolve_models

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "Mantis-8B-Idefics2").symlink_to(tiny_idefics2())  # the hub id's last part
    (weights / "llava-med-7b").symlink_to(tiny_llava_clip_mistral())
    monkeypatch.setenv("MEDMIM_WEIGHTS_DIR", str(weights))
    host = create_plugin_host()
    [(spec, entry)], unavailable = resolve_models(parse_model_specs("mantis-8b-idefics2,batch=2"), host)
    assert (spec.adapter, spec.target, entry.name) == ("hf-idefics2", str(weights / "Mantis-8B-Idefics2"), "hf-idefics2")
    assert spec.option_dict == {"batch": "2", "label": "mantis-8b-idefics2"} and unavailable == []
    if has_vllm(sys.executable):
        return  # the vLLM route comes first where vLLM is installed
    monkeypatch.setenv("MEDMIM_VLLM_PYTHON", sys.executable)
    [(spec, _)], _ = resolve_models(parse_model_specs("llava-med-7b"), host)
    assert (spec.adapter, spec.target) == ("hf-llava", str(weights / "llava-med-7b"))
    assert spec.option_dict == {"format": "llava_med_mistral", "label": "llava-med-7b"}

"""Adapter options declared as data on the entry: validated by the core before any model loads,
listed by ``list adapters --options``, and the single source of each in-process family's checks."""
from __future__ import annotations

import pytest
from conftest import run_cli

from medmim_eval.adapter_options import AdapterOption, options_problem
from medmim_eval.plugins import create_plugin_host
from medmim_eval.registry import AdapterEntry

DECLARED = (AdapterOption("batch", "int", minimum=1), AdapterOption("mode", "choice", choices=("a", "b")),
            AdapterOption("split", "bool"), AdapterOption("env.*"), AdapterOption("path"))


@pytest.mark.parametrize("options,expected", [
    ({}, None),
    ({"batch": "4", "mode": "a", "split": "1", "env.HOME": "/x", "path": "anything", "label": "mine"}, None),
    ({"bacth": "4"}, "unknown option(s) bacth; demo knows batch, env.*, label, mode, path, split"),
    ({"batch": "0"}, "demo option batch='0' must be a positive integer"),
    ({"batch": "two"}, "demo option batch='two' must be a positive integer"),
    ({"mode": "c"}, "demo mode='c': use a or b"),
    ({"split": "yes"}, "demo split='yes': use 0 or 1"),
    ({"envy": "1"}, "unknown option(s) envy; demo knows batch, env.*, label, mode, path, split"),
])
def test_declared_options_are_checked_by_the_core(options: dict[str, str], expected: str | None) -> None:
    assert options_problem("demo", DECLARED, options) == expected


def test_a_bad_declaration_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        AdapterOption("x", "list")
    with pytest.raises(ValueError, match="choices"):
        AdapterOption("x", "choice")


def test_an_entry_without_declared_options_leaves_them_to_its_check() -> None:
    entry = AdapterEntry(name="third-party", description="", factory=lambda *a: None)
    assert entry.option_problem({"anything": "goes"}) is None
    declared = AdapterEntry(name="third-party", description="", factory=lambda *a: None, options=DECLARED)
    assert declared.option_problem({"anything": "goes"}).startswith("unknown option(s) anything")


@pytest.mark.parametrize("name", ["hf-llava", "hf-idefics2", "hf-internvl", "hf-deepseek-vl", "med-flamingo",
                                  "random", "majority", "longest-option", "openai", "vllm", "vllm-offline"])
def test_built_in_families_declare_their_options_and_check_with_them(name: str) -> None:
    entry = create_plugin_host().adapters.get(name)
    assert entry.options is not None
    for option in entry.options:
        assert option.help or option.kind == "str", (name, option.name)
    problem = entry.option_problem({"definitely_not_an_option": "1"})
    assert problem and "definitely_not_an_option" in problem and name in problem


def test_run_refuses_an_unknown_option_before_any_model_loads(tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    result = run_cli("run", "-m", "random,sed=1", "-t", "synth-temporal:closed", "--limit", "2", "-o", str(out), "-q")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: model 'random': unknown option(s) sed; random knows label, seed"
    assert not (out / "samples.jsonl").exists()
    bad = run_cli("run", "-m", "random,seed=x", "-t", "synth-temporal:closed", "--limit", "2", "-o", str(out), "-q")
    assert bad.returncode == 2 and "seed='x' must be an integer" in bad.stderr


def test_list_adapters_options_shows_every_declared_option() -> None:
    result = run_cli("list", "adapters", "--options")
    assert result.returncode == 0, result.stderr
    host = create_plugin_host()
    for name in host.adapters:
        entry = host.adapters.get(name)
        block = result.stdout.split(f"  {name} ", 1)[1].split("\n  ", 2)
        text = "\n".join(block[:2]) if entry.options is None else result.stdout.split(f"  {name} ", 1)[1]
        if entry.options is None:
            assert "options: not declared" in text, name
            continue
        for option in entry.options:
            assert f"{option.name}=" in text, (name, option.name)
    assert "format=mantis_llama3|llava_med_mistral" in result.stdout
    assert "batch=INT  samples per forward pass (default: 8)" in result.stdout


def test_the_openai_declaration_covers_exactly_what_its_parser_reads() -> None:
    from dataclasses import fields

    from medmim_eval.adapters.openai.plugin import KNOWN_OPTIONS, ChatOptions

    assert KNOWN_OPTIONS == {"base_url", "api_key_env", "label", *(f.name for f in fields(ChatOptions))}


def test_a_key_in_the_spec_gets_the_specific_message_not_unknown_option(tmp_path) -> None:  # noqa: ANN001
    result = run_cli("run", "-m", "openai:m,base_url=http://127.0.0.1:9/v1,api_key=sk-secret", "-t",
                     "synth-temporal:closed", "--limit", "1", "-o", str(tmp_path / "r"), "-q")
    assert result.returncode == 2 and "never put the API key in the model spec" in result.stderr
    assert "sk-secret" not in result.stderr


def _keys_read(path, only: tuple[str, ...] = ()) -> set[str]:  # noqa: ANN001
    """The option keys a module (or only its functions named in ``only``) reads: ``options.get("K")``,
    ``options["K"]``, ``_int(options, "K", ...)``, ``_flag(options, "K")``, and ``key.startswith("P")``
    prefixes as ``P*``."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in only] if only else [tree]
    keys: set[str] = set()
    for node in (n for root in roots for n in ast.walk(root)):
        if isinstance(node, ast.Call):
            func = node.func
            args = node.args
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "options" \
                    and func.attr == "get" and args and isinstance(args[0], ast.Constant):
                keys.add(args[0].value)
            elif isinstance(func, ast.Name) and func.id in ("_int", "_flag") and len(args) > 1 \
                    and isinstance(args[1], ast.Constant):
                keys.add(args[1].value)
            elif isinstance(func, ast.Attribute) and func.attr == "startswith" and isinstance(func.value, ast.Name) \
                    and func.value.id == "key" and args and isinstance(args[0], ast.Constant):
                keys.add(args[0].value + "*")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "options" \
                and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
    return keys


def test_the_vllm_declarations_cover_exactly_what_the_vllm_code_reads() -> None:
    """A key the code reads but does not declare would be refused as unknown; one declared but never
    read would be accepted and ignored. Both directions are checked, per adapter."""
    from dataclasses import fields
    from pathlib import Path

    import medmim_eval.adapters.vllm as package
    from medmim_eval.adapters.openai.plugin import ChatOptions
    from medmim_eval.adapters.vllm.options import OFFLINE_OPTIONS, SERVE_OPTIONS, VLLM_OPTIONS

    folder = Path(package.__file__).parent
    engine = _keys_read(folder / "model_registry.py", ("preset_for", "chat_template_path", "engine_settings")) | \
        _keys_read(folder / "server.py", ("launcher_python", "launch_env", "vllm_missing"))
    served = _keys_read(folder / "model_registry.py") | _keys_read(folder / "server.py") | \
        _keys_read(folder / "adapter.py") | {f.name for f in fields(ChatOptions)}
    offline = engine | _keys_read(folder / "offline.py")
    serve = engine | _keys_read(folder / "server.py", ("extra_args",)) | _keys_read(folder / "serve_cmd.py") | \
        _keys_read(folder / "adapter.py", ("default_served_name",))  # its --host and --port are flags
    assert "engine.*" in offline and "env.*" in engine and "batch" in offline  # the scan sees what it must
    for declared, read in ((VLLM_OPTIONS, served), (OFFLINE_OPTIONS, offline), (SERVE_OPTIONS, serve)):
        assert {o.name for o in declared} | {"label"} == read | {"label"}


@pytest.mark.parametrize("spec,expected", [
    ("vllm:/no/such/model,tpp=2", "unknown option(s) tpp; vllm knows args, backoff, base_url,"),
    ("vllm:/no/such/model,tp=0", "vllm option tp='0' must be a positive integer"),
    ("vllm:/no/such/model,preset=nope", "vllm preset='nope': use "),
    ("vllm-offline:/no/such/model,batch=0", "vllm-offline option batch='0' must be a positive integer"),
    ("vllm-offline:/no/such/model,base_url=http://127.0.0.1:1/v1", "unknown option(s) base_url; vllm-offline knows"),
])
def test_a_vllm_spec_with_a_wrong_option_is_refused_before_any_engine_starts(tmp_path, spec: str,  # noqa: ANN001
                                                                            expected: str) -> None:
    result = run_cli("run", "-m", spec, "-t", "synth-temporal:closed", "--limit", "1", "-o", str(tmp_path / "r"), "-q")
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "r" / "samples.jsonl").exists()


def test_serve_refuses_an_unknown_launch_option_at_once(tmp_path) -> None:  # noqa: ANN001
    result = run_cli("serve", str(tmp_path), "-o", "concurrency=4")
    assert result.returncode != 0
    assert "unknown option(s) concurrency; serve knows" in result.stderr and "served_name" in result.stderr

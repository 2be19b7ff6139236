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
                                  "random", "majority", "longest-option"])
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

"""Adapters that break the adapter contract: said at once, in one line naming the plugin and the
adapter, never recorded per sample, never retried and never offered a rerun."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

PLUGIN = '''
from medmim_eval.adapter import Capabilities, GenerationResult
from medmim_eval.hookspecs import hookimpl
from medmim_eval.registry import AdapterEntry


class Broken:
    capabilities = Capabilities(batch_size=2)

    def __init__(self, mode):
        self.model_id, self.mode = "broken", mode

    def fingerprint(self):
        return {"mode": self.mode}

    async def generate(self, requests):
        if self.mode == "short":
            return [GenerationResult("A")] * (len(requests) - 1)
        if self.mode == "str":
            return ["A" for _ in requests]
        return [GenerationResult("A") for _ in requests]

    async def aclose(self):
        pass


class NoClose:
    capabilities = Capabilities()
    model_id = "noclose"

    def fingerprint(self):
        return {}

    async def generate(self, requests):
        return [GenerationResult("A") for _ in requests]


@hookimpl
def register_adapters(register):
    register(AdapterEntry(name="broken", description="breaks the contract",
                          factory=lambda target, options, context: Broken(options.get("mode", "ok"))))
    register(AdapterEntry(name="noclose", description="has no aclose",
                          factory=lambda target, options, context: NoClose()))
'''


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A plugin distribution on a folder put on PYTHONPATH (its entry point found like an installed one)."""
    site = tmp_path / "site"
    (site / "contract_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "contract_plugin.py").write_text(PLUGIN)
    (site / "contract_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: contract-plugin\nVersion: 0.1\n")
    (site / "contract_plugin-0.1.dist-info" / "entry_points.txt").write_text("[medmim_eval]\ncontract = contract_plugin\n")
    return site


def _run(site: Path, tmp_path: Path, models: str) -> tuple[object, Path]:
    out = tmp_path / "out"
    result = run_cli("run", "--models", models, "--tasks", "synth-temporal:closed", "--limit", "4", "--no-cache",
                     "--quiet", "--output", str(out), pythonpath=[site])
    return result, out


def _records(out: Path) -> list[dict]:
    path = out / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("mode, said", [("short", "generate returned 1 result(s) for 2 request(s)"),
                                        ("str", "generate returned a str for request 1")])
def test_a_wrong_generate_result_is_a_contract_error_not_a_sample_error(site: Path, tmp_path: Path, mode: str,
                                                                        said: str) -> None:
    result, out = _run(site, tmp_path, f"broken,mode={mode},random")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "contract error" in line]
    assert lines and all("plugin 'contract', adapter 'broken'" in line and said in line for line in lines), result.stderr
    assert "rerun the same command" not in result.stderr and "rerunning cannot help" in result.stderr
    assert "Traceback" not in result.stderr
    records = _records(out)
    assert not [r for r in records if r["model"] == "broken"]  # nothing recorded, so nothing retried
    assert len([r for r in records if r["model"] == "random"]) == 4  # the other model still ran


def test_an_adapter_without_aclose_is_refused_at_once_in_one_line(site: Path, tmp_path: Path) -> None:
    result, out = _run(site, tmp_path, "noclose")
    assert result.returncode != 0
    assert ("contract error: plugin 'contract', adapter 'noclose': the adapter its factory returned has no aclose() "
            "method") in result.stderr
    assert "Traceback" not in result.stderr and "rerun the same command" not in result.stderr
    assert _records(out) == []


def test_a_sound_adapter_of_the_same_plugin_runs(site: Path, tmp_path: Path) -> None:
    """The premise of the two tests above: the plugin loads and its adapter works when it keeps the contract."""
    result, out = _run(site, tmp_path, "broken,mode=ok")
    assert result.returncode == 0, result.stderr
    assert len(_records(out)) == 4 and "contract error" not in result.stderr


def test_contract_problem_names_each_missing_member() -> None:
    from medmim_eval.adapter import Capabilities, GenerationResult, contract_problem, result_problem

    class Full:
        capabilities = Capabilities()

        def fingerprint(self) -> dict:
            return {}

        async def generate(self, requests):  # type: ignore[no-untyped-def]
            return []

        async def aclose(self) -> None:
            pass

    assert contract_problem(Full()) is None
    for member in ("fingerprint", "generate", "aclose"):
        lacking = type("Lacking", (Full,), {member: None})()
        assert f"no {member}()" in (contract_problem(lacking) or "")
    assert "no capabilities" in (contract_problem(type("NoCaps", (Full,), {"capabilities": None})()) or "")
    assert result_problem([GenerationResult("A"), ValueError("x")], 2) is None
    assert result_problem("AB", 2) == "generate returned str, not a list of 2 result(s)"

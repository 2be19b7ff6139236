"""Model specs, the models file, --limit, and where the data directory comes from."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.adapter import ModelSpec, parse_model_specs
from medmim_eval.datadir import DataPaths
from medmim_eval.errors import MedmimError


def test_commas_split_models_but_key_value_pieces_stay_with_their_model() -> None:
    specs = parse_model_specs("random,openai:gpt-4o,base_url=http://127.0.0.1:8000/v1,max_tokens=5,hf-llava:/ckpt,dtype=bfloat16")
    assert specs == [
        ModelSpec("random"),
        ModelSpec("openai", "gpt-4o", (("base_url", "http://127.0.0.1:8000/v1"), ("max_tokens", "5"))),
        ModelSpec("hf-llava", "/ckpt", (("dtype", "bfloat16"),)),
    ]
    assert specs[1].model_id == "openai:gpt-4o"
    assert parse_model_specs("random,label=r2")[0].model_id == "r2"
    with pytest.raises(MedmimError, match="comes before any model"):
        parse_model_specs("seed=1,random")


def test_models_file_and_limit(tmp_path: Path) -> None:
    from test_plugins import _tiny_task

    items = [_tiny_task(tmp_path)]
    task = json.loads(items[0].read_text())
    task = task * 5
    items[0].write_text(json.dumps(task))
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - random\n  - {adapter: random, options: {seed: 7}, label: random-7}\n  - majority\n")
    out = tmp_path / "out"
    result = run_cli("run", "--models-file", str(models), "-t", str(items[0]), "-o", str(out), "--limit", "3", "-q")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["model"] for r in records}) == ["majority", "random", "random-7"]
    assert len(records) == 9  # three models x the first 3 samples
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m["id"]: m["fingerprint"].get("seed") for m in manifest["models"]} == {"random": 0, "random-7": 7, "majority": None}


def test_bad_models_file_is_one_clear_line(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - {target: x}\n")
    result = run_cli("run", "--models-file", str(models), "-t", "synth", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "models.yaml: model 1:" in result.stderr and "Traceback" not in result.stderr


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {tmp_path / 'from-config'}\npaths:\n  embed: {tmp_path / 'embed-elsewhere'}\n")
    monkeypatch.setenv("MEDMIM_CONFIG", str(config))
    paths = DataPaths.resolve()
    assert paths.root == tmp_path / "from-config" and paths.origin["root"] == "config file"
    assert paths.folder("embed") == tmp_path / "embed-elsewhere"
    assert paths.image_root("vqa-rad") == tmp_path / "from-config" / "vqa-rad" / "VQA_RAD Image Folder"

    monkeypatch.setenv("MEDMIM_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("MEDMIM_ODIR_DIR", str(tmp_path / "odir-env"))
    paths = DataPaths.resolve()
    assert paths.root == tmp_path / "from-env" and paths.folder("odir") == tmp_path / "odir-env"
    assert paths.folder("embed") == tmp_path / "embed-elsewhere"  # the config's folder still applies

    paths = DataPaths.resolve(tmp_path / "from-flag", overrides={"odir": str(tmp_path / "odir-flag")})
    assert paths.root == tmp_path / "from-flag" and paths.folder("odir") == tmp_path / "odir-flag"
    assert paths.folder("lumiere") == tmp_path / "from-flag" / "lumiere"


def test_unreadable_config_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("data_dir: [unclosed\n")
    monkeypatch.setenv("MEDMIM_CONFIG", str(config))
    with pytest.raises(MedmimError, match="config.yaml: not valid YAML"):
        DataPaths.resolve()


def test_data_status_reports_presence_from_the_shared_data(shared_data: Path) -> None:
    result = run_cli("data", "status", "--data-dir", str(shared_data))
    assert result.returncode == 0
    assert "held-out-rad           366 items; images 285/285 present -> runnable" in result.stdout
    assert "held-out-odir          600 items; images 0/1200 present -> not runnable" in result.stdout
    assert "ms-cxr-t: MS-CXR-T + MIMIC-CXR-JPG, credentialed" in result.stdout


@pytest.fixture(scope="module")
def module_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("MEDMIM_", "XDG_"))}


def test_module_scoped_fixtures_never_see_the_users_cache(module_env: dict[str, str],
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """pytest sets module fixtures up before a test's own isolation: the session's covers them."""
    base = tmp_path_factory.getbasetemp()
    for name in ("MEDMIM_CACHE_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        assert Path(module_env[name]).is_relative_to(base), name
    assert module_env["MEDMIM_OPEN_METRICS"] == "bertscore.model=minilm"

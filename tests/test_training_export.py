"""The trained output folder is a checkpoint the evaluation routes load as they are: ``hf-llava:``,
``hf-idefics2:``, and the real vLLM CPU engine; LoRA is merged into it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from training_cases import lineage, synth_train
from vllm_cpu_tool import TOOL, cli_engine_env

pytest.importorskip("torch")
pytest.importorskip("accelerate")

QUICK = ("max_steps=3", "batch_size=2", "grad_accum=1", "save_steps=100", "lr=1e-3")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return list(synth_train(tmp_path_factory.mktemp("synth"), n_closed=3, n_open=1).values())


@pytest.fixture(scope="module")
def trained(data: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import tiny_llava

    out = tmp_path_factory.mktemp("trained") / "model"
    result = run_cli("train", "sft-llava", "--data", ",".join(map(str, data)), "--base", str(tiny_llava()),
                     "--output", str(out), "--quiet", *QUICK)
    assert result.returncode == 0, result.stderr
    return out


def answered(run: Path) -> list[dict]:
    """The latest record of each sample (a record may be rewritten once its open scores are in)."""
    latest = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest[record["key"]] = record
    return list(latest.values())


def test_the_output_runs_in_hf_llava_and_the_manifest_carries_the_lineage(trained: Path, data: list[Path],
                                                                            tmp_path: Path) -> None:
    config = json.loads((trained / "config.json").read_text())
    assert config["medmim_prompt_format"] == "mantis_llama3"
    from safetensors import safe_open

    with safe_open(str(trained / "model.safetensors"), "pt") as weights:
        vision = [k for k in weights.keys() if "vision_tower" in k]
    assert vision and all("vision_tower.vision_model." in k for k in vision)  # the layout vLLM loads
    run = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-llava:{trained}", "--tasks", str(data[0]), "--max-new-tokens", "4",
                     "--output", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    records = answered(run)
    assert len(records) == 4 and all(r["error"] is None and r["output"] is not None for r in records)
    manifest = json.loads((run / "manifest.json").read_text())
    assert json.dumps(lineage(trained)["data"]["files"]) in json.dumps(manifest)


def test_lora_trains_and_saves_a_merged_checkpoint(data: list[Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from tiny_models import tiny_llava

    base = tiny_llava()
    out = tmp_path / "lora"
    result = run_cli("train", "sft-llava", "--data", ",".join(map(str, data)), "--base", str(base), "--output",
                     str(out), "--quiet", *QUICK, "lora=true,lora_r=4,lora_alpha=8")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob("adapter_*")) and lineage(out)["hyperparameters"]["lora"]
    merged, original = load_file(str(out / "model.safetensors")), load_file(str(base / "model.safetensors"))
    assert set(merged) == set(original) and not any("lora" in k for k in merged)

    def moved(part: str) -> float:
        return max(float((merged[k].float() - original[k].float()).abs().max()) for k in merged if part in k)

    assert moved("q_proj") > 1e-4 and moved("multi_modal_projector") > 1e-4
    assert moved("vision_tower") == 0.0 and moved("embed_tokens") == 0.0  # frozen / not adapted
    run = tmp_path / "run"
    evaluated = run_cli("run", "--models", f"hf-llava:{out}", "--tasks", str(data[1]), "--limit", "1",
                        "--max-new-tokens", "4", "--output", str(run), "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr


def test_sft_idefics2_output_runs_in_hf_idefics2(data: list[Path], tmp_path: Path) -> None:
    from tiny_models import tiny_idefics2

    out = tmp_path / "idefics2"
    result = run_cli("train", "sft-idefics2", "--data", ",".join(map(str, data)), "--base", str(tiny_idefics2()),
                     "--output", str(out), "--quiet", *QUICK)
    assert result.returncode == 0, result.stderr
    assert lineage(out)["prompt_format"] == "idefics2" and lineage(out)["steps"] == 3
    run = tmp_path / "run"
    evaluated = run_cli("run", "--models", f"hf-idefics2:{out}", "--tasks", str(data[3]), "--limit", "1",
                        "--max-new-tokens", "4", "--output", str(run), "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert {r["n_images"] for r in answered(run)} <= {2, 3} and all(r["error"] is None for r in answered(run))


@pytest.mark.slow
def test_the_output_runs_in_the_vllm_cpu_engine(trained: Path, data: list[Path], tmp_path: Path) -> None:
    if not TOOL.is_file():
        pytest.skip(f"{TOOL} is absent; CI clones the repository with shared/ beside it")
    # The engine core in the worker's process: a faster start.
    engine_env = cli_engine_env(TOOL, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    run = tmp_path / "run"
    spec = f"vllm-offline:{trained},enforce_eager=1,max_model_len=1024,chat_template=mantis_llama3,label=trained"
    result = run_cli("run", "--models", spec, "--tasks", str(data[0]), "--max-new-tokens", "4", "--output", str(run),
                     "--quiet", env=engine_env,
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = answered(run)
    assert len(records) == 4 and all(r["error"] is None and r["tokens"]["prompt"] > 64 * r["n_images"]
                                     for r in records)

"""The ``hf-deepseek-vl`` adapter with transformers' DeepSeek-VL classes on tiny converted checkpoints."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from hf_cases import (assert_image_order_changes_logits, assert_mixed_batch_matches_one_by_one, generate, image_task,
                      make_images, records_by_images, sample)

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationResult  # noqa: E402
from medmim_eval.adapters.hf.deepseek_vl.adapter import DeepseekVLAdapter, make_hf_deepseek_vl  # noqa: E402
from medmim_eval.adapters.hf.deepseek_vl.plugin import check_deepseek_vl  # noqa: E402
from medmim_eval.errors import MedmimError, MissingBackendError, TooManyImagesError  # noqa: E402
from medmim_eval.schema import ImagePart, Prompt, TextPart  # noqa: E402

SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content that "
          "the user provides, and assist the user with a variety of tasks using natural language.")
TAG = "<image_placeholder>"


@pytest.fixture(scope="session")
def checkpoints() -> dict[str, Path]:
    from tiny_models_deepseek import tiny_deepseek_vl, tiny_deepseek_vl_hybrid

    return {"deepseek_vl": tiny_deepseek_vl(), "deepseek_vl_hybrid": tiny_deepseek_vl_hybrid()}


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_images(tmp_path_factory.mktemp("deepseek-images"))


@pytest.fixture(scope="session", params=["deepseek_vl", "deepseek_vl_hybrid"])
def adapter(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> DeepseekVLAdapter:
    return make_hf_deepseek_vl(str(checkpoints[request.param]), {"batch": "4"}, AdapterContext())


def test_the_prompt_is_the_deepseek_template_for_two_and_three_images(adapter: DeepseekVLAdapter,
                                                                       images: list[str]) -> None:
    two, loaded, record = adapter.prepare_sample(sample(images[:2]))
    assert two == f"{SYSTEM}\n\nUser: {TAG}{TAG}Which image is brightest?\nA: first\nB: second\n\nAssistant:"
    assert len(loaded) == 2 and record.n_images == 2 and record.image_order == [0, 1]
    parts: list[Any] = [TextPart(text="First visit: "), ImagePart(index=0, path=images[0]), TextPart(text=" then "),
                        ImagePart(index=1, path=images[1]), TextPart(text=", now "), ImagePart(index=2, path=images[2]),
                        TextPart(text=". Worse?")]
    three = sample(images[:3]).model_copy(update={"prompt": Prompt(parts=parts)})
    text = adapter.prepare_sample(three)[0]
    assert text == f"{SYSTEM}\n\nUser: First visit: {TAG} then {TAG}, now {TAG}. Worse?\n\nAssistant:"


def test_each_image_tag_becomes_the_image_tokens_after_a_bos(adapter: DeepseekVLAdapter, images: list[str]) -> None:
    from tiny_models_deepseek import BOS, TOKENS_PER_IMAGE

    backend = adapter.backend
    saved = json.loads((adapter.path / "processor_config.json").read_text())["image_processor"]
    assert not saved["image_processor_type"].endswith("Pil")  # as a hub checkpoint names it
    assert type(backend.processor.image_processor).__name__.endswith("ImageProcessorPil")  # no torchvision needed
    text, loaded, _ = adapter.prepare_sample(sample(images[:3]))
    ids = backend.encode([text], [loaded])["input_ids"][0]
    assert int((ids == backend.model.config.image_token_id).sum()) == 3 * TOKENS_PER_IMAGE
    assert int(ids[0]) == backend.tokenizer.convert_tokens_to_ids(BOS)


def test_swapping_the_images_changes_the_logits(adapter: DeepseekVLAdapter, images: list[str]) -> None:
    assert_image_order_changes_logits(adapter, images)


def test_a_mixed_batch_answers_as_one_by_one(adapter: DeepseekVLAdapter, images: list[str]) -> None:
    batch = [sample(images[:2], "a"), sample(images[:3], "b"), sample(images[1:3], "c"),
             sample(images[:3], "d", order=[2, 0, 1])]
    assert_mixed_batch_matches_one_by_one(adapter, batch)
    records = [r.sent for r in generate(adapter, batch) if isinstance(r, GenerationResult) and r.sent]
    assert [r.n_images for r in records] == [2, 3, 2, 3] and records[3].image_order == [2, 0, 1]
    assert records[0].image_sizes == [(64, 64), (64, 64)]


def test_too_many_images_is_an_error_not_a_truncation(adapter: DeepseekVLAdapter, images: list[str]) -> None:
    out = generate(adapter, [sample(images[:4], "four"), sample(images[:2], "two")])
    assert isinstance(out[0], TooManyImagesError) and (out[0].n_images, out[0].max_images) == (4, 3)
    assert adapter.model_id in str(out[0])
    assert isinstance(out[1], GenerationResult)


def test_a_stray_image_tag_in_the_question_is_refused(adapter: DeepseekVLAdapter, images: list[str]) -> None:
    out = generate(adapter, [sample(images[:2], text_first=f"Is {TAG} brighter? ")])
    assert isinstance(out[0], MedmimError) and "the prompt text itself contains" in str(out[0])


def test_dtype_and_device_map_options(checkpoints: dict[str, Path], images: list[str]) -> None:
    import torch

    bf16 = make_hf_deepseek_vl(str(checkpoints["deepseek_vl"]), {"dtype": "bf16", "device_map": "auto"},
                               AdapterContext())
    assert next(bf16.backend.model.parameters()).dtype == torch.bfloat16
    assert bf16.fingerprint()["dtype"] == "bfloat16" and bf16.placement.device_map == "auto"
    answer = generate(bf16, [sample(images[:2])], tokens=3)[0]
    assert isinstance(answer, GenerationResult) and answer.tokens["completion_tokens"] >= 1  # type: ignore[index]


def test_the_fingerprint_hashes_the_files_and_carries_the_lineage(checkpoints: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints["deepseek_vl"], folder)
    lineage = {"recipe": "sft-deepseek", "data_sha256": "abc"}
    (folder / "medmim_lineage.json").write_text(json.dumps(lineage))
    adapter = make_hf_deepseek_vl(str(folder), {}, AdapterContext())
    first = adapter.fingerprint()
    assert first["lineage"] == lineage and first["route"] == "native" and first["dtype"] == "float32"
    assert set(first["weights"]) == {"model.safetensors"} and len(first["config_sha256"]) == 64
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert adapter.fingerprint()["config_sha256"] != first["config_sha256"]


def _config_folder(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_prerequisites_name_the_fix(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    converted = str(checkpoints["deepseek_vl"])
    original = _config_folder(tmp_path / "original", {"model_type": "multi_modality",
                                                      "architectures": ["MultiModalityCausalLM"]})
    janus = _config_folder(tmp_path / "janus", {"model_type": "multi_modality", "gen_head_config": {}})
    llava = _config_folder(tmp_path / "llava", {"model_type": "llava"})
    cases = {
        str(tmp_path / "empty"): "no readable config.json",
        str(llava): "is not a DeepSeek-VL checkpoint (model_type 'llava'",
        str(janus): "is a Janus checkpoint",
    }
    for target, expected in cases.items():
        with pytest.raises(MedmimError, match=re.escape(expected)):
            make_hf_deepseek_vl(target, {}, AdapterContext())
    if importlib.util.find_spec("deepseek_vl") is None:
        reason = check_deepseek_vl(str(original), {})
        assert reason and "pip install git+https://github.com/deepseek-ai/DeepSeek-VL" in reason
        assert "deepseek-community/deepseek-vl-7b-chat" in reason and "empty placeholder" in reason
    assert "use a converted one" in (check_deepseek_vl(str(original), {"mode": "native"}) or "")
    assert "use mode=native" in (check_deepseek_vl(converted, {"mode": "package"}) or "")
    assert "mode='torch'" in (check_deepseek_vl(converted, {"mode": "torch"}) or "")
    assert "not both" in (check_deepseek_vl(converted, {"device": "cpu", "device_map": "auto"}) or "")
    assert "unknown option(s) tp" in (check_deepseek_vl(converted, {"tp": "2"}) or "")
    assert check_deepseek_vl(converted, {"dtype": "bf16", "batch": "2", "label": "x"}) is None


def test_missing_torch_names_the_extra(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingBackendError, match=r"pip install 'medmim-eval\[hf\]'"):
        make_hf_deepseek_vl(str(checkpoints["deepseek_vl"]), {}, AdapterContext())


def test_the_package_route_says_what_is_missing_when_deepseek_vl_does_not_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("deepseek_vl") is not None:
        pytest.skip("the deepseek_vl package is installed here")
    original = _config_folder(tmp_path / "original", {"model_type": "multi_modality"})
    real_find_spec = importlib.util.find_spec
    fake_spec = importlib.util.spec_from_loader("deepseek_vl", loader=None)
    # The check sees a deepseek_vl distribution, as a broken install would leave one.
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: fake_spec if name == "deepseek_vl" else real_find_spec(name, *args))
    with pytest.raises(MissingBackendError, match="the deepseek_vl package does not import .*github.com/deepseek-ai"):
        make_hf_deepseek_vl(str(original), {}, AdapterContext())


def test_run_answers_two_and_three_images_and_flags_a_fourth(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    task = image_task(tmp_path / "imgs", [2, 3, 4])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-deepseek-vl:{checkpoints['deepseek_vl_hybrid']},batch=4", "--tasks",
                     str(task), "--max-new-tokens", "4", "--output", str(out), "--quiet")
    assert "Traceback" not in result.stderr and "1 sample(s) not evaluated: more images" in result.stderr, result.stderr
    done = records_by_images(out)
    assert set(done) == {2, 3, 4}
    assert done[4]["error"]["type"] == "TooManyImagesError" and done[4]["output"] is None
    for n in (2, 3):
        record = done[n]
        assert record["error"] is None and record["output"] is not None
        assert record["sent"]["n_images"] == n and record["sent"]["image_order"] == list(range(n))
        assert record["sent"]["image_sizes"] == [[64, 64]] * n and record["sent"]["rendered_prompt_sha256"]
        assert record["tokens"]["prompt_tokens"] > n * 64


def test_the_named_paper_model_runs_from_its_weights_folder(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    task = image_task(tmp_path / "imgs", [2])
    out = tmp_path / "run"
    env = {"MEDMIM_WEIGHTS_DEEPSEEK_VL_7B": str(checkpoints["deepseek_vl_hybrid"])}
    result = run_cli("run", "--models", "deepseek-vl-7b", "--tasks", str(task), "--max-new-tokens", "2",
                     "--output", str(out), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert record["model"] == "deepseek-vl-7b" and record["error"] is None and record["sent"]["n_images"] == 2


def test_the_named_paper_model_says_why_it_cannot_run(tmp_path: Path) -> None:
    if importlib.util.find_spec("deepseek_vl") is not None:
        pytest.skip("the deepseek_vl package is installed here")
    original = _config_folder(tmp_path / "deepseek-vl-7b-chat", {"model_type": "multi_modality"})
    result = run_cli("list", env={"MEDMIM_WEIGHTS_DEEPSEEK_VL_7B": str(original)})
    assert result.returncode == 0, result.stderr
    line = result.stdout.split("deepseek-vl-7b ", 1)[1].split("\n  ")[1]
    assert "unavailable: hf-deepseek-vl:" in line and "install the deepseek_vl package" in line, line

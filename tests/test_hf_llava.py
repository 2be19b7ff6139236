"""The ``hf-llava`` adapter with the real transformers classes: the tiny SigLIP+Llama checkpoint (Mantis
-siglip layout) and the tiny CLIP+Mistral one (the LLaVA-Med v1.5 port layout)."""
from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import run_cli
from hf_cases import (QUESTION, assert_image_order_changes_logits, assert_mixed_batch_matches_one_by_one, generate,
                      image_task, make_images, records_by_images, sample)

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.llava import HFLlavaAdapter, make_hf_llava  # noqa: E402
from medmim_eval.errors import MedmimError, MissingBackendError, TooManyImagesError  # noqa: E402

TOKENS_PER_IMAGE = 64  # 64 x 64 px, patch 8: "full" (SigLIP) and "default" (CLIP, CLS dropped) alike


@pytest.fixture(scope="session")
def ckpt() -> Path:
    from tiny_models import tiny_llava

    return tiny_llava()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_images(tmp_path_factory.mktemp("hf-images"))


@pytest.fixture(scope="session")
def adapter(ckpt: Path) -> HFLlavaAdapter:
    return make_hf_llava(str(ckpt), {"format": "mantis_llama3", "batch": "4"}, AdapterContext())


def test_the_checkpoint_loads_and_the_prompt_is_the_mantis_format(adapter: HFLlavaAdapter, images: list[str]) -> None:
    text, loaded, record = adapter.prepare_sample(sample(images[:2]))
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate chatbot who always responds in pirate speak!<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\n"
                    "(image 1: <Image><image></Image>)(image 2: <Image><image></Image>)"
                    "Which image is brightest?\nA: first\nB: second\n"
                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert len(loaded) == 2 and record.n_images == 2 and record.image_order == [0, 1]
    ids = adapter.encode([text], [loaded])["input_ids"][0]
    assert int((ids == adapter.model.config.image_token_id).sum()) == 2 * TOKENS_PER_IMAGE
    assert adapter.fingerprint()["weights"] and adapter.fingerprint()["config_sha256"]


def test_image_order_changes_the_logits(adapter: HFLlavaAdapter, images: list[str]) -> None:
    assert_image_order_changes_logits(adapter, images)


def test_a_mixed_batch_answers_as_one_by_one(adapter: HFLlavaAdapter, images: list[str]) -> None:
    batch = [sample(images[:2], "a"), sample(images[:3], "b"), sample(images[1:3], "c"),
             sample(images[:3], "d", order=[2, 0, 1])]
    assert_mixed_batch_matches_one_by_one(adapter, batch)
    together = generate(adapter, batch, tokens=2)
    assert [r.sent.n_images for r in together] == [2, 3, 2, 3]  # type: ignore[union-attr]
    assert together[3].sent.image_order == [2, 0, 1]  # type: ignore[union-attr]


def test_too_many_images_is_an_error_not_a_truncation(adapter: HFLlavaAdapter, images: list[str]) -> None:
    out = generate(adapter, [sample(images[:4], "four"), sample(images[:2], "two")])
    assert isinstance(out[0], TooManyImagesError) and (out[0].n_images, out[0].max_images) == (4, 3)
    assert adapter.model_id in str(out[0]) and "nothing was sent" in str(out[0])
    assert isinstance(out[1], GenerationResult)


def test_llava_med_format_pads_to_square(ckpt: Path, images: list[str]) -> None:
    med = make_hf_llava(str(ckpt), {"format": "llava_med_mistral", "batch": "2"}, AdapterContext())
    text, loaded, record = med.prepare_sample(sample(images[1:3]))
    assert text == "[INST] <image>\n<image>\nWhich image is brightest?\nA: first\nB: second [/INST]"  # stripped, as model_vqa.py
    assert all(im.width == im.height == 56 or im.width == im.height == 48 for im in loaded)
    assert any("padded to" in note for note in record.notes)
    result = generate(med, [sample(images[1:3])], tokens=4)[0]
    assert isinstance(result, GenerationResult) and result.sent.image_sizes == [(64, 64), (64, 64)]  # type: ignore[union-attr]


def test_prerequisites_name_the_fix(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MedmimError, match="no config.json"):
        make_hf_llava(str(tmp_path), {}, AdapterContext())
    with pytest.raises(MedmimError, match="format='idefics2'"):
        make_hf_llava(str(ckpt), {"format": "idefics2"}, AdapterContext())
    with pytest.raises(MedmimError, match="unknown option"):
        make_hf_llava(str(ckpt), {"tp": "2"}, AdapterContext())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingBackendError, match=r"pip install 'medmim-eval\[hf\]'"):
        make_hf_llava(str(ckpt), {}, AdapterContext())


def test_run_answers_two_and_three_images_and_flags_a_fourth(ckpt: Path, tmp_path: Path) -> None:
    task = image_task(tmp_path / "imgs", [2, 3, 4])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-llava:{ckpt},format=mantis_llama3,batch=4", "--tasks", str(task),
                     "--max-new-tokens", "4", "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "1 sample(s) not evaluated: more images than the model accepts" in result.stderr
    done = records_by_images(out)
    assert set(done) == {2, 3, 4}
    assert done[4]["error"]["type"] == "TooManyImagesError" and done[4]["output"] is None
    assert "at most max_images=3" in done[4]["error"]["message"]
    for n in (2, 3):
        record = done[n]
        assert record["error"] is None and record["output"] is not None
        assert record["sent"]["n_images"] == n and record["sent"]["image_order"] == list(range(n))
        assert record["sent"]["image_sizes"] == [[64, 64]] * n and record["sent"]["rendered_prompt_sha256"]
        assert record["tokens"]["prompt_tokens"] > n * TOKENS_PER_IMAGE


def test_eos_ids_include_the_format_stop_token(adapter: HFLlavaAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    assert adapter.eos_ids == [adapter.tokenizer.eos_token_id]  # the tiny vocabulary has no <|eot_id|>
    monkeypatch.setattr(adapter.tokenizer, "get_vocab", lambda: {"<|eot_id|>": 7})
    assert adapter._eos_ids() == [adapter.tokenizer.eos_token_id, 7]


def test_default_format_follows_the_checkpoint(tmp_path: Path) -> None:
    from medmim_eval.adapters.hf.plugin import default_format

    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"model_type": "mistral"}}))
    assert default_format(tmp_path) == "llava_med_mistral"
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"model_type": "llama"}}))
    assert default_format(tmp_path) == "mantis_llama3"
    (tmp_path / "config.json").write_text(json.dumps({"medmim_prompt_format": "llava_med_mistral"}))
    assert default_format(tmp_path) == "llava_med_mistral"


def test_sampling_with_a_temperature_is_seeded(adapter: HFLlavaAdapter, images: list[str]) -> None:
    settings = GenerationSettings(max_new_tokens=8, temperature=0.7, seed=3)
    runs = [asyncio.run(adapter.generate([GenerationRequest(sample=sample(images[:2]), settings=settings)]))[0]
            for _ in range(2)]
    assert all(isinstance(r, GenerationResult) for r in runs) and runs[0].text == runs[1].text  # type: ignore[union-attr]


# --- the LLaVA-Med v1.5 layout: CLIP ("default" strategy, layer -2, CLS dropped) + Mistral ----------
@pytest.fixture(scope="session")
def clip_ckpt() -> Path:
    from tiny_models import tiny_llava_clip_mistral

    return tiny_llava_clip_mistral()


@pytest.fixture(scope="session")
def med(clip_ckpt: Path) -> HFLlavaAdapter:
    return make_hf_llava(str(clip_ckpt), {"batch": "4"}, AdapterContext())


def test_llava_med_port_gets_the_mistral_format_by_default(med: HFLlavaAdapter, images: list[str]) -> None:
    assert med.format.name == "llava_med_mistral"  # a Mistral text model implies it
    assert med.model.config.vision_feature_select_strategy == "default" and med.model.config.vision_feature_layer == -2
    text, loaded, record = med.prepare_sample(sample(images[:2]))
    assert text == "[INST] <image>\n<image>\nWhich image is brightest?\nA: first\nB: second [/INST]"
    # The checkpoint's chat template (the bundled LLaVA-Med one) renders BOS + the same string.
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": QUESTION}]}]
    assert med.processor.apply_chat_template(messages, add_generation_prompt=True) == "<s>" + text
    ids = med.encode([text], [loaded])["input_ids"][0].tolist()
    assert ids[0] == med.tokenizer.bos_token_id and ids.count(med.tokenizer.bos_token_id) == 1
    assert ids.count(med.model.config.image_token_id) == 2 * TOKENS_PER_IMAGE  # 65 CLIP tokens - CLS
    assert any("padded to 48x48" in note for note in record.notes)


def test_llava_med_port_renders_three_interleaved_images(med: HFLlavaAdapter, images: list[str]) -> None:
    text, loaded, record = med.prepare_sample(sample(images[:3], order=[1, 2, 0], text_first="Prior: "))
    assert text == "[INST] Prior: <image>\n<image>\n<image>\nWhich image is brightest?\nA: first\nB: second [/INST]"
    assert record.image_order == [1, 2, 0] and [im.size for im in loaded] == [(48, 48), (56, 56), (48, 48)]
    result = generate(med, [sample(images[:3], order=[1, 2, 0], text_first="Prior: ")], tokens=4)[0]
    assert isinstance(result, GenerationResult) and result.sent.image_sizes == [(64, 64)] * 3  # type: ignore[union-attr]
    assert result.tokens["prompt_tokens"] > 3 * TOKENS_PER_IMAGE  # type: ignore[index]


def test_llava_med_port_image_order_changes_the_logits(med: HFLlavaAdapter, images: list[str]) -> None:
    assert_image_order_changes_logits(med, images)


def test_llava_med_port_mixed_batch_answers_as_one_by_one(med: HFLlavaAdapter, images: list[str]) -> None:
    batch = [sample(images[:2], "a"), sample(images[:3], "b"), sample(images[1:3], "c"),
             sample(images[:3], "d", order=[2, 0, 1])]
    assert_mixed_batch_matches_one_by_one(med, batch)


# --- placement, identity ------------------------------------------------------------------------
def test_placement_bf16_on_the_local_rank_gpu_fp32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medmim_eval.adapters.hf.common import placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement(torch, {}) == placement(torch, {"dtype": "fp32"})
    assert (placement(torch, {}).device, placement(torch, {}).dtype) == ("cpu", torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU host
    monkeypatch.setenv("LOCAL_RANK", "3")  # as under accelerate launch / torchrun
    assert (placement(torch, {}).device, placement(torch, {}).dtype) == ("cuda:3", torch.bfloat16)
    assert placement(torch, {"device": "cuda:0", "dtype": "fp16"}).device == "cuda:0"
    assert placement(torch, {"device": "cuda:0", "dtype": "fp16"}).dtype == torch.float16
    monkeypatch.delenv("LOCAL_RANK")
    assert placement(torch, {}).device == "cuda" and placement(torch, {"device_map": "auto"}).device_map == "auto"


def test_device_map_auto_is_handed_to_from_pretrained(clip_ckpt: Path, images: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import LlavaForConditionalGeneration

    calls: list[dict[str, object]] = []
    real = LlavaForConditionalGeneration.from_pretrained.__func__  # type: ignore[attr-defined]

    def recording(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", classmethod(recording))
    spread = make_hf_llava(str(clip_ckpt), {"device_map": "auto"}, AdapterContext())
    assert calls and calls[-1]["device_map"] == "auto"
    assert str(spread.model.device) == "cpu"  # no GPU here: accelerate puts everything on the CPU
    assert isinstance(generate(spread, [sample(images[:2])], tokens=2)[0], GenerationResult)
    with pytest.raises(MedmimError, match="device_map='gpu': use auto"):
        make_hf_llava(str(clip_ckpt), {"device_map": "gpu"}, AdapterContext())


def _linked_copy(ckpt: Path, folder: Path) -> Path:
    folder.mkdir()
    for item in ckpt.iterdir():
        (folder / item.name).symlink_to(item)
    return folder


def test_fingerprint_carries_the_checkpoint_lineage(clip_ckpt: Path, tmp_path: Path) -> None:
    folder = _linked_copy(clip_ckpt, tmp_path / "mim-llava-med")
    lineage = {"recipe": "sft-llava", "base": str(clip_ckpt), "data_sha256": "ab" * 32, "steps": 100}
    (folder / "medmim_lineage.json").write_text(json.dumps(lineage))
    tuned = make_hf_llava(str(folder), {}, AdapterContext())
    fingerprint = tuned.fingerprint()
    assert fingerprint["lineage"] == lineage and fingerprint["weights"] and fingerprint["processor_files"]
    assert "lineage" not in make_hf_llava(str(clip_ckpt), {}, AdapterContext()).fingerprint()
    (folder / "medmim_lineage.json").write_text("{not json")
    with pytest.raises(MedmimError, match=r"medmim_lineage.json: not readable JSON .*restore .* or delete it"):
        make_hf_llava(str(folder), {}, AdapterContext())


def test_the_original_llava_med_checkpoint_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlavaMistralForCausalLM"]}))
    with pytest.raises(MedmimError, match="HF-format LlavaForConditionalGeneration port"):
        make_hf_llava(str(tmp_path), {}, AdapterContext())

"""The from-scratch tiny LLaVA base (``training_recipes/tiny_model.py``): built on synthetic-suite text,
it loads in ``hf-llava`` unchanged, speaks ``mantis_llama3`` and is laid out for vLLM."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.llava import HFLlavaAdapter, make_hf_llava  # noqa: E402
from medmim_eval.adapters.hf.plugin import default_format  # noqa: E402
from medmim_eval.medmim_format import load_medmim_file  # noqa: E402
from medmim_eval.prompt_formats import render_prompt, render_training  # noqa: E402
from medmim_eval.schema import Sample  # noqa: E402
from medmim_eval.tasks.synth import ABILITIES, generate_suite  # noqa: E402
from medmim_eval.training_recipes.tiny_model import (SPECIAL_TOKENS, TINY_ARCH, build_tiny_base,  # noqa: E402
                                                     train_tokenizer)

FORMAT_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>")


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Sample, str]]:
    """A few synthetic items of every ability (2 and 3 images, closed and open) with their answers."""
    folder = tmp_path_factory.mktemp("synth")
    paths = generate_suite(folder, seed=3, split="train", n_closed=6, n_open=2)
    pairs = []
    for spec in ABILITIES:
        path = paths[spec.key]
        items = json.loads(path.read_text(encoding="utf-8"))
        samples = load_medmim_file(path, task=spec.task, ability=spec.ability, image_root=lambda _tag: folder)
        pairs += [(s, item["conversation"][1]["content"]) for s, item in zip(samples, items)]
    return pairs


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory, suite: list[tuple[Sample, str]]) -> Path:
    folder = tmp_path_factory.mktemp("tiny-base")
    build_tiny_base(folder, [text for s, answer in suite for text in (s.prompt.render(), answer)], seed=0)
    return folder


@pytest.fixture(scope="session")
def adapter(base: Path) -> HFLlavaAdapter:
    return make_hf_llava(str(base), {"batch": "4"}, AdapterContext())


def test_the_checkpoint_declares_the_mantis_llama3_format(base: Path) -> None:
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    assert config["medmim_prompt_format"] == "mantis_llama3"
    assert default_format(base) == "mantis_llama3"
    assert config["text_config"]["model_type"] == "llama" and config["vision_config"]["model_type"] == "siglip_vision_model"


def test_hf_llava_loads_the_base_and_answers_synthetic_items(adapter: HFLlavaAdapter, suite: list[tuple[Sample, str]]) -> None:
    assert adapter.format.name == "mantis_llama3"  # taken from config.json: no format= option was given
    picked = [s for s, _ in suite][::5]
    assert {len(s.prompt.images) for s in picked} == {2, 3}
    settings = GenerationSettings(max_new_tokens=4)
    results = asyncio.run(adapter.generate([GenerationRequest(sample=s, settings=settings) for s in picked]))
    assert all(isinstance(r, GenerationResult) for r in results), results
    assert [r.sent.n_images for r in results] == [len(s.prompt.images) for s in picked]  # type: ignore[union-attr]
    tokens_per_image = (TINY_ARCH["image_size"] // TINY_ARCH["patch_size"]) ** 2
    text, images, _ = adapter.prepare_sample(picked[0])
    ids = adapter.encode([text], [images])["input_ids"][0]
    assert int((ids == adapter.model.config.image_token_id).sum()) == len(images) * tokens_per_image


@pytest.fixture(scope="session", params=["raw", "rendered", "phrases"])
def tokenizer(request: pytest.FixtureRequest, adapter: HFLlavaAdapter, suite: list[tuple[Sample, str]]) -> Any:
    """The base's tokenizer (trained on raw Med-MIM text); one trained on render_training text as
    the tiny recipe passes it; one whose merges may span words (``bpe_word_split=0``)."""
    if request.param == "raw":
        return adapter.tokenizer
    rendered = [render_training("mantis_llama3", s.prompt, answer).full for s, answer in suite]
    return train_tokenizer(rendered, word_split=request.param != "phrases")


def test_the_format_special_tokens_stay_whole(tokenizer: Any, adapter: HFLlavaAdapter,
                                              suite: list[tuple[Sample, str]]) -> None:
    sample, answer = suite[0]
    full = render_training("mantis_llama3", sample.prompt, answer).full
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    for token in FORMAT_TOKENS:
        assert full.count(token) >= 1
        assert pieces.count(token) == full.count(token), token
    assert tokenizer.convert_tokens_to_ids("<image>") == adapter.model.config.image_token_id
    assert tokenizer.decode(ids) == full
    assert set(SPECIAL_TOKENS) <= set(tokenizer.get_vocab())
    assert "user" in pieces and "assistant" in pieces  # the BPE saw the format's own text


def test_the_prompt_tokens_are_the_start_of_the_training_tokens(tokenizer: Any, suite: list[tuple[Sample, str]]) -> None:
    """Label masking by prompt length needs this: the evaluation prompt ends with "\\n\\n"."""
    for sample, answer in suite:
        text = render_training("mantis_llama3", sample.prompt, answer)
        prompt = tokenizer(text.prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(text.full, add_special_tokens=False)["input_ids"]
        assert full[: len(prompt)] == prompt, sample.item_id
        assert tokenizer.decode(full[len(prompt):]) == text.response


def test_the_chat_template_renders_what_render_prompt_renders(adapter: HFLlavaAdapter,
                                                              suite: list[tuple[Sample, str]]) -> None:
    sample = next(s for s, _ in suite if len(s.prompt.images) == 3)
    content = [{"type": "image"} if p.type == "image" else {"type": "text", "text": p.text} for p in sample.prompt.parts]
    rendered = adapter.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                     tokenize=False)
    assert rendered == render_prompt("mantis_llama3", sample.prompt)


def test_the_weights_use_the_vllm_key_layout(base: Path) -> None:
    from safetensors import safe_open

    keys: list[str] = []
    for path in base.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            keys += list(handle.keys())
    vision = [k for k in keys if "vision_tower." in k]
    assert vision and all(k.split("vision_tower.", 1)[1].startswith("vision_model.") for k in vision)
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    assert any(k.startswith("multi_modal_projector.") for k in keys)


def test_an_unknown_architecture_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        build_tiny_base(tmp_path, ["a text"], arch={"hidden_size": 64})

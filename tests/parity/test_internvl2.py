"""hf-internvl ``mode=remote`` and ``internvl2_internlm2.jinja`` against InternVL2's own code
(shared/reference/internvl2, OpenGVLab/InternVL @ 2410d1d; see its PROVENANCE.md).

The model is the tiny InternVL2-8B-layout checkpoint of ``tiny_models_internvl`` running the
reference ``InternVLChatModel`` (``internlm2-chat`` template, its system message) with the reference
``InternLM2Tokenizer`` on a sentencepiece model trained offline. Reference inputs, as InternVL2's
README builds them: the question ``<image>\\n{q}`` (one image) or ``Image-1: <image>\\nImage-2:
<image>\\n{q}``; pixels from ``internvl.train.dataset``'s ``dynamic_preprocess(image, max_num,
image_size, use_thumbnail=True)`` and ``build_transform(is_train=False, input_size)``. That module
needs torchvision (downloaded without dependencies for the session, skipped offline; its CUDA
operator registrations are replaced by an empty module because this torch is CPU-only; the
transforms themselves are torchvision's) and imports cv2, imageio and decord, which it does not
use for images: those three are empty stand-ins while it loads.

Pinned on purpose: the tile budget. The README tiles each image with ``max_num=12``; we split the
sample's budget (``max_tiles``, 12) over its images (README: "the total number of tiles are
distributed across all images"), so the reference is called with our per-image ``max_num``.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import internvl2_reference
import pytest
from compare import same_ids, same_pixels, same_text, same_value
from items import ITEM_IDS, Item, items, make_images

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.internvl.adapter import HFInternVLAdapter, make_hf_internvl  # noqa: E402

TOKENS = 6


@pytest.fixture(scope="module")
def reference() -> SimpleNamespace:
    return internvl2_reference.conversation()


@pytest.fixture(scope="module")
def tiling(tmp_path_factory: pytest.TempPathFactory, reference: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """``dynamic_preprocess`` and ``build_transform`` of ``internvl/train/dataset.py`` with torchvision."""
    with internvl2_reference.tiling(tmp_path_factory.mktemp("torchvision")) as functions:
        yield functions


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, reference: SimpleNamespace) -> Iterator[HFInternVLAdapter]:
    import transformers.dynamic_module_utils as dynamic
    from tiny_models_internvl import tiny_internvl_remote

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf-modules")))
        yield make_hf_internvl(str(tiny_internvl_remote()), {}, AdapterContext())


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images")))}


reference_question = internvl2_reference.question
reference_query = internvl2_reference.query
reference_pixels = internvl2_reference.pixels


class RecordingTokenizer:
    """The adapter's tokenizer, keeping the text ``chat`` tokenizes (the full query)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
        self.texts.append(text)
        return self.tokenizer(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def answer(adapter: HFInternVLAdapter, item: Item) -> GenerationResult:
    settings = GenerationSettings(max_new_tokens=TOKENS)
    import asyncio

    result = asyncio.run(adapter.generate([GenerationRequest(sample=item.sample(), settings=settings)]))[0]
    assert isinstance(result, GenerationResult), result
    return result


@pytest.mark.parametrize("name", ITEM_IDS)
def test_question_query_ids_pixels_and_answer_match_internvl2(name: str, adapter: HFInternVLAdapter,
                                                             reference: SimpleNamespace, tiling: SimpleNamespace,
                                                             cases: dict[str, Item]) -> None:
    item = cases[name]
    question = reference_question(item)
    same_text("question", adapter.render(item.sample()), question)
    _, pixels, tiles, _ = adapter.prepare_sample(item.sample())
    ref_pixels, ref_tiles = reference_pixels(tiling, item.paths, adapter.tile_size, adapter.tiles_per_image(len(item.paths)))
    same_value("tiles per image", tiles, ref_tiles)
    # Differs on purpose: the README calls dynamic_preprocess with max_num=12 per image; we share
    # max_tiles=12 over the sample's images (12, 6, 4 each), so 3 images fit the context.
    same_value("per-image budget", adapter.tiles_per_image(len(item.paths)), 12 // len(item.paths))
    same_pixels("pixel values", pixels, ref_pixels)
    # The full text the model is given and its ids: what chat() tokenizes, against the template.
    recording = RecordingTokenizer(adapter.tokenizer)
    adapter.tokenizer = recording
    try:
        ours = answer(adapter, item)
    finally:
        adapter.tokenizer = recording.tokenizer
    per_tile = adapter.model.num_image_token
    same_value("image tokens per tile", per_tile, 4)  # (32 / 8)^2 * 0.5^2; InternVL2-8B: (448 / 14)^2 * 0.5^2 = 256
    query = reference_query(reference, question)
    query = internvl2_reference.expand(query, ref_tiles, per_tile)
    same_text("query", recording.texts[0], query)
    ids = recording.tokenizer(recording.texts[0])["input_ids"]
    same_ids("input ids", ids, recording.tokenizer(query)["input_ids"])
    same_value("bos first", ids[0], recording.tokenizer.bos_token_id)
    context = recording.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    same_value("image tokens", ids.count(context), per_tile * sum(ref_tiles))
    # Greedy, stopped at <|im_end|>: the same answer as chat() given the reference inputs.
    ref_answer = adapter.model.chat(recording.tokenizer, ref_pixels.to(adapter.model.dtype), question,
                                    {"max_new_tokens": TOKENS, "do_sample": False}, num_patches_list=ref_tiles)
    same_text("answer", ours.text, ref_answer)


def test_eos_and_greedy_are_the_reference_settings(adapter: HFInternVLAdapter, reference: SimpleNamespace) -> None:
    template = reference.get_conv_template("internlm2-chat")
    # chat() stops at the template separator's token; the adapter gives greedy settings only.
    same_value("separator", template.sep.strip(), "<|im_end|>")
    config: dict[str, Any] = {}
    real = adapter.model.language_model.generate

    def spy(**kwargs: Any) -> Any:
        config.update(kwargs)
        return real(**kwargs)

    adapter.model.language_model.generate = spy
    try:
        answer(adapter, Item("q", "open", "Hello?", ()))
    finally:
        adapter.model.language_model.generate = real
    same_value("eos id", config["eos_token_id"], adapter.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    same_value("greedy", (config["do_sample"], config["max_new_tokens"]), (False, TOKENS))
    same_text("system message", adapter.model.system_message, template.system_message)


def test_batch_chat_answers_single_image_items_as_chat(adapter: HFInternVLAdapter, reference: SimpleNamespace,
                                                       tiling: SimpleNamespace, cases: dict[str, Item]) -> None:
    """batch_chat (left-padded, one image per question) through the adapter's decoding gives each
    question chat()'s answer. The adapter itself calls chat: batch_chat replaces one <image> per
    question, so it cannot take Med-MIM's 2-3 image items (pinned: one sample per call)."""
    one = [cases["closed-1"], cases["open-1"]]
    pixels = [reference_pixels(tiling, item.paths, adapter.tile_size, 12) for item in one]
    config = {"max_new_tokens": TOKENS, "do_sample": False}
    together = adapter.model.batch_chat(adapter.tokenizer, torch.cat([p for p, _ in pixels]).to(adapter.model.dtype),
                                        [reference_question(item) for item in one], dict(config),
                                        num_patches_list=[sum(t) for _, t in pixels])
    alone = [adapter.model.chat(adapter.tokenizer, p.to(adapter.model.dtype), reference_question(item), dict(config),
                                num_patches_list=t) for item, (p, t) in zip(one, pixels)]
    same_value("batch_chat answers", together, alone)
    assert adapter.capabilities.batch_size == 1


@pytest.mark.parametrize("name", ITEM_IDS)
def test_the_shipped_vllm_template_renders_chat_s_prompt(name: str, adapter: HFInternVLAdapter,
                                                         reference: SimpleNamespace, cases: dict[str, Item]) -> None:
    template = (Path(__file__).resolve().parents[2] / "adapters" / "vllm" / "chat_templates" / "internvl2_internlm2.jinja").read_text()
    item = cases[name]
    content = [{"type": "image"} if part.type == "image" else {"type": "text", "text": part.text}
               for part in item.prompt.parts]
    tokenizer = adapter.tokenizer
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=template,
                                             add_generation_prompt=True, tokenize=False)
    query = reference_query(reference, reference_question(item))
    same_text("template text", rendered, tokenizer.bos_token + query)
    same_ids("template ids", tokenizer(rendered, add_special_tokens=False)["input_ids"], tokenizer(query)["input_ids"])

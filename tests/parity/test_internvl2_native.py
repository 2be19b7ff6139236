"""hf-internvl ``mode=native`` (transformers' ``InternVLForConditionalGeneration`` and
``InternVLProcessor``) against InternVL2's own code (shared/reference/internvl2, OpenGVLab/InternVL
@ 2410d1d; see its PROVENANCE.md and tests/parity/test_internvl2.py for the remote route).

The model is the tiny native checkpoint of ``tiny_models_internvl`` (the ``-hf`` conversions'
processor layout and chat template). Reference inputs are built as for the remote route
(:mod:`internvl2_reference`): the README's question, the ``internlm2-chat`` query, ``chat``'s
``<image>`` expansion, and the pixels of ``dynamic_preprocess`` + ``build_transform``.

Checked: with ``prompt=internvl2`` the text is ``chat``'s query byte for byte and the ids fed to the
model are those of ``chat``'s expanded query (tile counts, 4 ``<IMG_CONTEXT>`` per 32-px tile here,
256 per 448-px tile in InternVL2-8B); the pixels match for both prompts, from the PIL image
processor; greedy decoding stops at ``<|im_end|>``, and the adapter's answer is the model's greedy
answer to the reference inputs.

Pinned on purpose: ``prompt=checkpoint`` (the default) renders the checkpoint's own chat template,
which for transformers' conversions has no system message, ends turns with ``<|im_end|>\\n`` and
leaves images unlabelled; a conversion of any InternVL (2.5, 3: other system messages) carries that
template, so only ``prompt=internvl2`` claims InternVL2-8B's own query. The tile budget is shared by
the sample's images (as for the remote route).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import internvl2_reference as ref
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
    return ref.conversation()


@pytest.fixture(scope="module")
def tiling(tmp_path_factory: pytest.TempPathFactory, reference: SimpleNamespace) -> Iterator[SimpleNamespace]:
    with ref.tiling(tmp_path_factory.mktemp("torchvision")) as functions:
        yield functions


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    from tiny_models_internvl import tiny_internvl

    return tiny_internvl()


@pytest.fixture(scope="module")
def native(checkpoint: Path) -> HFInternVLAdapter:
    return make_hf_internvl(str(checkpoint), {"dtype": "fp32"}, AdapterContext())


@pytest.fixture(scope="module")
def internvl2(checkpoint: Path) -> HFInternVLAdapter:
    return make_hf_internvl(str(checkpoint), {"prompt": "internvl2", "dtype": "fp32"}, AdapterContext())


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images-native")))}


def answer(adapter: HFInternVLAdapter, item: Item) -> GenerationResult:
    request = GenerationRequest(sample=item.sample(), settings=GenerationSettings(max_new_tokens=TOKENS))
    result = asyncio.run(adapter.generate([request]))[0]
    assert isinstance(result, GenerationResult), result
    return result


@pytest.mark.parametrize("name", ITEM_IDS)
def test_internvl2_prompt_ids_pixels_and_answer_match_chat(name: str, internvl2: HFInternVLAdapter,
                                                          reference: SimpleNamespace, tiling: SimpleNamespace,
                                                          cases: dict[str, Item]) -> None:
    item = cases[name]
    tokenizer = internvl2.tokenizer
    query = ref.query(reference, ref.question(item))
    # The text: chat()'s query, each <image> written as the processor's image token (it expands it).
    same_text("query", internvl2.render(item.sample()), query.replace("<image>", internvl2.processor.image_token))
    _, inputs, tiles, _ = internvl2.prepare_sample(item.sample())
    ref_pixels, ref_tiles = ref.pixels(tiling, item.paths, internvl2.tile_size,
                                       internvl2.tiles_per_image(len(item.paths)))
    same_value("tiles per image", tiles, ref_tiles)
    same_pixels("pixel values", inputs["pixel_values"], ref_pixels)
    per_tile = internvl2.model.config.image_seq_length
    same_value("image tokens per tile", (per_tile, internvl2.processor.image_seq_length), (4, 4))
    expanded = ref.expand(query, ref_tiles, per_tile)
    ref_ids = tokenizer(expanded, return_tensors="pt")["input_ids"]
    same_ids("input ids", inputs["input_ids"][0], ref_ids[0])
    context = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    same_value("image tokens", int((inputs["input_ids"][0] == context).sum()), per_tile * sum(ref_tiles))
    # Greedy to <|im_end|>: the adapter's answer is the model's answer to the reference's inputs.
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.inference_mode():
        out = internvl2.model.generate(input_ids=ref_ids, attention_mask=torch.ones_like(ref_ids),
                                       pixel_values=ref_pixels.to(internvl2.model.dtype), max_new_tokens=TOKENS,
                                       do_sample=False, eos_token_id=end, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ref_ids.shape[1]:].tolist()
    ref_answer = tokenizer.decode(new[:new.index(end)] if end in new else new, skip_special_tokens=True).strip()
    same_text("answer", answer(internvl2, item).text, ref_answer)


@pytest.mark.parametrize("name", ITEM_IDS)
def test_checkpoint_prompt_is_the_conversion_template_and_differs_on_purpose(
        name: str, native: HFInternVLAdapter, reference: SimpleNamespace, tiling: SimpleNamespace,
        cases: dict[str, Item]) -> None:
    item = cases[name]
    n = len(item.paths)
    ours = native.render(item.sample())
    # Pinned: the -hf conversion's template (see the module docstring), not chat()'s query.
    same_text("checkpoint template", ours, "<|im_start|>user\n" + "<IMG_CONTEXT>\n" * n + item.question
              + "<|im_end|>\n<|im_start|>assistant\n")
    chat_query = ref.query(reference, ref.question(item))
    assert reference.get_conv_template("internlm2-chat").system_message not in ours
    assert chat_query.startswith("<|im_start|>system\n") and "<|im_end|><|im_start|>" in chat_query
    assert ("Image-1: " in chat_query) == (n > 1) and "Image-1: " not in ours
    # The pixels and the expansion of each image are chat()'s for this prompt too.
    _, inputs, tiles, _ = native.prepare_sample(item.sample())
    ref_pixels, ref_tiles = ref.pixels(tiling, item.paths, native.tile_size, native.tiles_per_image(n))
    same_value("tiles per image", tiles, ref_tiles)
    same_pixels("pixel values", inputs["pixel_values"], ref_pixels)
    expanded = ref.expand(ours.replace("<IMG_CONTEXT>", "<image>"), ref_tiles, native.model.config.image_seq_length)
    same_ids("input ids", inputs["input_ids"][0], native.tokenizer(expanded)["input_ids"])


PROBE = """
import sys, torch
from PIL import Image
from transformers import AutoImageProcessor
from medmim_eval.adapters.hf.internvl.adapter import load_native_processor
folder, out, *paths = sys.argv[1:]
default, ours = AutoImageProcessor.from_pretrained(folder), load_native_processor(folder).image_processor
rgb = [Image.open(p).convert("RGB") for p in paths]
pixels = {name: torch.cat([p(images=[i], return_tensors="pt", crop_to_patches=True, max_patches=12)["pixel_values"]
                           for i in rgb]) for name, p in (("default", default), ("ours", ours))}
torch.save({"backends": (default.backend, ours.backend), **pixels}, out)
"""


@pytest.mark.slow
def test_where_torchvision_is_installed_the_pixels_stay_load_image_s(
        tmp_path: Path, checkpoint: Path, native: HFInternVLAdapter, internvl2: HFInternVLAdapter,
        tiling: SimpleNamespace, cases: dict[str, Item]) -> None:
    """InternVL2 resizes with PIL's bicubic. transformers picks the torchvision image processor
    wherever torchvision is installed (GPU hosts), whose bicubic on uint8 tensors lands up to a grey
    level away: the adapter asks for PIL. Run in a process where torchvision (the session's
    download; CUDA operator registrations stubbed, this torch is CPU-only) is importable."""
    import os
    import subprocess
    import sys

    from compare import rejects
    from references import pypi_wheel

    for adapter in (native, internvl2):
        same_value("image processor backend", adapter.processor.image_processor.backend, "pil")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys, types\nsys.modules['torchvision._meta_registrations'] = "
                                           "types.ModuleType('torchvision._meta_registrations')\n")
    torchvision = pypi_wheel("torchvision", "0.28.0", tmp_path / "torchvision")
    paths = cases["open-3"].paths
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(torchvision)])}
    done = subprocess.run([sys.executable, "-c", PROBE, str(checkpoint), str(tmp_path / "out.pt"), *paths],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = torch.load(tmp_path / "out.pt")
    same_value("backends there (default, ours)", probe["backends"], ("torchvision", "pil"))
    ref_pixels, _ = ref.pixels(tiling, paths, native.tile_size, 12)
    same_pixels("pixel values with torchvision installed", probe["ours"], ref_pixels)
    assert "pixels differ" in rejects(same_pixels, "torchvision backend", probe["default"], ref_pixels)


def test_greedy_and_im_end_are_chat_s_settings(internvl2: HFInternVLAdapter, reference: SimpleNamespace,
                                               cases: dict[str, Item]) -> None:
    template = reference.get_conv_template("internlm2-chat")
    end = internvl2.tokenizer.convert_tokens_to_ids(template.sep.strip())
    config: dict[str, Any] = {}
    real = internvl2.model.generate

    def spy(**kwargs: Any) -> Any:
        config.update(kwargs)
        return real(**kwargs)

    internvl2.model.generate = spy  # type: ignore[method-assign]
    try:
        answer(internvl2, cases["open-2"])
    finally:
        del internvl2.model.generate
    # chat() stops at <|im_end|> only; we stop there first, and also at the checkpoint's and the
    # tokenizer's eos (pinned: the -hf conversions of InternLM2 models set <|im_end|> as the
    # generation eos and keep </s> as the tokenizer's; the tiny checkpoint's are both <|im_end|>).
    stops = config["eos_token_id"]
    same_value("first stop id", stops[0], end)
    same_value("other stop ids", set(stops[1:]) - {internvl2.model.generation_config.eos_token_id,
                                                    internvl2.tokenizer.eos_token_id}, set())
    same_value("greedy", (config["do_sample"], config["max_new_tokens"]), (False, TOKENS))
    same_text("system message", ref.query(reference, "q").split("<|im_end|>")[0].removeprefix("<|im_start|>system\n"),
              template.system_message)
    same_text("our system message", internvl2.render(cases["open-1"].sample()).split("<|im_end|>")[0]
              .removeprefix("<|im_start|>system\n"), template.system_message)

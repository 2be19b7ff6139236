"""hf-llava ``format=llava_med_mistral`` and the sft-llava training encoder against LLaVA-Med v1.5's own
code (/work/shared/reference/llava_med, microsoft/LLaVA-Med @ d406e3f, on ``sys.path`` only while
its modules are imported: ``llava.conversation``, ``llava.mm_utils``, ``llava.constants``).

Reference path, as ``llava/eval/model_vqa.py --conv-mode mistral_instruct`` runs it: the question
without ``<image>`` and stripped, ``"<image>\\n" + question`` in the ``mistral_instruct`` template,
``tokenizer_image_token`` (one ``-200`` per image, chunks tokenized apart), ``process_images`` with
``image_aspect_ratio: pad`` (the HF ports' config) on the file as ``Image.open`` gives it.

LLaVA-Med has no multi-image form; for 2 and 3 images the reference input here is our choice
(``"<image>\\n"`` per image, where the image sits; the released items put all images first), pinned
so that it cannot change silently. The padding offset differs on purpose: LLaVA-Med's
``expand2square`` draws a 0/1-px jitter from ``random`` (seeded once per eval run, so it depends on
item order); we always take the lower offset, which is also what upstream LLaVA (llava-torch) does.
"""
from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from compare import same_ids, same_pixels, same_text, same_value
from items import ITEM_IDS, Item, items, make_images
from references import on_path, reference_folder

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.llava import HFLlavaAdapter, make_hf_llava  # noqa: E402
from medmim_eval.prompt_formats import get_format, render_training  # noqa: E402

ANSWER = "B: glaucoma"
FEATURES = 576  # CLIP ViT-L/14-336, CLS dropped


@pytest.fixture(scope="session")
def llava_med() -> SimpleNamespace:
    folder = reference_folder("llava_med")
    with on_path(folder, "llava"):
        from llava import constants, conversation, mm_utils
    return SimpleNamespace(conversation=conversation, mm_utils=mm_utils, constants=constants, folder=folder)


@pytest.fixture(scope="session")
def adapter() -> HFLlavaAdapter:
    from tiny_models_parity import tiny_llava_med

    return make_hf_llava(str(tiny_llava_med()), {"format": "llava_med_mistral", "dtype": "fp32"}, AdapterContext())


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images")))}


def reference_prompt(ref: SimpleNamespace, item: Item, answer: str | None = None) -> str:
    qs = item.user.replace(ref.constants.DEFAULT_IMAGE_TOKEN, "").strip()
    qs = (ref.constants.DEFAULT_IMAGE_TOKEN + "\n") * len(item.paths) + qs  # model_vqa.py: one image
    conv = ref.conversation.conv_templates["mistral_instruct"].copy()
    conv.append_message(conv.roles[0], qs)
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def reference_pixels(ref: SimpleNamespace, adapter: HFLlavaAdapter, paths: tuple[str, ...], jitter: int = 0) -> Any:
    """``process_images`` per image (``model_vqa.py`` opens the file without converting it), with
    ``expand2square``'s random offset fixed to its lower (``jitter=0``) or upper (1) value."""
    from PIL import Image

    original = random.randint
    random.randint = lambda a, b: (a, b)[jitter]  # type: ignore[assignment]
    try:
        cfg = SimpleNamespace(image_aspect_ratio="pad")
        return torch.cat([ref.mm_utils.process_images([Image.open(p)], adapter.image_processor, cfg) for p in paths])
    finally:
        random.randint = original  # type: ignore[assignment]


def widened(ids: list[int], image_id: int) -> list[int]:
    out: list[int] = []
    for token in ids:
        out.extend([image_id] * FEATURES if token == -200 else [token])
    return out


@pytest.mark.parametrize("name", ITEM_IDS)
def test_prompt_tokens_and_pixels_match_model_vqa(name: str, llava_med: SimpleNamespace, adapter: HFLlavaAdapter,
                                                  cases: dict[str, Item]) -> None:
    item = cases[name]
    ours_text, ours_images, _ = adapter.prepare_sample(item.sample())
    ours = adapter.encode([ours_text], [ours_images])
    ref_text = reference_prompt(llava_med, item)
    same_text("prompt", ours_text, ref_text)
    ref_ids = llava_med.mm_utils.tokenizer_image_token(ref_text, adapter.tokenizer, llava_med.constants.IMAGE_TOKEN_INDEX)
    same_ids("input ids", ours["input_ids"][0], widened(ref_ids, adapter.model.config.image_token_id))
    same_pixels("pixel values", ours["pixel_values"], reference_pixels(llava_med, adapter, item.paths))


def test_the_padding_offset_is_the_lower_of_llava_meds_two(llava_med: SimpleNamespace, adapter: HFLlavaAdapter,
                                                           cases: dict[str, Item]) -> None:
    paths = cases["open-2"].paths  # landscape and portrait: both get padded
    ours = adapter.encode(*[[x] for x in adapter.prepare_sample(cases["open-2"].sample())[:2]])["pixel_values"]
    with pytest.raises(AssertionError):
        same_pixels("pixels, upper offset", ours, reference_pixels(llava_med, adapter, paths, jitter=1))
    same_pixels("pixels, lower offset", ours, reference_pixels(llava_med, adapter, paths, jitter=0))


def test_a_grey_image_is_padded_in_grey_as_llava_pads_it(llava_med: SimpleNamespace, adapter: HFLlavaAdapter,
                                                         tmp_path: Any) -> None:
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.linear_gradient("L").resize((120, 200)).save(grey)
    item = Item("grey", "open", "<image>What is shown?", (str(grey),))
    ours = adapter.encode(*[[x] for x in adapter.prepare_sample(item.sample())[:2]])["pixel_values"]
    same_pixels("grey pixels", ours, reference_pixels(llava_med, adapter, item.paths))


def test_generation_settings_match_model_vqa(llava_med: SimpleNamespace, adapter: HFLlavaAdapter) -> None:
    source = (llava_med.folder / "llava" / "eval" / "model_vqa.py").read_text()
    # model_vqa.py passes no stopping criteria: generation ends at the model's eos (</s>) only.
    assert "stopping_criteria=" not in source.split("model.generate(")[1].split(")\n")[0]
    same_value("eos ids", adapter.eos_ids, [adapter.tokenizer.eos_token_id])
    # The README's eval command: --temperature 0.0, so do_sample=False; num_beams defaults to 1.
    assert "do_sample=True if args.temperature > 0 else False" in source and GenerationSettings().temperature == 0
    # Differs on purpose: model_vqa.py allows 1024 new tokens; tasks set one budget for every model.
    assert "max_new_tokens=1024" in source and GenerationSettings().max_new_tokens == 256


@pytest.mark.parametrize("name", ["closed-1", "open-2"])
def test_the_training_encoder_matches_the_reference_text(name: str, llava_med: SimpleNamespace,
                                                         adapter: HFLlavaAdapter, cases: dict[str, Item]) -> None:
    from medmim_eval.training_recipes.data import TrainExample
    from medmim_eval.training_recipes.encoding import ExampleEncoder

    item = cases[name]
    full = render_training(get_format("llava_med_mistral"), item.prompt, ANSWER).full
    # mistral_instruct closes the answer with " </s>" (a space before the eos); the training
    # recipe ends it with "</s>" right after the answer, so the model learns to emit eos directly.
    same_text("training text", full.replace("</s>", " </s>"), reference_prompt(llava_med, item, ANSWER))
    row = ExampleEncoder(adapter.processor, get_format("llava_med_mistral"), "llava")(
        TrainExample(sample=item.sample(), response=ANSWER, ability="p", source_tag="p", composed=False))
    ref_prompt_ids = llava_med.mm_utils.tokenizer_image_token(reference_prompt(llava_med, item), adapter.tokenizer)
    prompt_len = len(widened(ref_prompt_ids, adapter.model.config.image_token_id))
    same_ids("training prompt ids", row["input_ids"][:prompt_len], widened(ref_prompt_ids, adapter.model.config.image_token_id))
    same_pixels("training pixels", row["pixel_values"], reference_pixels(llava_med, adapter, item.paths))

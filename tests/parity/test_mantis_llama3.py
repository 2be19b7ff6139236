"""hf-llava ``format=mantis_llama3`` and the sft-llava training encoder against Mantis's own code
(PyPI ``mantis-vl==0.0.5``, downloaded without dependencies into the test session).

Reference path, as ``mantis/mllm_tools/mllava_eval.py`` -> ``mantis/models/mllava/utils.chat_mllava``
runs it for a Llama-3 checkpoint: ``conv_templates['llama_3']`` (system turn included) renders the
user text, ``MLlavaProcessor`` turns each ``<image>`` into ``(image i: <Image><image></Image>)`` and
tokenizes with the tokenizer's own special-token rule; the Mantis model later widens each ``<image>``
id to one position per vision feature. Imported by path: ``mantis/models/conversation.py`` and
``mantis/models/mllava/processing_llava.py`` (its package ``__init__`` pulls in the modelling code).
Stand-ins: ``transformers.utils.hub.is_remote_url`` and ``download_url``, which transformers 5 no
longer has; processing_llava only uses them in ``from_pretrained``, which is not called here.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from compare import same_ids, same_pixels, same_text, same_value
from items import ITEM_IDS, Item, items, make_images
from references import load_by_path, pypi_wheel

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.llava import HFLlavaAdapter, make_hf_llava  # noqa: E402
from medmim_eval.prompt_formats import get_format, render_training  # noqa: E402

ANSWER = "B: glaucoma"


def _missing(*_: Any, **__: Any) -> Any:  # pragma: no cover - only present to satisfy an import
    raise NotImplementedError("stand-in for an import transformers 5 removed")


@pytest.fixture(scope="session")
def mantis_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked ``mantis-vl==0.0.5`` wheel (root folder holding ``mantis/``), or skip offline."""
    return pypi_wheel("mantis-vl", "0.0.5", tmp_path_factory.mktemp("mantis-vl"))


@pytest.fixture(scope="session")
def mantis(mantis_src: Path) -> SimpleNamespace:
    models = mantis_src / "mantis" / "models"
    conversation = load_by_path("mantis_ref_conversation", models / "conversation.py")
    processing = load_by_path("mantis_ref_processing_llava", models / "mllava" / "processing_llava.py",
                              {"transformers.utils.hub": {"is_remote_url": _missing, "download_url": _missing}})
    return SimpleNamespace(conversation=conversation, processing=processing, src=mantis_src)


@pytest.fixture(scope="session")
def adapter() -> HFLlavaAdapter:
    from tiny_models_parity import tiny_llava_llama3

    return make_hf_llava(str(tiny_llava_llama3()), {"format": "mantis_llama3", "dtype": "fp32"}, AdapterContext())


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images")))}


def reference_text(mantis: SimpleNamespace, user: str, answer: str = "") -> str:
    """``chat_mllava``'s prompt (``answer=""``) or the training text of ``train/data.py``."""
    conv = mantis.conversation.conv_templates["llama_3"].copy()
    conv.messages = []
    conv.append_message(conv.roles[0], user)
    conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def reference_inputs(mantis: SimpleNamespace, adapter: HFLlavaAdapter, text: str, paths: tuple[str, ...]) -> Any:
    """``MLlavaProcessor.__call__`` on the checkpoint's own tokenizer and image processor, with the
    images opened as ``chat_mllava`` opens them."""
    from PIL import Image

    processor_class = mantis.processing.MLlavaProcessor
    proc = SimpleNamespace(tokenizer=adapter.tokenizer, image_processor=adapter.image_processor, image_token_index=None)
    proc.preprocess_interleaved_images_and_text = (
        lambda text, images: processor_class.preprocess_interleaved_images_and_text(proc, text, images))
    images = [Image.open(p).convert("RGB") for p in paths]
    rendered, _ = proc.preprocess_interleaved_images_and_text(text, [images])
    return rendered[0], processor_class.__call__(proc, text=text, images=images, return_tensors="pt")


def widened(ids: Any, image_id: int, per_image: int) -> list[int]:
    """Each ``<image>`` id repeated once per vision feature, as Mantis's LLaVA model splices them in."""
    out: list[int] = []
    for token in ids.tolist():
        out.extend([token] * per_image if token == image_id else [token])
    return out


def features_per_image(adapter: HFLlavaAdapter) -> int:
    config = adapter.model.config
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return patches - (1 if config.vision_feature_select_strategy == "default" else 0)


@pytest.mark.parametrize("name", ITEM_IDS)
def test_prompt_tokens_and_pixels_match_chat_mllava(name: str, mantis: SimpleNamespace, adapter: HFLlavaAdapter,
                                                    cases: dict[str, Item]) -> None:
    item = cases[name]
    ours_text, ours_images, _ = adapter.prepare_sample(item.sample())
    ours = adapter.encode([ours_text], [ours_images])
    ref_text, ref = reference_inputs(mantis, adapter, reference_text(mantis, item.user), item.paths)
    # Mantis leaves the BOS to the tokenizer; our text carries it and is tokenized without specials.
    same_text("prompt", ours_text, adapter.tokenizer.bos_token + ref_text)
    image_id = adapter.model.config.image_token_id
    assert features_per_image(adapter) == 729
    same_ids("input ids", ours["input_ids"][0], widened(ref["input_ids"][0], image_id, features_per_image(adapter)))
    same_value("image tokens", int((ours["input_ids"][0] == image_id).sum()), 729 * len(item.paths))
    same_pixels("pixel values", ours["pixel_values"], ref["pixel_values"])


def test_generation_settings_match_chat_mllava(mantis: SimpleNamespace, adapter: HFLlavaAdapter) -> None:
    source = (mantis.src / "mantis" / "models" / "mllava" / "utils.py").read_text()
    # chat_mllava's terminators for a Llama-3 language model: the tokenizer's eos, then <|eot_id|>.
    assert 'conv_templates[\'llama_3\']' in source and 'convert_tokens_to_ids("<|eot_id|>")' in source
    terminators = [adapter.tokenizer.eos_token_id, adapter.tokenizer.convert_tokens_to_ids("<|eot_id|>")]
    same_value("eos ids", adapter.eos_ids, terminators)
    eval_source = (mantis.src / "mantis" / "mllm_tools" / "mllava_eval.py").read_text()
    assert '"do_sample": False' in eval_source and '"num_beams": 1' in eval_source
    assert GenerationSettings().temperature == 0  # greedy, as mllava_eval.py
    # Differs on purpose: mllava_eval.py allows 4096 new tokens; each task sets its own budget
    # (GenerationSettings.max_new_tokens, 256 by default), the same for every model.
    assert '"max_new_tokens": 4096' in eval_source and GenerationSettings().max_new_tokens == 256


@pytest.mark.parametrize("name", ["closed-2", "open-3"])
def test_the_training_encoder_matches_mantis_training_text(name: str, mantis: SimpleNamespace,
                                                           adapter: HFLlavaAdapter, cases: dict[str, Item]) -> None:
    """sft-llava's encoder against ``mantis/train/data.py`` (the same conv template and processor)."""
    from medmim_eval.training_recipes.data import TrainExample
    from medmim_eval.training_recipes.encoding import ExampleEncoder

    item = cases[name]
    fmt = get_format("mantis_llama3")
    ref_full, ref = reference_inputs(mantis, adapter, reference_text(mantis, item.user, ANSWER), item.paths)
    same_text("training text", render_training(fmt, item.prompt, ANSWER).full, adapter.tokenizer.bos_token + ref_full)
    example = TrainExample(sample=item.sample(), response=ANSWER, ability="parity", source_tag="parity", composed=False)
    row = ExampleEncoder(adapter.processor, fmt, "llava")(example)
    image_id = adapter.model.config.image_token_id
    ref_ids = widened(ref["input_ids"][0], image_id, features_per_image(adapter))
    same_ids("training ids", row["input_ids"], ref_ids)
    same_pixels("training pixels", row["pixel_values"], ref["pixel_values"])
    # Labels differ on purpose: Mantis labels everything after the user turn's <|eot_id|>, the
    # assistant header included; we label the response and its <|eot_id|> only (paper Eq. 1).
    eot = adapter.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    user_end = [i for i, t in enumerate(ref_ids) if t == eot][1]
    header = adapter.tokenizer("<|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)["input_ids"]
    labelled = [i for i, label in enumerate(row["labels"].tolist()) if label != -100]
    same_value("labelled positions", labelled, list(range(user_end + 1 + len(header), len(ref_ids))))

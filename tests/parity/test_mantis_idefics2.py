"""hf-idefics2 and the sft-idefics2 training encoder against Mantis's own code for Mantis-8B-Idefics2
(PyPI ``mantis-vl==0.0.5``, downloaded without dependencies into the test session).

Reference path, as ``mantis/mllm_tools/idefics2_eval.py`` runs a Mantis Idefics2 checkpoint: the
images first, then the text, rendered by the checkpoint's chat template (``User:<image>...{q}
<end_of_utterance>\\nAssistant:``), which is also what ``conv_templates['idefics_2']``
(``mantis/models/conversation.py``) gives with an empty assistant turn; training
(``mantis/train/train_idefics2.py`` + ``train/data.py``) renders ``conv_idefics_2`` with the answer
and tokenizes the whole text. Tokens and pixels: ``Idefics2DeltaProcessor.__call__``
(``mantis/models/idefics2_delta/processing_idefics2.py``: each ``<image>`` ->
``<fake_token_around_image>`` + 64 ``<image>`` + ``<fake_token_around_image>``, doubled fake tokens
merged) and that folder's ``Idefics2ImageProcessor``, both imported by path and called on the
checkpoint's tokenizer; no stand-ins are needed. The checkpoint is a tiny Idefics2 with a
Mistral-style sentencepiece tokenizer (Idefics2-8b's LLM is Mistral-7B) and Mantis-8B-Idefics2's
processor settings.
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
from medmim_eval.adapters.hf.idefics2 import HFIdefics2Adapter, make_hf_idefics2  # noqa: E402
from medmim_eval.prompt_formats import get_format, render_training  # noqa: E402

ANSWER = "B: glaucoma"


@pytest.fixture(scope="session")
def mantis_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked ``mantis-vl==0.0.5`` wheel (root folder holding ``mantis/``), or skip offline."""
    return pypi_wheel("mantis-vl", "0.0.5", tmp_path_factory.mktemp("mantis-vl-idefics2"))


@pytest.fixture(scope="session")
def mantis(mantis_src: Path) -> SimpleNamespace:
    models = mantis_src / "mantis" / "models"
    delta = models / "idefics2_delta"
    return SimpleNamespace(
        src=mantis_src,
        conversation=load_by_path("mantis_ref_conversation_i2", models / "conversation.py"),
        processing=load_by_path("mantis_ref_processing_idefics2", delta / "processing_idefics2.py"),
        image_processing=load_by_path("mantis_ref_image_processing_idefics2", delta / "image_processing_idefics2.py"))


@pytest.fixture(scope="session")
def adapter() -> HFIdefics2Adapter:
    from tiny_models_parity import tiny_idefics2_mistral

    return make_hf_idefics2(str(tiny_idefics2_mistral()), {"dtype": "fp32"}, AdapterContext())


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images-i2")))}


def conv_text(mantis: SimpleNamespace, user: str, answer: str = "") -> str:
    """``conv_templates['idefics_2']`` with the user turn and ``answer`` (empty: the generation cue)."""
    conv = mantis.conversation.conv_templates["idefics_2"].copy()
    conv.messages = []
    conv.append_message(conv.roles[0], user)
    conv.append_message(conv.roles[1], answer or None)
    return conv.get_prompt()


def eval_text(adapter: HFIdefics2Adapter, item: Item) -> str:
    """``idefics2_eval.py``'s prompt: images first, then the text parts joined by newlines, through
    the checkpoint's chat template."""
    content = [{"type": "image"}] * len(item.paths) + [{"type": "text", "text": item.question}]
    return adapter.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                 tokenize=False)


def reference_inputs(mantis: SimpleNamespace, adapter: HFIdefics2Adapter, text: str, paths: tuple[str, ...]) -> Any:
    """``Idefics2DeltaProcessor.__call__`` with the checkpoint's tokenizer and Mantis's image processor
    (the checkpoint's settings), images loaded as ``idefics2_eval.py`` loads them."""
    from transformers.image_utils import load_image
    from transformers.tokenization_utils_base import AddedToken

    ours = adapter.processor.image_processor
    image_processor = mantis.image_processing.Idefics2ImageProcessor(
        do_image_splitting=ours.do_image_splitting, size=dict(ours.size), image_mean=ours.image_mean,
        image_std=ours.image_std, resample=ours.resample, rescale_factor=ours.rescale_factor)
    proc = SimpleNamespace(tokenizer=adapter.tokenizer, image_processor=image_processor,
                           image_seq_len=adapter.processor.image_seq_len,
                           fake_image_token=AddedToken("<fake_token_around_image>", normalized=False, special=True),
                           image_token=AddedToken("<image>", normalized=False, special=True))
    images = [load_image(p) for p in paths]
    return mantis.processing.Idefics2DeltaProcessor.__call__(proc, text=text, images=images, return_tensors="pt")


@pytest.mark.parametrize("name", ITEM_IDS)
def test_prompt_tokens_and_pixels_match_mantis_idefics2(name: str, mantis: SimpleNamespace, adapter: HFIdefics2Adapter,
                                                        cases: dict[str, Item]) -> None:
    item = cases[name]
    ours_text, ours_images, _ = adapter.prepare_sample(item.sample())
    same_text("prompt (chat template)", ours_text, eval_text(adapter, item))
    same_text("prompt (conv_idefics_2)", ours_text, conv_text(mantis, item.user))
    ours = adapter.encode([ours_text], [ours_images])
    ref = reference_inputs(mantis, adapter, ours_text, item.paths)
    same_ids("input ids", ours["input_ids"][0], ref["input_ids"][0])
    same_value("image tokens", int((ours["input_ids"][0] == adapter.image_token_id).sum()), 64 * len(item.paths))
    same_pixels("pixel values", ours["pixel_values"], ref["pixel_values"])
    same_pixels("pixel attention mask", ours["pixel_attention_mask"].int(), ref["pixel_attention_mask"].int())


def test_stop_ids_and_greedy_answers_match_idefics2_eval(mantis: SimpleNamespace, adapter: HFIdefics2Adapter,
                                                         cases: dict[str, Item]) -> None:
    tok = adapter.tokenizer
    # Mantis-8B-Idefics2's generation config stops at </s> and <end_of_utterance>; idefics2_eval.py
    # calls generate() with it, greedy (num_beams=1, no sampling) and decodes skipping special tokens.
    same_value("eos ids", adapter.eos_ids, [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_utterance>")])
    source = (mantis.src / "mantis" / "mllm_tools" / "idefics2_eval.py").read_text()
    assert "num_beams=1" in source and "do_sample" not in source and "skip_special_tokens=True" in source
    settings = GenerationSettings(max_new_tokens=6)
    assert settings.temperature == 0
    # Differs on purpose: idefics2_eval.py allows 512 new tokens; each task sets its own budget.
    assert "max_new_tokens=512" in source and GenerationSettings().max_new_tokens == 256
    for name in ("closed-1", "open-3"):
        item = cases[name]
        prepared = adapter.prepare_sample(item.sample())
        (ours,) = adapter.run([prepared], settings)
        ref = reference_inputs(mantis, adapter, eval_text(adapter, item), item.paths)
        with torch.inference_mode():
            out = adapter.model.generate(**ref, max_new_tokens=6, num_beams=1, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
        answer = tok.batch_decode(out[:, ref["input_ids"].shape[1]:], skip_special_tokens=True,
                                  clean_up_tokenization_spaces=False)[0]
        same_text(f"greedy answer {name}", ours.text, answer.split("<end_of_utterance>")[0].strip())


@pytest.mark.parametrize("name", ["closed-1", "closed-2", "open-3"])
def test_the_training_encoder_matches_mantis_training_text(name: str, mantis: SimpleNamespace,
                                                           adapter: HFIdefics2Adapter, cases: dict[str, Item]) -> None:
    """sft-idefics2's encoder against ``train/data.py`` with ``conv_idefics_2`` (the whole text tokenized)."""
    from medmim_eval.training_recipes.data import TrainExample
    from medmim_eval.training_recipes.encoding import IGNORE, ExampleEncoder

    item = cases[name]
    fmt = get_format("idefics2")
    full = conv_text(mantis, item.user, ANSWER)
    same_text("training text", render_training(fmt, item.prompt, ANSWER).full, full)
    example = TrainExample(sample=item.sample(), response=ANSWER, ability="parity", source_tag="parity", composed=False)
    row = ExampleEncoder(adapter.processor, fmt, "idefics2")(example)
    ref = reference_inputs(mantis, adapter, full, item.paths)
    ref_ids = ref["input_ids"][0].tolist()
    same_ids("training ids", row["input_ids"], ref_ids)
    same_pixels("training pixels", row["pixel_values"], ref["pixel_values"][0])
    # Labels differ on purpose: data.py labels everything from the user turn's <end_of_utterance> to
    # the answer's (the '\nAssistant:' cue included, the closing newline not); we label the answer,
    # its <end_of_utterance> and the newline (paper Eq. 1: the response tokens only).
    eou = adapter.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    ends = [i for i, t in enumerate(ref_ids) if t == eou]
    cue = len(adapter.tokenizer("\nAssistant:", add_special_tokens=False)["input_ids"])
    labelled = [i for i, label in enumerate(row["labels"].tolist()) if label != IGNORE]
    same_value("labelled positions", labelled, list(range(ends[0] + 1 + cue, len(ref_ids))))

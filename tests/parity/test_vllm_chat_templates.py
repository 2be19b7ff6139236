"""The chat templates we ship for vLLM (``adapters/vllm/chat_templates/``), rendered through
``apply_chat_template`` as vLLM renders an OpenAI-style request (content parts in order, images as
``{"type": "image"}``, the generation prompt added, the result tokenized without special tokens),
against the in-process rendering (:func:`render_prompt`), which tests/parity checks against the
authors' code. Same text, same token ids, for 1-3 images, closed and open."""
from __future__ import annotations

from pathlib import Path

import pytest
from compare import same_ids, same_text
from items import ITEM_IDS, Item, items

pytest.importorskip("transformers")

from medmim_eval.prompt_formats import get_format, render_prompt  # noqa: E402

TEMPLATES = Path(__file__).resolve().parents[2] / "adapters" / "vllm" / "chat_templates"
CASES = {item.name: item for item in items(["a.png", "b.png", "c.png"])}


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, object]:
    from tiny_models_parity import llama3_tokenizer, mistral_sp_tokenizer

    return {"mantis_llama3": llama3_tokenizer(), "llava_med_mistral": mistral_sp_tokenizer()}


def openai_content(item: Item) -> list[dict[str, str]]:
    return [{"type": "image"} if part.type == "image" else {"type": "text", "text": part.text}
            for part in item.prompt.parts]


@pytest.mark.parametrize("name", ITEM_IDS)
@pytest.mark.parametrize("fmt", ["mantis_llama3", "llava_med_mistral"])
def test_the_shipped_template_renders_our_prompt(fmt: str, name: str, tokenizers: dict[str, object]) -> None:
    tokenizer = tokenizers[fmt]
    template = (TEMPLATES / f"{fmt}.jinja").read_text()
    item = CASES[name]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": openai_content(item)}],  # type: ignore[attr-defined]
                                             chat_template=template, add_generation_prompt=True, tokenize=False)
    spec = get_format(fmt)
    ours = render_prompt(spec, item.prompt)
    # Formats whose BOS the tokenizer adds: vLLM's template writes it as text instead.
    same_text("template text", rendered, ours if spec.bos_in_text else tokenizer.bos_token + ours)  # type: ignore[attr-defined]
    same_ids("template ids", tokenizer(rendered, add_special_tokens=False)["input_ids"],  # type: ignore[operator]
             tokenizer(ours, add_special_tokens=not spec.bos_in_text)["input_ids"])  # type: ignore[operator]

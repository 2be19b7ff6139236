"""med-flamingo's prompt layout and token ids against Med-Flamingo's own code
(``<reference>/med_flamingo``, snap-stanford/med-flamingo @ b3c1e64: ``scripts/demo.py``,
``src/utils.py``) and ``open-flamingo==0.0.2`` (PyPI, downloaded without dependencies).

The prompt: ``demo.py``'s few-shot prompt, read from the file, written as a Med-MIM prompt (each
shot an image and its ``Question: ... Answer: ...`` text, the query an image and its question) must
render byte for byte. Token ids: ``FlamingoProcessor.encode_text`` (``src/utils.py``, imported by
path; it needs only torch) on a LLaMA-style sentencepiece tokenizer given the special tokens
exactly as ``open_flamingo/src/factory.py`` adds them (``<|endofchunk|>``, ``<image>``, ``<PAD>``
when there is no pad token; the factory itself also builds CLIP through open_clip, which needs
torchvision, so its tokenizer lines are checked in its source and repeated here). The model does
not run (see tests/test_med_flamingo.py).

Pinned on purpose: demo.py has one question per image; a Med-MIM item asks one question about
several images, so the images before the question become chunks with no text
(``<image><|endofchunk|>``), the question sitting in the last image's chunk.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from compare import same_ids, same_text, same_value
from items import ITEM_IDS, Item, items, make_images
from references import load_by_path, pypi_wheel, reference_folder

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapters.med_flamingo import encode_prompts  # noqa: E402
from medmim_eval.adapters.med_flamingo_prompt import END_OF_CHUNK, MEDIA_TOKEN, render_med_flamingo  # noqa: E402
from medmim_eval.schema import ImagePart, Prompt, TextPart  # noqa: E402


@pytest.fixture(scope="module")
def factory_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    src = pypi_wheel("open-flamingo", "0.0.2", tmp_path_factory.mktemp("open-flamingo"))
    return (src / "open_flamingo" / "src" / "factory.py").read_text()


@pytest.fixture(scope="module")
def tokenizer(factory_source: str) -> Any:
    """A LLaMA-1-style tokenizer (no pad token) after factory.py's special-token lines."""
    from tiny_models_parity import mistral_sp_tokenizer

    assert '{"additional_special_tokens": ["<|endofchunk|>", "<image>"]}' in factory_source
    assert 'if text_tokenizer.pad_token is None:' in factory_source
    assert 'add_special_tokens({"pad_token": "<PAD>"})' in factory_source
    tok = mistral_sp_tokenizer()
    tok.pad_token = None
    tok.add_special_tokens({"additional_special_tokens": ["<|endofchunk|>", "<image>"]})
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<PAD>"})
    return tok


@pytest.fixture(scope="module")
def med_flamingo() -> Path:
    return reference_folder("med_flamingo")


@pytest.fixture(scope="module")
def encode_text(med_flamingo: Path) -> Any:
    """``FlamingoProcessor(tokenizer, ...).encode_text`` from the reference ``src/utils.py``."""
    utils = load_by_path("med_flamingo_ref_utils", med_flamingo / "src" / "utils.py")
    return lambda tok, text: utils.FlamingoProcessor(tok, None).encode_text(text)


def demo_prompt(med_flamingo: Path) -> str:
    """The string assigned to ``prompt`` in demo.py's ``main()``."""
    tree = ast.parse((med_flamingo / "scripts" / "demo.py").read_text())
    found = [node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "prompt" for t in node.targets)
             and isinstance(node.value, ast.Constant)]
    assert len(found) == 1
    return found[0]


def test_the_demo_prompt_renders_byte_for_byte(med_flamingo: Path) -> None:
    reference = demo_prompt(med_flamingo)
    system, *chunks = reference.split(MEDIA_TOKEN)
    parts: list[Any] = []
    for n, chunk in enumerate(chunks):
        parts.append(ImagePart(index=n, path=f"img{n}.png"))
        text = chunk.removesuffix(END_OF_CHUNK)
        if n == len(chunks) - 1:  # the query: our renderer writes its cues
            text = text.removeprefix("Question: ").removesuffix(" Answer:")
        parts.append(TextPart(text=text))
    same_value("shots", len(chunks), 7)
    ours = render_med_flamingo(Prompt(parts=parts), system=system.strip())
    same_text("demo.py prompt", ours, reference)
    same_text("demo.py prompt (our system sentence)", render_med_flamingo(Prompt(parts=parts)), reference)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images-flamingo")))}


@pytest.mark.parametrize("name", ITEM_IDS)
def test_token_ids_match_flamingo_processor(name: str, tokenizer: Any, encode_text: Any,
                                            cases: dict[str, Item]) -> None:
    item = cases[name]
    text = render_med_flamingo(item.prompt)
    n = len(item.paths)
    # Pinned layout (module docstring): the images before the question are text-less chunks.
    same_text("layout", text[text.index(MEDIA_TOKEN):text.index("Question: ")],
              f"{MEDIA_TOKEN}{END_OF_CHUNK}" * (n - 1) + MEDIA_TOKEN)
    ref = encode_text(tokenizer, text)
    ours = encode_prompts(tokenizer, [text])
    same_ids("input ids", ours["input_ids"][0], ref["input_ids"][0])
    same_ids("attention mask", ours["attention_mask"][0], ref["attention_mask"][0])
    media, chunk = (tokenizer.encode(t)[-1] for t in (MEDIA_TOKEN, END_OF_CHUNK))  # as factory.py takes them
    same_value("<image> ids", int((ours["input_ids"][0] == media).sum()), n)
    same_value("<|endofchunk|> ids", int((ours["input_ids"][0] == chunk).sum()), n - 1)
    same_value("bos", int(ours["input_ids"][0][0]), tokenizer.bos_token_id)


def test_a_batch_is_left_padded_rows_of_the_same_ids(tokenizer: Any, encode_text: Any,
                                                     cases: dict[str, Item]) -> None:
    texts = [render_med_flamingo(cases[name].prompt) for name in ("closed-1", "open-3")]
    batch = encode_prompts(tokenizer, texts)
    same_value("padding side", tokenizer.padding_side, "left")
    for row, text in enumerate(texts):
        ref = encode_text(tokenizer, text)["input_ids"][0]
        same_ids(f"row {row}", batch["input_ids"][row][-len(ref):], ref)
        same_value(f"row {row} mask", int(batch["attention_mask"][row].sum()), len(ref))

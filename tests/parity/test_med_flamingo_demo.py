"""med-flamingo's prompt layout and token ids against Med-Flamingo's own code
(``<reference>/med_flamingo``, snap-stanford/med-flamingo @ b3c1e64: ``scripts/demo.py``,
``src/utils.py``) and ``open-flamingo==0.0.2`` (PyPI, downloaded without dependencies).

The prompt: ``demo.py``'s few-shot prompt, read from the file, written as a Med-MIM prompt (each
shot an image and its ``Question: ... Answer: ...`` text, the query an image and its question) must
render byte for byte. Token ids: ``FlamingoProcessor.encode_text`` (``src/utils.py``, imported by
path; it needs only torch) on a LLaMA-style sentencepiece tokenizer given the special tokens
exactly as ``open_flamingo/src/factory.py`` adds them (``<|endofchunk|>``, ``<image>``, ``<PAD>``
when there is no pad token; the factory itself also builds CLIP through open_clip, which needs
torchvision, so its tokenizer lines are checked in its source and repeated here).

Pixels: ``vision_x`` as demo.py builds it (``FlamingoProcessor.preprocess_images`` on the opened
files, ``repeat(..., 'N c h w -> b N T c h w')``) with the transform open_flamingo's factory takes from
``open_clip.create_model_and_transforms("ViT-L-14", pretrained="openai")``: ``image_transform`` of
``open_clip_torch==2.16.0`` (PyPI, no dependencies; Med-Flamingo's install.sh names a fork at that
release plus one model config), run with torchvision 0.28.0 (downloaded likewise); also against the
transform as the README describes it, written out in PIL + numpy.

Generation: open_flamingo 0.0.2's own ``Flamingo.generate`` (compiled from its source; the class
needs CLIP, the perceiver and the gated cross-attention layers, so ``_encode_vision_x`` only keeps
its input) over a tiny random LLaMA, called as demo.py calls it and through our adapter's ``run``:
the same ``vision_x``, the same keywords reaching the language model's ``generate`` (greedy, one
beam, eos ``<|endofchunk|>``), the same tokens.

Pinned on purpose: the budget (tasks set max_new_tokens; demo.py's 10 is used here to compare);
the answer (demo.py prints the whole decoded sequence, prompt included; we keep the new tokens up to
``<|endofchunk|>`` or ``</s>``, special tokens dropped); images are made 8-bit RGB before the
transform (demo.py hands open_clip the opened file; the same pixels, checked for a grey image);
demo.py has one question per image; a Med-MIM item asks one question about several images, so the
images before the question become chunks with no text (``<image><|endofchunk|>``), the question
sitting in the last image's chunk.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from compare import same_ids, same_pixels, same_text, same_value
from items import ITEM_IDS, Item, items, make_images
from references import load_by_path, pypi_wheel, reference_folder

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapters.hf.med_flamingo.adapter import encode_prompts  # noqa: E402
from medmim_eval.adapters.hf.med_flamingo.prompt import END_OF_CHUNK, MEDIA_TOKEN, render_med_flamingo  # noqa: E402
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


# --- pixels: open_clip's ViT-L-14 transform, as open_flamingo 0.0.2's factory gets it ------------
OPEN_CLIP = "2.16.0"  # Med-Flamingo's install.sh: usuyama/open_clip @ 01a53cc = 2.16.0 + one model config


@pytest.fixture(scope="module")
def clip_preprocess(tmp_path_factory: pytest.TempPathFactory, factory_source: str) -> Any:
    """``preprocess_val`` of ``open_clip.create_model_and_transforms("ViT-L-14", pretrained="openai")``
    (what open_flamingo's factory returns as ``image_processor``), built from open_clip's own
    ``transform.py`` without building CLIP: the factory's call is checked in its source, the image
    size read from ``model_configs/ViT-L-14.json`` (the OpenAI weights give 14 x 16 = 224 as well),
    mean and std left to ``image_transform``'s defaults as the ``openai`` branch leaves them."""
    import importlib
    import json
    import sys
    from types import ModuleType

    from references import on_path, torchvision_importable

    assert "vision_encoder, _, image_processor = open_clip.create_model_and_transforms(" in factory_source
    src = pypi_wheel("open_clip_torch", OPEN_CLIP, tmp_path_factory.mktemp("open-clip"))
    factory = (src / "open_clip" / "factory.py").read_text()
    assert "preprocess_val = image_transform(\n        model.visual.image_size,\n        is_train=False," in factory
    assert "image_mean = image_mean or getattr(model.visual, 'image_mean', None)" in factory
    size = json.loads((src / "open_clip" / "model_configs" / "ViT-L-14.json").read_text())["vision_cfg"]["image_size"]
    with torchvision_importable(tmp_path_factory.mktemp("torchvision")), on_path(src, "open_clip"):
        package = ModuleType("open_clip")  # its __init__ imports ftfy and the models; only transform.py is needed
        package.__path__ = [str(src / "open_clip")]
        sys.modules["open_clip"] = package
        transform = importlib.import_module("open_clip.transform")
        yield transform.image_transform(size, is_train=False, mean=None, std=None)


def clip_by_hand(image: Any, size: int = 224) -> Any:
    """What the README says the transform does, in PIL + numpy: the short side to 224 (bicubic, the
    long side truncated), the centre 224 x 224 (offset rounded), RGB, /255, CLIP mean and std."""
    import numpy as np
    from PIL import Image

    w, h = image.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    rgb = np.asarray(image.crop((left, top, left + size, top + size)).convert("RGB"), dtype=np.float32) / 255.0
    mean = np.asarray([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.asarray([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return torch.from_numpy(((rgb - mean) / std).transpose(2, 0, 1).copy())


def bare_adapter(**attributes: Any) -> Any:
    """Our MedFlamingoAdapter without its constructor (which builds CLIP ViT-L-14 and LLaMA-7B)."""
    from medmim_eval.adapters.hf.med_flamingo.adapter import MedFlamingoAdapter

    adapter = object.__new__(MedFlamingoAdapter)
    adapter.max_images, adapter.model_id = 3, "med-flamingo:parity"
    for name, value in attributes.items():
        setattr(adapter, name, value)
    return adapter


def reference_vision_x(med_flamingo: Path, preprocess: Any, paths: tuple[str, ...]) -> Any:
    """demo.py: ``FlamingoProcessor.preprocess_images`` on the opened files, then
    ``repeat(pixels, 'N c h w -> b N T c h w', b=1, T=1)``."""
    from einops import repeat
    from PIL import Image

    utils = load_by_path("med_flamingo_ref_utils", med_flamingo / "src" / "utils.py")
    pixels = utils.FlamingoProcessor(None, preprocess).preprocess_images([Image.open(p) for p in paths])
    return repeat(pixels, "N c h w -> b N T c h w", b=1, T=1)


@pytest.mark.parametrize("name", ITEM_IDS)
def test_vision_x_matches_demo_py(name: str, clip_preprocess: Any, med_flamingo: Path, cases: dict[str, Item]) -> None:
    from medmim_eval.adapters.hf.med_flamingo.adapter import stack_vision_x

    item = cases[name]
    _, images, _ = bare_adapter().prepare_sample(item.sample())
    ours = stack_vision_x(torch, [images], clip_preprocess)
    same_pixels("vision_x", ours, reference_vision_x(med_flamingo, clip_preprocess, item.paths))
    from PIL import Image

    for n, path in enumerate(item.paths):  # and the transform is what the README says it is
        with Image.open(path) as image:
            same_pixels(f"image {n + 1} by hand", clip_by_hand(image), ours[0, n, 0])


def test_a_grey_image_gives_demo_py_s_pixels(tmp_path: Path, clip_preprocess: Any, med_flamingo: Path) -> None:
    """We convert to 8-bit RGB before the transform; demo.py hands open_clip the opened file, which
    converts after resizing: the same pixels for a grey image."""
    import numpy as np
    from PIL import Image

    from medmim_eval.adapters.hf.med_flamingo.adapter import stack_vision_x

    path = tmp_path / "grey.png"
    y, x = np.mgrid[0:230, 0:310]
    Image.fromarray(((x * 3 + y * 5) % 256).astype("uint8"), "L").save(path)
    item = Item("grey", "open", "<image>" + "What is shown?", (str(path),))
    _, images, _ = bare_adapter().prepare_sample(item.sample())
    same_pixels("vision_x", stack_vision_x(torch, [images], clip_preprocess),
                reference_vision_x(med_flamingo, clip_preprocess, item.paths))


# --- generation: open_flamingo 0.0.2's own Flamingo.generate, called as demo.py calls it -------------
@pytest.fixture(scope="module")
def flamingo_generate(factory_source: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``Flamingo.generate`` and its signature, compiled from open_flamingo 0.0.2's ``flamingo.py``
    (the class itself needs the perceiver and the gated cross-attention layers; only this method is taken)."""
    src = pypi_wheel("open-flamingo", "0.0.2", tmp_path_factory.mktemp("open-flamingo"))  # the session's download
    tree = ast.parse((src / "open_flamingo" / "src" / "flamingo.py").read_text())
    [method] = [node for cls in tree.body if isinstance(cls, ast.ClassDef) and cls.name == "Flamingo"
                for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == "generate"]
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(ast.Module(body=[method], type_ignores=[]), "open_flamingo/src/flamingo.py", "exec"), namespace)
    return namespace["generate"]


class TinyFlamingo:
    """open_flamingo's ``generate`` over a tiny random LLaMA; ``_encode_vision_x`` (CLIP, perceiver,
    cross-attention conditioning) only keeps the ``vision_x`` it is given. Records the language
    model's ``generate`` keywords."""

    def __init__(self, generate: Any, tokenizer: Any) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        self.lang_encoder = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).eval()
        self.lang_encoder.clear_conditioned_layers = lambda: None
        real = self.lang_encoder.generate
        self.calls: list[dict[str, Any]] = []

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append({"args": args, **kwargs})
            return real(*args, **kwargs)

        self.lang_encoder.generate = spy
        self.eoc_token_id = tokenizer.encode(END_OF_CHUNK)[-1]  # as factory.py takes it
        self.generate = generate.__get__(self)

    def _encode_vision_x(self, vision_x: Any) -> None:
        self.vision_x = vision_x


def test_generation_is_demo_py_s(flamingo_generate: Any, tokenizer: Any, encode_text: Any, med_flamingo: Path,
                                 clip_preprocess: Any, cases: dict[str, Item]) -> None:
    from medmim_eval.adapter import GenerationSettings
    from medmim_eval.adapters.hf.common import placement

    tree = ast.parse((med_flamingo / "scripts" / "demo.py").read_text())
    [call] = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "generate"]
    demo_kwargs = {k.arg: k.value for k in call.keywords}
    same_value("demo.py's generate keywords", sorted(demo_kwargs), ["attention_mask", "lang_x", "max_new_tokens",
                                                                    "vision_x"])
    budget = ast.literal_eval(demo_kwargs["max_new_tokens"])
    item = cases["open-2"]
    model = TinyFlamingo(flamingo_generate, tokenizer)
    # demo.py's call on its inputs.
    tokens = encode_text(tokenizer, render_med_flamingo(item.prompt))
    demo_out = model.generate(vision_x=reference_vision_x(med_flamingo, clip_preprocess, item.paths),
                              lang_x=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                              max_new_tokens=budget)
    demo_vision_x = model.vision_x
    # Ours, with the same budget (pinned: tasks set max_new_tokens; demo.py's 10 is a demo's).
    stops = [i for i in (tokenizer.convert_tokens_to_ids(END_OF_CHUNK), tokenizer.eos_token_id) if isinstance(i, int)]
    adapter = bare_adapter(torch=torch, model=model, tokenizer=tokenizer, image_processor=clip_preprocess,
                           stop_ids=stops, placement=placement(torch, {"device": "cpu", "dtype": "fp32"}))
    [ours] = adapter.run([adapter.prepare_sample(item.sample())], GenerationSettings(max_new_tokens=budget))
    same_pixels("vision_x given to the model", model.vision_x, demo_vision_x)
    demo_lm, our_lm = model.calls
    tensors = ("args", "attention_mask")
    same_value("the language model's generate keywords", {k: v for k, v in our_lm.items() if k not in tensors},
               {k: v for k, v in demo_lm.items() if k not in tensors})
    same_ids("lang_x", our_lm["args"][0][0], demo_lm["args"][0][0])
    same_ids("attention mask", our_lm["attention_mask"][0], demo_lm["attention_mask"][0])
    same_value("greedy, stop at <|endofchunk|>", (demo_lm["num_beams"], demo_lm["do_sample"], demo_lm["eos_token_id"]),
               (1, False, model.eoc_token_id))
    # Pinned: demo.py prints the whole decoded sequence (prompt and answer, special tokens kept);
    # we keep the answer: the new tokens up to <|endofchunk|> or </s>, special tokens dropped.
    new = demo_out[0, tokens["input_ids"].shape[1]:].tolist()
    ends = [i for i, t in enumerate(new) if t in stops]
    same_text("answer", ours.text, tokenizer.decode(new[:ends[0]] if ends else new, skip_special_tokens=True).strip())
    same_value("token counts", ours.tokens, {"prompt_tokens": tokens["input_ids"].shape[1],
                                             "completion_tokens": len(new[:ends[0]] if ends else new)})

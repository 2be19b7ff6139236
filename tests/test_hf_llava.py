"""The ``hf-llava`` adapter with the real transformers classes and the tiny SigLIP+Llama checkpoint."""
from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf_llava import HFLlavaAdapter, make_hf_llava  # noqa: E402
from medmim_eval.errors import MedmimError, MissingBackendError  # noqa: E402
from medmim_eval.schema import ImagePart, Prompt, Sample, TextPart  # noqa: E402

QUESTION = "Which image is brightest?\nA: first\nB: second\n"
TOKENS_PER_IMAGE = 64  # 64 x 64 px, patch 8, "full" strategy


@pytest.fixture(scope="session")
def ckpt() -> Path:
    from tiny_models import tiny_llava

    return tiny_llava()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("hf-images")
    paths = []
    for j in range(4):
        path = folder / f"img{j}.png"
        Image.new("RGB", (48, 40 + 8 * j), (70 * j, 255 - 60 * j, 30 + 40 * j)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def adapter(ckpt: Path) -> HFLlavaAdapter:
    return make_hf_llava(str(ckpt), {"format": "mantis_llama3", "batch": "4"}, AdapterContext())


def sample(paths: list[str], key: str = "k", order: list[int] | None = None) -> Sample:
    order = order if order is not None else list(range(len(paths)))
    parts: list[Any] = [ImagePart(index=i, path=paths[i]) for i in order]
    return Sample(key=key, task="t", ability="a", source="s", item_id=key, file="f.json", index=0,
                  images=[Path(p).name for p in paths], image_paths=paths, prompt=Prompt(parts=[*parts, TextPart(text=QUESTION)]),
                  question=QUESTION, kind="closed", options={"A": "first", "B": "second"}, answer="A")


def generate(adapter: HFLlavaAdapter, samples: list[Sample], tokens: int = 8) -> list[GenerationResult | BaseException]:
    settings = GenerationSettings(max_new_tokens=tokens)
    return asyncio.run(adapter.generate([GenerationRequest(sample=s, settings=settings) for s in samples]))


def image_task(folder: Path, counts: list[int]) -> Path:
    """A Med-MIM JSON task with one closed item per entry of ``counts`` (images per item)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, count in enumerate(counts):
        names = [f"img{i}_{j}.png" for j in range(count)]
        for j, name in enumerate(names):
            Image.new("RGB", (48, 48), ((60 * j) % 256, 255 - 50 * j, 40 * i % 256)).save(folder / name)
        items.append({"id": f"item-{i}", "images": names, "source": "TEST_multichoice",
                      "conversation": [{"role": "user", "content": "<image>" * count + QUESTION},
                                       {"role": "assistant", "content": "A: first"}]})
    path = folder / "images.json"
    path.write_text(json.dumps(items))
    return path


def records(out: Path) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    return {r["n_images"]: r for r in lines}


def test_the_checkpoint_loads_and_the_prompt_is_the_mantis_format(adapter: HFLlavaAdapter, images: list[str]) -> None:
    text, loaded, record = adapter.prepare_sample(sample(images[:2]))
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                    "(image 1: <Image><image></Image>)(image 2: <Image><image></Image>)"
                    "Which image is brightest?\nA: first\nB: second\n"
                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert len(loaded) == 2 and record.n_images == 2 and record.image_order == [0, 1]
    ids = adapter.encode([text], [loaded])["input_ids"][0]
    assert int((ids == adapter.model.config.image_token_id).sum()) == 2 * TOKENS_PER_IMAGE
    assert adapter.fingerprint()["weights"] and adapter.fingerprint()["config_sha256"]


def test_image_order_changes_the_logits(adapter: HFLlavaAdapter, images: list[str]) -> None:
    forward = adapter.next_token_logits(sample(images[:2], order=[0, 1]))[0]
    again = adapter.next_token_logits(sample(images[:2], order=[0, 1]))[0]
    swapped = adapter.next_token_logits(sample(images[:2], order=[1, 0]))[0]
    noise = float((forward - again).abs().max())
    change = float((forward - swapped).abs().max())
    assert change > max(10 * noise, 1e-4), (noise, change)


def test_a_mixed_batch_answers_as_one_by_one(adapter: HFLlavaAdapter, images: list[str]) -> None:
    batch = [sample(images[:2], "a"), sample(images[:3], "b"), sample(images[1:3], "c"),
             sample(images[:3], "d", order=[2, 0, 1])]
    together = generate(adapter, batch, tokens=16)
    alone = [generate(adapter, [s], tokens=16)[0] for s in batch]
    assert len({r.text for r in alone if isinstance(r, GenerationResult)}) >= 2  # the comparison means something
    padded = adapter.next_token_logits(*batch)
    for row, one in enumerate(batch):
        assert float((padded[row] - adapter.next_token_logits(one)[0]).abs().max()) < 1e-4
    for joint, single in zip(together, alone):
        assert isinstance(joint, GenerationResult) and isinstance(single, GenerationResult)
        assert joint.text == single.text and joint.tokens == single.tokens and joint.sent == single.sent
    assert [r.sent.n_images for r in together] == [2, 3, 2, 3]  # type: ignore[union-attr]
    assert together[3].sent.image_order == [2, 0, 1]  # type: ignore[union-attr]


def test_too_many_images_is_an_error_not_a_truncation(adapter: HFLlavaAdapter, images: list[str]) -> None:
    out = generate(adapter, [sample(images[:4], "four"), sample(images[:2], "two")])
    assert isinstance(out[0], MedmimError) and "4 images, more than max_images=3" in str(out[0])
    assert isinstance(out[1], GenerationResult)


def test_llava_med_format_pads_to_square(ckpt: Path, images: list[str]) -> None:
    med = make_hf_llava(str(ckpt), {"format": "llava_med_mistral", "batch": "2"}, AdapterContext())
    text, loaded, record = med.prepare_sample(sample(images[1:3]))
    assert text == "[INST] <image>\n<image>\nWhich image is brightest?\nA: first\nB: second\n [/INST]"
    assert all(im.width == im.height == 56 or im.width == im.height == 48 for im in loaded)
    assert any("padded to" in note for note in record.notes)
    result = generate(med, [sample(images[1:3])], tokens=4)[0]
    assert isinstance(result, GenerationResult) and result.sent.image_sizes == [(64, 64), (64, 64)]  # type: ignore[union-attr]


def test_prerequisites_name_the_fix(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MedmimError, match="no config.json"):
        make_hf_llava(str(tmp_path), {}, AdapterContext())
    with pytest.raises(MedmimError, match="format='idefics2'"):
        make_hf_llava(str(ckpt), {"format": "idefics2"}, AdapterContext())
    with pytest.raises(MedmimError, match="unknown option"):
        make_hf_llava(str(ckpt), {"tp": "2"}, AdapterContext())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingBackendError, match=r"pip install 'medmim-eval\[hf\]'"):
        make_hf_llava(str(ckpt), {}, AdapterContext())


def test_run_answers_two_and_three_images_and_flags_a_fourth(ckpt: Path, tmp_path: Path) -> None:
    task = image_task(tmp_path / "imgs", [2, 3, 4])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-llava:{ckpt},format=mantis_llama3,batch=4", "--tasks", str(task),
                     "--max-new-tokens", "4", "--output", str(out), "--quiet")
    assert result.returncode != 0 and "1 sample(s) ended in errors" in result.stderr, result.stderr
    done = records(out)
    assert set(done) == {2, 3, 4}
    assert "more than max_images=3" in done[4]["error"]["message"] and done[4]["output"] is None
    for n in (2, 3):
        record = done[n]
        assert record["error"] is None and record["output"] is not None
        assert record["sent"]["n_images"] == n and record["sent"]["image_order"] == list(range(n))
        assert record["sent"]["image_sizes"] == [[64, 64]] * n and record["sent"]["rendered_prompt_sha256"]
        assert record["tokens"]["prompt_tokens"] > n * TOKENS_PER_IMAGE


def test_eos_ids_include_the_format_stop_token(adapter: HFLlavaAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    assert adapter.eos_ids == [adapter.tokenizer.eos_token_id]  # the tiny vocabulary has no <|eot_id|>
    monkeypatch.setattr(adapter.tokenizer, "get_vocab", lambda: {"<|eot_id|>": 7})
    assert adapter._eos_ids() == [adapter.tokenizer.eos_token_id, 7]


def test_default_format_follows_the_checkpoint(tmp_path: Path) -> None:
    from medmim_eval.adapters.hf_plugin import default_format

    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"model_type": "mistral"}}))
    assert default_format(tmp_path) == "llava_med_mistral"
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"model_type": "llama"}}))
    assert default_format(tmp_path) == "mantis_llama3"
    (tmp_path / "config.json").write_text(json.dumps({"medmim_prompt_format": "llava_med_mistral"}))
    assert default_format(tmp_path) == "llava_med_mistral"


def test_sampling_with_a_temperature_is_seeded(adapter: HFLlavaAdapter, images: list[str]) -> None:
    settings = GenerationSettings(max_new_tokens=8, temperature=0.7, seed=3)
    runs = [asyncio.run(adapter.generate([GenerationRequest(sample=sample(images[:2]), settings=settings)]))[0]
            for _ in range(2)]
    assert all(isinstance(r, GenerationResult) for r in runs) and runs[0].text == runs[1].text  # type: ignore[union-attr]

"""The ``hf-internvl`` adapter with real transformers classes on tiny InternVL checkpoints.

The remote route runs InternVL2's own remote code (copied from the reference folder into a tiny
InternViT + InternLM2 checkpoint, loaded through ``auto_map`` with ``trust_remote_code=True``; skipped
when the reference folder is absent). Its ``chat`` calls are recorded by a spy that passes them on.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import run_cli
from parity.references import internvl2_pythonpath

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationRequest, GenerationResult, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.internvl.adapter import HFInternVLAdapter, make_hf_internvl  # noqa: E402
from medmim_eval.adapters.hf.internvl.tiling import choose_grid, per_image_budget, tile_image  # noqa: E402
from medmim_eval.errors import MedmimError, MissingBackendError, TooManyImagesError  # noqa: E402
from medmim_eval.schema import ImagePart, Prompt, Sample, TextPart  # noqa: E402

QUESTION = "Which image is brightest?\nA: first\nB: second\n"
SIZES = [(80, 40), (40, 40), (30, 90), (64, 64)]  # 2:1, square, 1:3, square


@pytest.fixture(scope="session", autouse=True)
def modules_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Remote code is copied into a temporary modules cache, not the user's ~/.cache/huggingface."""
    import transformers.dynamic_module_utils as dynamic

    folder = tmp_path_factory.mktemp("hf-modules")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def native_ckpt() -> Path:
    from tiny_models_internvl import tiny_internvl

    return tiny_internvl()


@pytest.fixture(scope="session")
def remote_ckpt() -> Path:
    from tiny_models_internvl import tiny_internvl_remote

    return tiny_internvl_remote()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("internvl-images")
    rng = np.random.default_rng(0)
    paths = []
    for j, (width, height) in enumerate(SIZES):
        path = folder / f"img{j}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def native(native_ckpt: Path) -> HFInternVLAdapter:
    return make_hf_internvl(str(native_ckpt), {"batch": "4"}, AdapterContext())


@pytest.fixture(scope="session")
def remote(remote_ckpt: Path, modules_cache: Path) -> HFInternVLAdapter:
    return recording(make_hf_internvl(str(remote_ckpt), {}, AdapterContext()))


def recording(adapter: HFInternVLAdapter) -> HFInternVLAdapter:
    """``adapter.model.last_chat``: the arguments of the last ``chat`` call, which still runs."""
    real = adapter.model.chat

    def chat(tokenizer: Any, pixel_values: Any, question: str, generation_config: dict[str, Any], **kwargs: Any) -> Any:
        adapter.model.last_chat = {"question": question, "num_patches_list": list(kwargs.get("num_patches_list") or []),
                                   "pixel_values": None if pixel_values is None else pixel_values.detach().cpu(),
                                   "generation_config": dict(generation_config)}
        return real(tokenizer, pixel_values, question, generation_config, **kwargs)

    adapter.model.chat = chat
    return adapter


def sample(paths: list[str], key: str = "k", order: list[int] | None = None) -> Sample:
    order = order if order is not None else list(range(len(paths)))
    parts: list[Any] = [ImagePart(index=i, path=paths[i]) for i in order]
    return Sample(key=key, task="t", ability="a", source="s", item_id=key, file="f.json", index=0,
                  images=[Path(p).name for p in paths], image_paths=paths,
                  prompt=Prompt(parts=[*parts, TextPart(text=QUESTION)]), question=QUESTION, kind="closed",
                  options={"A": "first", "B": "second"}, answer="A")


def generate(adapter: HFInternVLAdapter, samples: list[Sample], tokens: int = 8) -> list[GenerationResult | BaseException]:
    settings = GenerationSettings(max_new_tokens=tokens)
    return asyncio.run(adapter.generate([GenerationRequest(sample=s, settings=settings) for s in samples]))


# --- tiling --------------------------------------------------------------------------------------
def test_grid_choice_agrees_with_transformers_implementation() -> None:
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    for width in (17, 40, 100, 448, 500, 900, 1344, 2000):
        for height in (20, 64, 448, 600, 896, 1500):
            for budget in (1, 2, 4, 6, 12):
                theirs = get_optimal_tiled_canvas((height, width), (448, 448), 1, budget)
                assert choose_grid(width, height, 448, 1, budget) == tuple(theirs), (width, height, budget)


def test_tiles_match_transformers_gotocr2_pixels(images: list[str]) -> None:
    from PIL import Image
    from transformers import GotOcr2ImageProcessorPil

    from medmim_eval.adapters.hf.internvl.tiling import IMAGENET_MEAN, IMAGENET_STD

    processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, max_patches=6,
                                         image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                                         resample=3)
    for path in images:
        with Image.open(path) as image:
            ours = tile_image(image, tile_size=32, max_tiles=6)
            theirs = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        assert ours.pixel_values.shape == theirs.shape
        assert float((ours.pixel_values - theirs).abs().max()) < 1e-4


def test_a_wide_image_is_two_tiles_and_a_thumbnail() -> None:
    from PIL import Image

    tiled = tile_image(Image.new("RGB", (896, 448), (255, 0, 0)), max_tiles=12)
    assert tiled.grid == (2, 1) and tiled.thumbnail and tiled.n_tiles == 3
    assert tuple(tiled.pixel_values.shape) == (3, 3, 448, 448)
    # Pure red, ImageNet-normalised: (1 - 0.485) / 0.229 in the red channel everywhere.
    assert abs(float(tiled.pixel_values[:, 0].mean()) - (1 - 0.485) / 0.229) < 1e-4
    assert per_image_budget(12, 3) == 4 and per_image_budget(2, 3) == 1


# --- prompts -------------------------------------------------------------------------------------
def test_remote_question_labels_each_image(remote: HFInternVLAdapter, images: list[str]) -> None:
    # One image: InternVL2's single-image form, unlabelled (tests/parity checks both against its code).
    assert remote.render(sample(images[:1])) == "<image>\nWhich image is brightest?\nA: first\nB: second\n"
    assert remote.render(sample(images[:2])) == (
        "Image-1: <image>\nImage-2: <image>\nWhich image is brightest?\nA: first\nB: second\n")
    assert remote.render(sample(images[:3])) == (
        "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nWhich image is brightest?\nA: first\nB: second\n")


def test_native_prompt_is_the_checkpoint_chat_template(native: HFInternVLAdapter, images: list[str]) -> None:
    head, tail = "<|im_start|>user\n", "Which image is brightest?\nA: first\nB: second\n<|im_end|>\n<|im_start|>assistant\n"
    assert native.render(sample(images[:2])) == head + "<IMG_CONTEXT>\n" * 2 + tail
    assert native.render(sample(images[:3])) == head + "<IMG_CONTEXT>\n" * 3 + tail


def test_native_internvl2_prompt_is_chat_s_query(native_ckpt: Path, images: list[str]) -> None:
    """prompt=internvl2: InternVL2-8B's internlm2-chat query (tests/parity checks it against its code)."""
    from medmim_eval.adapters.hf.internvl.adapter import INTERNLM2_CHAT_SYSTEM

    adapter = make_hf_internvl(str(native_ckpt), {"prompt": "internvl2"}, AdapterContext())
    head = f"<|im_start|>system\n{INTERNLM2_CHAT_SYSTEM}<|im_end|><|im_start|>user\n"
    tail = "Which image is brightest?\nA: first\nB: second\n<|im_end|><|im_start|>assistant\n"
    assert adapter.render(sample(images[:1])) == head + "<IMG_CONTEXT>\n" + tail
    assert adapter.render(sample(images[:2])) == head + "Image-1: <IMG_CONTEXT>\nImage-2: <IMG_CONTEXT>\n" + tail
    assert adapter.fingerprint()["prompt"] == "internvl2_internlm2_chat@2"
    assert adapter.fingerprint()["question"] == "internvl2_chat@2"
    bad = sample(images[:1]).model_copy(update={"prompt": Prompt(parts=[
        ImagePart(index=0, path=images[0]), TextPart(text="see <IMG_CONTEXT> here")])})
    with pytest.raises(MedmimError, match="prompt text itself contains"):
        adapter.prepare_sample(bad)


def test_stray_placeholder_in_the_text_is_refused(remote: HFInternVLAdapter, images: list[str]) -> None:
    bad = sample(images[:2]).model_copy(update={"prompt": Prompt(parts=[
        ImagePart(index=0, path=images[0]), TextPart(text="see <image> here")])})
    with pytest.raises(MedmimError, match="prompt text itself contains"):
        remote.prepare_sample(bad)


# --- the remote route (model.chat) ---------------------------------------------------------------
def test_remote_chat_gets_the_tiles_in_prompt_order(remote: HFInternVLAdapter, images: list[str]) -> None:
    from PIL import Image

    result = generate(remote, [sample(images[:3], order=[2, 0, 1])])[0]
    assert isinstance(result, GenerationResult), result
    call = remote.model.last_chat
    assert call["question"].startswith("Image-1: <image>\nImage-2: <image>\nImage-3: <image>\n")
    # Budget 12 over 3 images: at most 4 tiles each. 1:3 -> 1x3 + thumbnail, 2:1 -> 2x1 + thumbnail, square -> 1.
    assert call["num_patches_list"] == [4, 3, 1]
    assert result.sent is not None and result.sent.notes[0].startswith("tiles per image: [4, 3, 1]")
    assert result.sent.image_order == [2, 0, 1] and result.sent.image_sizes == [(32, 96), (64, 32), (32, 32)]
    expected = []
    for i in (2, 0, 1):
        with Image.open(images[i]) as image:
            expected.append(tile_image(image, tile_size=32, max_tiles=4).pixel_values)
    import torch

    assert torch.equal(call["pixel_values"], torch.cat(expected))
    assert call["generation_config"]["do_sample"] is False


def test_tile_budget_is_shared_so_three_images_fit(remote_ckpt: Path, images: list[str]) -> None:
    tight = recording(make_hf_internvl(str(remote_ckpt), {"max_tiles": "6"}, AdapterContext()))
    wide = [images[0]] * 3  # 2:1 images: 2x1 + thumbnail each when allowed 2 tiles
    result = generate(tight, [sample(wide)])[0]
    assert isinstance(result, GenerationResult), result
    assert tight.model.last_chat["num_patches_list"] == [3, 3, 3]
    assert "max_tiles=6 over 3 image(s): at most 2 each" in result.sent.notes[0]  # type: ignore[union-attr]
    alone = generate(tight, [sample(wide[:1])])[0]
    assert isinstance(alone, GenerationResult) and tight.model.last_chat["num_patches_list"] == [3]
    tiny_budget = recording(make_hf_internvl(str(remote_ckpt), {"max_tiles": "2"}, AdapterContext()))
    assert isinstance(generate(tiny_budget, [sample(wide)])[0], GenerationResult)
    assert tiny_budget.model.last_chat["num_patches_list"] == [1, 1, 1]  # at least one tile, never none


@pytest.mark.parametrize("mode", ["remote", "native"])
def test_too_many_images_is_an_error_not_a_truncation(mode: str, remote: HFInternVLAdapter,
                                                      native: HFInternVLAdapter, images: list[str]) -> None:
    adapter = remote if mode == "remote" else native
    out = generate(adapter, [sample(images[:4], "four"), sample(images[:2], "two")])
    assert isinstance(out[0], TooManyImagesError) and (out[0].n_images, out[0].max_images) == (4, 3)
    assert adapter.model_id in str(out[0])
    assert isinstance(out[1], GenerationResult)


# --- the native route ----------------------------------------------------------------------------
def test_native_image_order_changes_the_logits(native: HFInternVLAdapter, images: list[str]) -> None:
    forward = native.next_token_logits(sample(images[:2], order=[0, 1]))[0]
    again = native.next_token_logits(sample(images[:2], order=[0, 1]))[0]
    swapped = native.next_token_logits(sample(images[:2], order=[1, 0]))[0]
    noise = float((forward - again).abs().max())
    change = float((forward - swapped).abs().max())
    assert change > max(10 * noise, 1e-4), (noise, change)


def test_native_mixed_batch_answers_as_one_by_one(native: HFInternVLAdapter, images: list[str]) -> None:
    batch = [sample(images[:2], "a"), sample(images[:3], "b"), sample(images[1:3], "c"),
             sample(images[:3], "d", order=[2, 0, 1])]
    together = generate(native, batch, tokens=12)
    alone = [generate(native, [s], tokens=12)[0] for s in batch]
    assert len({r.text for r in alone if isinstance(r, GenerationResult)}) >= 2  # the comparison means something
    padded = native.next_token_logits(*batch)
    for row, one in enumerate(batch):
        assert float((padded[row] - native.next_token_logits(one)[0]).abs().max()) < 1e-4
    for joint, single in zip(together, alone):
        assert isinstance(joint, GenerationResult) and isinstance(single, GenerationResult)
        assert joint.text == single.text and joint.tokens == single.tokens and joint.sent == single.sent
    assert [r.sent.n_images for r in together] == [2, 3, 2, 3]  # type: ignore[union-attr]
    # 2 images share 12 tiles (6 each), 3 images 4 each: the 2:1 image is 2x1 + thumbnail either way,
    # the 1:3 image is 1x3 + thumbnail.
    assert together[1].sent.notes[0].startswith("tiles per image: [3, 1, 4]")  # type: ignore[union-attr]


def test_fingerprint_hashes_files_and_reads_lineage(native_ckpt: Path, tmp_path: Path,
                                                    remote: HFInternVLAdapter) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(native_ckpt, copy)
    (copy / "medmim_lineage.json").write_text(json.dumps({"recipe": "sft", "base": "tiny"}))
    adapter = make_hf_internvl(str(copy), {"dtype": "fp32"}, AdapterContext())
    print_ = adapter.fingerprint()
    assert print_["lineage"] == {"recipe": "sft", "base": "tiny"} and print_["mode"] == "native"
    assert set(print_["weights"]) == {"model.safetensors"} and len(print_["config_sha256"]) == 64
    assert print_["dtype"] == "float32"
    # Revision 2 of the native route: the PIL image processor always (tests/parity/test_internvl2_native.py).
    assert print_["prompt"] == "native_chat_template@2" and "prompt" not in remote.fingerprint()
    assert set(remote.fingerprint()["remote_code"]) == {"configuration_internvl_chat.py", "modeling_internvl_chat.py",
                                                        "configuration_intern_vit.py", "modeling_intern_vit.py",
                                                        "tokenization_internlm2.py"}
    assert remote.fingerprint()["question"] == "internvl2_chat@2"  # revision 2: one image is unlabelled
    (copy / "medmim_lineage.json").write_text("[1, 2]")
    with pytest.raises(MedmimError, match="medmim_lineage.json"):
        make_hf_internvl(str(copy), {}, AdapterContext())


# --- prerequisites -------------------------------------------------------------------------------
def test_mode_follows_the_checkpoint(remote: HFInternVLAdapter, native: HFInternVLAdapter) -> None:
    assert remote.mode == "remote" and remote.capabilities.batch_size == 1
    assert native.mode == "native" and native.capabilities.batch_size == 4


def test_prerequisites_name_the_fix(native_ckpt: Path, remote_ckpt: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MedmimError, match="no config.json"):
        make_hf_internvl(str(tmp_path), {}, AdapterContext())
    with pytest.raises(MedmimError, match="use mode=remote"):
        make_hf_internvl(str(remote_ckpt), {"mode": "native"}, AdapterContext())
    with pytest.raises(MedmimError, match="use mode=native"):
        make_hf_internvl(str(native_ckpt), {"mode": "remote"}, AdapterContext())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(MedmimError, match="not an InternVL checkpoint"):
        make_hf_internvl(str(tmp_path), {}, AdapterContext())
    with pytest.raises(MedmimError, match="max_tiles='0' must be a positive integer"):
        make_hf_internvl(str(native_ckpt), {"max_tiles": "0"}, AdapterContext())
    with pytest.raises(MedmimError, match="unknown option"):
        make_hf_internvl(str(native_ckpt), {"tiles": "2"}, AdapterContext())
    with pytest.raises(MedmimError, match="prompt='chatml': use checkpoint"):
        make_hf_internvl(str(native_ckpt), {"prompt": "chatml"}, AdapterContext())
    with pytest.raises(MedmimError, match="prompt= applies to mode=native"):
        make_hf_internvl(str(remote_ckpt), {"prompt": "internvl2"}, AdapterContext())
    bare = tmp_path / "no-template"
    shutil.copytree(native_ckpt, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(MedmimError, match="has no chat template"):
        make_hf_internvl(str(bare), {}, AdapterContext())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingBackendError, match=r"pip install 'medmim-eval\[hf\]'"):
        make_hf_internvl(str(native_ckpt), {}, AdapterContext())


def test_internlm2_without_generate_decodes_as_plain_greedy(remote: HFInternVLAdapter) -> None:
    """InternLM2's remote class has no GenerationMixin (transformers >= 4.50) and a legacy tuple cache
    (transformers 5's loop breaks it); the decoding loop it is given reuses the cache exactly: the
    same tokens as recomputing the whole sequence each step, and a left-padded row as alone."""
    import torch

    lm = remote.model.language_model
    assert "legacy_generate" in repr(lm.generate)
    tokenizer = remote.tokenizer

    def assert_greedy(prompt: "torch.Tensor", tokens: list[int]) -> None:
        """Each token is the argmax of the whole sequence recomputed without a cache, up to float
        noise: a random tiny model has near-ties that the cached and the uncached sums can break
        differently (a wrong cache moves logits by far more than 1e-4)."""
        sequence = prompt
        with torch.no_grad():
            for token in tokens:
                logits = lm(input_ids=sequence, use_cache=False).logits[0, -1]
                assert float(logits.max() - logits[token]) < 1e-4, (token, int(logits.argmax()))
                sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)

    ids = tokenizer("<|im_start|>user\nWhich image is brightest?<|im_end|>", return_tensors="pt")["input_ids"]
    new = lm.generate(input_ids=ids, max_new_tokens=6, eos_token_id=[-1])
    assert new.shape == (1, 6)
    assert_greedy(ids, new[0].tolist())
    short = tokenizer("<|im_start|>user\nfirst<|im_end|>", return_tensors="pt")["input_ids"]
    width = ids.shape[1]
    padded = torch.cat([torch.full((1, width - short.shape[1]), 2), short], dim=1)
    mask = torch.cat([torch.zeros(1, width - short.shape[1], dtype=torch.long), torch.ones_like(short)], dim=1)
    both = lm.generate(input_ids=torch.cat([padded, ids]), attention_mask=torch.cat([mask, torch.ones_like(ids)]),
                       max_new_tokens=4, eos_token_id=[-1])
    assert both.shape == (2, 4)
    assert_greedy(short, both[0].tolist())  # the left-padded row decodes as the short prompt alone
    assert_greedy(ids, both[1].tolist())


def test_remote_code_buffers_hold_what_its_constructor_computes(remote: HFInternVLAdapter) -> None:
    """transformers 5 loads on the meta device and leaves the non-persistent buffers that remote code
    computes in ``__init__`` (InternLM2's rotary ``cos_cached``) as uninitialised memory: garbage or
    NaN answers. The adapter restores them: they equal a model built on the CPU from the same config."""
    import torch
    from transformers import AutoModel

    loaded = dict(remote.model.named_non_persistent_buffers())
    assert any(name.endswith("cos_cached") for name in loaded)
    with torch.device("cpu"):
        built = dict(AutoModel.from_config(remote.model.config, trust_remote_code=True).named_buffers())
    for name, buffer in loaded.items():
        assert torch.equal(buffer, built[name].to(buffer.dtype)), name


def test_internvl2_8b_resolves_to_the_remote_route_without_vllm(remote_ckpt: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from medmim_eval.adapter import parse_model_specs
    from medmim_eval.adapters.vllm.server import has_vllm
    from medmim_eval.plugins import create_plugin_host
    from medmim_eval.run_setup import resolve_models

    if has_vllm(sys.executable):
        pytest.skip("the vLLM route comes first where vLLM is installed")
    monkeypatch.setenv("MEDMIM_WEIGHTS_INTERNVL2_8B", str(remote_ckpt))
    monkeypatch.setenv("MEDMIM_VLLM_PYTHON", sys.executable)
    [(spec, entry)], unavailable = resolve_models(parse_model_specs("internvl2-8b"), create_plugin_host())
    assert (spec.adapter, spec.target, entry.name) == ("hf-internvl", str(remote_ckpt), "hf-internvl")
    assert spec.option_dict == {"mode": "remote", "label": "internvl2-8b"} and unavailable == []


# --- end to end ----------------------------------------------------------------------------------
def image_task(folder: Path, counts: list[int]) -> Path:
    """A Med-MIM JSON task with one closed item per entry of ``counts`` (images per item)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, count in enumerate(counts):
        names = [f"img{i}_{j}.png" for j in range(count)]
        for j, name in enumerate(names):
            Image.new("RGB", (64 + 32 * j, 32), ((60 * j) % 256, 255 - 50 * j, 40 * i % 256)).save(folder / name)
        items.append({"id": f"item-{i}", "images": names, "source": "TEST_multichoice",
                      "conversation": [{"role": "user", "content": "<image>" * count + QUESTION},
                                       {"role": "assistant", "content": "A: first"}]})
    path = folder / "images.json"
    path.write_text(json.dumps(items))
    return path


@pytest.mark.parametrize("which", ["remote", "native"])
@pytest.mark.slow
def test_run_answers_two_and_three_images_and_flags_a_fourth(which: str, native_ckpt: Path, remote_ckpt: Path,
                                                              tmp_path: Path) -> None:
    ckpt = remote_ckpt if which == "remote" else native_ckpt
    task = image_task(tmp_path / "imgs", [2, 3, 4])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-internvl:{ckpt}", "--tasks", str(task), "--max-new-tokens", "4",
                     "--output", str(out), "--quiet", env={"HF_MODULES_CACHE": str(tmp_path / "modules")},
                     pythonpath=internvl2_pythonpath() if which == "remote" else None,
                     subprocess_=True)  # transformers reads HF_MODULES_CACHE when it is imported
    assert "Traceback" not in result.stderr, result.stderr
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    done = {r["n_images"]: r for r in lines}
    assert set(done) == {2, 3, 4}
    assert done[4]["error"]["type"] == "TooManyImagesError" and done[4]["output"] is None
    # 2:1, 3:1 and 4:1 images: 2x1, 3x1 and 4x1 grids + a thumbnail (6 tiles each for 2 images, 4 for 3).
    for n, tiles in ((2, "[3, 4]"), (3, "[3, 4, 5]")):
        record = done[n]
        assert record["error"] is None and record["output"] is not None
        assert record["sent"]["n_images"] == n and record["sent"]["rendered_prompt_sha256"]
        assert record["sent"]["notes"][0].startswith(f"tiles per image: {tiles}"), record["sent"]["notes"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"][0]["fingerprint"]["mode"] == which
    assert (tmp_path / "modules").is_dir() == (which == "remote")

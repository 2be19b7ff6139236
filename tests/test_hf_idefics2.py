"""The ``hf-idefics2`` adapter with the real transformers classes and a tiny Idefics2 checkpoint
(SigLIP-like vision tower, perceiver resampler with 8 latents, Mistral text model)."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from hf_cases import (QUESTION, assert_image_order_changes_logits, assert_mixed_batch_matches_one_by_one, generate,
                      image_task, make_images, records_by_images, sample)

pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationResult  # noqa: E402
from medmim_eval.adapters.hf.idefics2 import HFIdefics2Adapter, make_hf_idefics2  # noqa: E402
from medmim_eval.errors import MedmimError, MissingBackendError, TooManyImagesError  # noqa: E402

TOKENS_PER_IMAGE = 8  # the perceiver's latents (64 in Mantis-8B-Idefics2)


@pytest.fixture(scope="session")
def ckpt() -> Path:
    from tiny_models import tiny_idefics2

    return tiny_idefics2()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_images(tmp_path_factory.mktemp("idefics2-images"))


@pytest.fixture(scope="session")
def adapter(ckpt: Path) -> HFIdefics2Adapter:
    return make_hf_idefics2(str(ckpt), {"batch": "4"}, AdapterContext())


def test_two_images_render_as_mantis_idefics2_and_expand_to_perceiver_tokens(adapter: HFIdefics2Adapter,
                                                                              images: list[str]) -> None:
    text, loaded, record = adapter.prepare_sample(sample(images[:2]))
    assert text == "User:<image><image>Which image is brightest?\nA: first\nB: second\n<end_of_utterance>\nAssistant:"
    # The checkpoint's own chat template renders the same string.
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": QUESTION}]}]
    assert adapter.processor.apply_chat_template(messages, add_generation_prompt=True) == text
    assert len(loaded) == 2 and record.n_images == 2 and record.image_order == [0, 1]
    ids = adapter.encode([text], [loaded])["input_ids"][0].tolist()
    assert ids[0] == adapter.tokenizer.bos_token_id  # added by the tokenizer, not the text
    assert ids.count(adapter.image_token_id) == 2 * TOKENS_PER_IMAGE
    assert ids.count(adapter.tokenizer.convert_tokens_to_ids("<fake_token_around_image>")) == 3


def test_three_images_keep_their_positions_in_the_text(adapter: HFIdefics2Adapter, images: list[str]) -> None:
    text, loaded, record = adapter.prepare_sample(sample(images[:3], order=[2, 0, 1]))
    assert text == ("User:<image><image><image>Which image is brightest?\nA: first\nB: second\n"
                    "<end_of_utterance>\nAssistant:")
    assert record.image_order == [2, 0, 1] and [im.height for im in loaded] == [56, 40, 48]
    result = generate(adapter, [sample(images[:3], order=[2, 0, 1])], tokens=4)[0]
    assert isinstance(result, GenerationResult)
    # Aspect ratio kept (shortest edge >= 32, longest <= 64): each image's own size, in prompt order.
    assert result.sent.image_sizes == [(48, 56), (48, 40), (48, 48)]  # type: ignore[union-attr]
    assert result.tokens["prompt_tokens"] > 3 * TOKENS_PER_IMAGE  # type: ignore[index]


def test_swapping_images_changes_the_logits(adapter: HFIdefics2Adapter, images: list[str]) -> None:
    assert_image_order_changes_logits(adapter, images)


def test_a_mixed_two_and_three_image_batch_answers_as_one_by_one(adapter: HFIdefics2Adapter, images: list[str]) -> None:
    batch = [sample(images[:2], "a"), sample(images[:3], "b"), sample(images[1:3], "c"),
             sample(images[:3], "d", order=[2, 0, 1])]
    assert_mixed_batch_matches_one_by_one(adapter, batch)


def test_too_many_images_is_an_error_for_that_sample_only(adapter: HFIdefics2Adapter, images: list[str]) -> None:
    out = generate(adapter, [sample(images[:4], "four"), sample(images[:2], "two")])
    assert isinstance(out[0], TooManyImagesError) and (out[0].n_images, out[0].max_images) == (4, 3)
    assert adapter.model_id in str(out[0]) and "nothing was sent" in str(out[0])
    assert isinstance(out[1], GenerationResult)


def test_image_splitting_sends_four_crops_and_the_whole_image(ckpt: Path, images: list[str]) -> None:
    split = make_hf_idefics2(str(ckpt), {"image_splitting": "1"}, AdapterContext())
    text, loaded, _ = split.prepare_sample(sample(images[:2]))
    ids = split.encode([text], [loaded])["input_ids"][0].tolist()
    assert ids.count(split.image_token_id) == 2 * 5 * TOKENS_PER_IMAGE
    result = generate(split, [sample(images[:2])], tokens=2)[0]
    assert isinstance(result, GenerationResult) and len(result.sent.image_sizes) == 2  # type: ignore[union-attr]
    assert split.fingerprint()["image_splitting"] is True and any("4 crops" in n for n in result.sent.notes)  # type: ignore[union-attr]


def test_run_end_to_end_answers_two_and_three_images_and_flags_a_fourth(ckpt: Path, tmp_path: Path) -> None:
    task = image_task(tmp_path / "imgs", [2, 3, 4])
    out = tmp_path / "run"
    result = run_cli("run", "--models", f"hf-idefics2:{ckpt},batch=4", "--tasks", str(task), "--max-new-tokens", "4",
                     "--output", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "1 sample(s) not evaluated: more images than the model accepts" in result.stderr
    done = records_by_images(out)
    assert set(done) == {2, 3, 4}
    assert done[4]["error"]["type"] == "TooManyImagesError" and done[4]["output"] is None
    for n in (2, 3):
        record = done[n]
        assert record["error"] is None and record["output"] is not None
        assert record["sent"]["n_images"] == n and record["sent"]["image_order"] == list(range(n))
        assert record["sent"]["image_sizes"] == [[48, 48]] * n and record["sent"]["rendered_prompt_sha256"]
        assert record["tokens"]["prompt_tokens"] > n * TOKENS_PER_IMAGE
    fingerprint = json.loads((out / "manifest.json").read_text())["models"][0]["fingerprint"]
    assert fingerprint["adapter"] == "hf-idefics2" and fingerprint["format"] == "idefics2@2"
    assert fingerprint["expansion"] == "mantis_idefics2_delta"  # tokens as Mantis's processor makes them
    assert fingerprint["weights"] and fingerprint["config_sha256"] and fingerprint["dtype"] == "float32"


def _copy(ckpt: Path, folder: Path) -> Path:
    shutil.copytree(ckpt, folder)
    return folder


def test_a_processor_that_does_not_fit_the_model_is_refused(ckpt: Path, tmp_path: Path) -> None:
    folder = _copy(ckpt, tmp_path / "mismatch")
    config = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**config, "image_seq_len": 4}))
    with pytest.raises(MedmimError, match=r"perceiver makes 8; set image_seq_len=8 in .*processor_config.json"):
        make_hf_idefics2(str(folder), {}, AdapterContext())


def test_prerequisites_name_the_fix(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiny_models import tiny_llava

    with pytest.raises(MedmimError, match="no config.json"):
        make_hf_idefics2(str(tmp_path), {}, AdapterContext())
    llava = tiny_llava()
    with pytest.raises(MedmimError, match=f"is a llava checkpoint; use hf-llava:{llava}"):
        make_hf_idefics2(str(llava), {}, AdapterContext())
    with pytest.raises(MedmimError, match=f"is a idefics2 checkpoint; use hf-idefics2:{ckpt}"):
        from medmim_eval.adapters.hf.llava import make_hf_llava

        make_hf_llava(str(ckpt), {}, AdapterContext())
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(MedmimError, match=r"no weight files \(\*\.safetensors"):
        make_hf_idefics2(str(tmp_path), {}, AdapterContext())
    for options, message in (({"format": "mantis_llama3"}, "format='mantis_llama3': use idefics2"),
                             ({"tp": "2"}, "unknown option"), ({"image_splitting": "yes"}, "use 0 or 1"),
                             ({"device": "gpu0"}, "device='gpu0': use cpu, cuda, cuda:N or mps"),
                             ({"device_map": "everywhere"}, "device_map='everywhere': use auto"),
                             ({"device_map": "auto", "device": "cpu"}, "not both")):
        with pytest.raises(MedmimError, match=message):
            make_hf_idefics2(str(ckpt), options, AdapterContext())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingBackendError, match=r"pip install 'medmim-eval\[hf\]'"):
        make_hf_idefics2(str(ckpt), {}, AdapterContext())

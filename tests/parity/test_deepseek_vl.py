"""hf-deepseek-vl (native and mode=package) against DeepSeek-VL's own code
(``<reference>/deepseek_vl``, deepseek-ai/DeepSeek-VL @ 681bffb, see its PROVENANCE.md).

Reference path, as its ``inference.py`` runs a checkpoint: the conversation ``[{"role": "User",
"content": ..., "images": [...]}, {"role": "Assistant", "content": ""}]`` rendered by
``VLChatProcessor.apply_sft_template_for_multi_turn_prompts`` (``deepseek`` sft format, the
processor's system prompt), images loaded by ``deepseek_vl.utils.io.load_pil_images``, then
``VLChatProcessor.__call__`` (tokenize with BOS, each ``<image_placeholder>`` -> ``num_image_tokens``
image ids, ``VLMImageProcessor``: truncating resize + ``expand2square`` + normalise; ``batchify``
left-pads), greedy ``generate`` stopping at ``<｜end▁of▁sentence｜>``. The processor is built on
the tiny checkpoint's tokenizer and image settings (64 image tokens; DeepSeek-VL-7B has 576).

Imported from the reference folder (on ``sys.path`` only while this module's tests run): the
``deepseek_vl`` package itself, with torchvision 0.28.0 (PyPI, no dependencies, CUDA op
registrations replaced as this torch is CPU-only). Stand-ins, for imports this environment cannot
satisfy and which the processor never uses: ``attrdict`` and ``timm`` (not installed; SigLIP/SAM
towers only) and ``deepseek_vl.models.modeling_vlm`` (its config classes do not define under
transformers 5: ``PretrainedConfig`` subclasses became dataclasses and ``VisionConfig.params = {}``
is a mutable default). So mode=package runs our ``PackageDeepseekVL`` on the reference
``VLChatProcessor``; its model is :class:`PackageModelStandIn`, the tiny native weights behind
``MultiModalityCausalLM``'s two entry points (``prepare_inputs_embeds`` as modeling_vlm writes it,
``language_model.generate``).
"""
from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Iterator

import pytest
from compare import same_ids, same_pixels, same_text, same_value
from items import ITEM_IDS, Item, items, make_images
from references import on_path, pypi_wheel, reference_folder

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medmim_eval.adapter import AdapterContext, GenerationSettings  # noqa: E402
from medmim_eval.adapters.hf.deepseek_vl.adapter import DeepseekVLAdapter, make_hf_deepseek_vl  # noqa: E402


def _unused(*_args: Any, **_kwargs: Any) -> Any:  # pragma: no cover - raises only if an unused path is taken
    raise NotImplementedError("stand-in for an import this environment lacks; the path is not used here")


STAND_INS = {"attrdict": {"AttrDict": _unused}, "timm": {}, "timm.models": {},
             "timm.layers": dict.fromkeys(["AttentionPoolLatent", "DropPath", "LayerType", "Mlp", "PatchDropout",
                                           "PatchEmbed", "resample_abs_pos_embed"], _unused),
             "timm.models._manipulate": {"checkpoint_seq": _unused, "named_apply": _unused}}


class PackageModelStandIn:
    """``MultiModalityCausalLM`` as ``PackageDeepseekVL`` uses it, on the tiny native checkpoint's
    weights: ``prepare_inputs_embeds`` follows modeling_vlm.py step by step (images through the
    vision tower and aligner, text ids embedded, image rows written where ``images_seq_mask`` is
    set); ``language_model`` is a ``LlamaForCausalLM`` holding the native model's decoder and head."""

    native: Any = None

    @classmethod
    def from_pretrained(cls, _path: str, torch_dtype: Any = None) -> "PackageModelStandIn":
        from transformers import LlamaForCausalLM

        model = cls()
        model.native = cls.native
        model.language_model = LlamaForCausalLM(cls.native.config.text_config)
        model.language_model.model = cls.native.model.language_model
        model.language_model.lm_head = cls.native.lm_head
        model.language_model.generation_config = cls.native.generation_config
        model.language_model.eval()
        return model

    def to(self, *_args: Any, **_kwargs: Any) -> "PackageModelStandIn":
        return self

    def eval(self) -> "PackageModelStandIn":
        return self

    def prepare_inputs_embeds(self, input_ids: Any, pixel_values: Any, images_seq_mask: Any,
                              images_emb_mask: Any) -> Any:
        bs, n = pixel_values.shape[0:2]
        images = pixel_values.flatten(0, 1)
        embeds = self.native.model.get_image_features(pixel_values=images).pooler_output
        embeds = embeds.reshape(bs, n * embeds.shape[1], embeds.shape[2])
        emb_mask = images_emb_mask.flatten(1, 2)
        input_ids = input_ids.clone()
        input_ids[input_ids < 0] = 0
        inputs_embeds = self.language_model.get_input_embeddings()(input_ids)
        inputs_embeds[images_seq_mask] = embeds[emb_mask]
        return inputs_embeds


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The reference package imported from the reference folder, with the stand-ins above."""
    import transformers  # noqa: F401 - imported before the stand-ins, so it never sees them

    folder = reference_folder("deepseek_vl")
    tv = pypi_wheel("torchvision", "0.28.0", tmp_path_factory.mktemp("torchvision-deepseek"))
    added = []
    for name, attributes in STAND_INS.items():
        try:
            __import__(name)
        except ImportError:
            module = ModuleType(name)
            module.__dict__.update(attributes)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
            added.append(name)
    with on_path(tv, "torchvision"), on_path(folder, "deepseek_vl"):
        sys.modules["torchvision._meta_registrations"] = ModuleType("torchvision._meta_registrations")
        modeling = ModuleType("deepseek_vl.models.modeling_vlm")
        modeling.MultiModalityCausalLM = PackageModelStandIn  # type: ignore[attr-defined]
        sys.modules[modeling.__name__] = modeling
        from deepseek_vl.models import VLChatProcessor, VLMImageProcessor
        from deepseek_vl.utils.conversation import get_conv_template
        from deepseek_vl.utils.io import load_pil_images

        yield SimpleNamespace(folder=folder, VLChatProcessor=VLChatProcessor, VLMImageProcessor=VLMImageProcessor,
                              get_conv_template=get_conv_template, load_pil_images=load_pil_images)
    for name in added:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def adapter() -> DeepseekVLAdapter:
    from tiny_models_deepseek import tiny_deepseek_vl

    return make_hf_deepseek_vl(str(tiny_deepseek_vl()), {"dtype": "fp32"}, AdapterContext())


@pytest.fixture(scope="module")
def processor(deepseek: SimpleNamespace, adapter: DeepseekVLAdapter) -> Any:
    """DeepSeek-VL's ``VLChatProcessor`` on the checkpoint's tokenizer and image settings."""
    ours = adapter.backend.processor
    image_processor = deepseek.VLMImageProcessor(
        image_size=ours.image_processor.size["height"], min_size=ours.image_processor.min_size,
        image_mean=ours.image_processor.image_mean, image_std=ours.image_processor.image_std)
    return deepseek.VLChatProcessor(image_processor=image_processor, tokenizer=adapter.backend.tokenizer,
                                    num_image_tokens=ours.num_image_tokens)


@pytest.fixture(scope="module")
def package(deepseek: SimpleNamespace, processor: Any, adapter: DeepseekVLAdapter) -> Iterator[DeepseekVLAdapter]:
    """Our adapter in mode=package: ``PackageDeepseekVL`` on the reference processor."""
    from medmim_eval.adapters.hf.deepseek_vl.adapter import DeepseekVLAdapter as Adapter

    PackageModelStandIn.native = adapter.backend.model
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deepseek.VLChatProcessor, "from_pretrained", classmethod(lambda cls, path: processor))
        yield Adapter("deepseek-vl-package", adapter.path, {"dtype": "fp32"}, "package")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Item]:
    return {item.name: item for item in items(make_images(tmp_path_factory.mktemp("parity-images-deepseek")))}


def conversation(item: Item) -> list[dict[str, Any]]:
    """The conversation in inference.py's form (an image is written as ``<image_placeholder>``)."""
    return [{"role": "User", "content": item.user.replace("<image>", "<image_placeholder>"), "images": list(item.paths)},
            {"role": "Assistant", "content": ""}]


def reference_inputs(deepseek: SimpleNamespace, processor: Any, item: Item) -> Any:
    conv = conversation(item)
    return processor(conversations=conv, images=deepseek.load_pil_images(conv), force_batchify=True)


@pytest.mark.parametrize("name", ITEM_IDS)
def test_prompt_tokens_and_pixels_match_deepseek_vl(name: str, deepseek: SimpleNamespace, processor: Any,
                                                    adapter: DeepseekVLAdapter, package: DeepseekVLAdapter,
                                                    cases: dict[str, Item]) -> None:
    item = cases[name]
    ref = reference_inputs(deepseek, processor, item)
    n_tokens = adapter.backend.processor.num_image_tokens
    for route in (adapter, package):
        text, images, _ = route.prepare_sample(item.sample())
        same_text(f"{route.mode} prompt", text, ref.sft_format[0])
        ours = route.backend.encode([text], [images])
        same_ids(f"{route.mode} input ids", ours["input_ids"][0], ref.input_ids[0])
        same_value("image ids", int((ref.input_ids[0] == processor.image_id).sum()), n_tokens * len(item.paths))
        pixels = ours["pixel_values"]
        same_pixels(f"{route.mode} pixel values", pixels.reshape(-1, *pixels.shape[-3:]), ref.pixel_values[0])


def test_the_template_and_its_stops_are_deepseek_vls(deepseek: SimpleNamespace, adapter: DeepseekVLAdapter,
                                                     processor: Any) -> None:
    from medmim_eval.adapters.hf.deepseek_vl.prompt import SYSTEM_PROMPT

    template = deepseek.get_conv_template("deepseek")
    same_value("system prompt", SYSTEM_PROMPT, processor.system_prompt)
    same_value("stop strings", sorted(adapter.backend.format.stop_strings), sorted(template.stop_str))
    tok = adapter.backend.tokenizer
    same_value("stop ids", adapter.backend.stop_ids, [tok.eos_token_id])
    same_value("eos token", tok.eos_token, template.sep2)
    same_value("processor sft format", processor.sft_format, "deepseek")


def test_greedy_answers_match_inference_py(deepseek: SimpleNamespace, processor: Any, adapter: DeepseekVLAdapter,
                                           package: DeepseekVLAdapter, cases: dict[str, Item]) -> None:
    source = (deepseek.folder / "inference.py").read_text()
    assert "do_sample=False" in source and "eos_token_id=tokenizer.eos_token_id" in source
    assert "skip_special_tokens=True" in source
    # Differs on purpose: inference.py allows 512 new tokens; each task sets its own budget.
    assert "max_new_tokens=512" in source and GenerationSettings().max_new_tokens == 256
    settings = GenerationSettings(max_new_tokens=6)
    assert settings.temperature == 0
    model, tok = adapter.backend.model, adapter.backend.tokenizer
    for name in ("closed-1", "open-2", "open-3"):
        item = cases[name]
        ref = reference_inputs(deepseek, processor, item)
        with torch.inference_mode():
            out = model.generate(input_ids=ref.input_ids, attention_mask=ref.attention_mask,
                                 pixel_values=ref.pixel_values.flatten(0, 1), max_new_tokens=6, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, use_cache=True)
        answer = tok.decode(out[0, ref.input_ids.shape[1]:].tolist(), skip_special_tokens=True).strip()
        for route in (adapter, package):
            (ours,) = route.run([route.prepare_sample(item.sample())], settings)
            same_text(f"{route.mode} greedy answer {name}", ours.text, answer)


def test_the_package_under_transformers_5_is_a_missing_backend_with_the_fix(deepseek: SimpleNamespace,
                                                                            adapter: DeepseekVLAdapter) -> None:
    """The reference's own modeling_vlm (no stand-in) fails to define its config classes under
    transformers 5; mode=package says so in one line instead of a traceback."""
    import transformers

    from medmim_eval.adapters.hf.deepseek_vl.package import PackageDeepseekVL
    from medmim_eval.errors import MissingBackendError

    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4 imports DeepSeek-VL's modeling code")
    saved = {n: m for n, m in sys.modules.items() if n.startswith("deepseek_vl.models")}
    for name in saved:
        del sys.modules[name]
    try:
        with pytest.raises(MissingBackendError, match=r"does not import with transformers 5.*mode=native"):
            PackageDeepseekVL(torch, adapter.path, adapter.placement)
    finally:
        for name in [n for n in sys.modules if n.startswith("deepseek_vl.models")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.mark.parametrize("name", ["closed-1", "open-3"])
def test_the_hybrid_high_resolution_copy_matches_vlm_image_processor(name: str, deepseek: SimpleNamespace,
                                                                     cases: dict[str, Item]) -> None:
    """DeepSeek-VL-7B's processor makes the 1024-px (SAM) input; the converted checkpoint's
    ``high_res_pixel_values`` must equal ``VLMImageProcessor`` at that size. (The 384-px SigLIP copy
    is made inside the original model by ``HybridVisionTower``; it is not compared here.)"""
    from tiny_models_deepseek import tiny_deepseek_vl_hybrid

    hybrid = make_hf_deepseek_vl(str(tiny_deepseek_vl_hybrid()), {"dtype": "fp32"}, AdapterContext())
    ours = hybrid.backend.processor.image_processor
    reference = deepseek.VLMImageProcessor(image_size=ours.high_res_size["height"], min_size=ours.min_size,
                                           image_mean=ours.high_res_image_mean, image_std=ours.high_res_image_std)
    item = cases[name]
    text, images, _ = hybrid.prepare_sample(item.sample())
    high = hybrid.backend.encode([text], [images])["high_res_pixel_values"]
    ref = reference(deepseek.load_pil_images(conversation(item)), return_tensors="pt").pixel_values
    same_pixels("high-resolution pixel values", high, ref)

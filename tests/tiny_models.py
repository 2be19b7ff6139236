"""Tiny checkpoints of the real architectures, built offline in seconds and cached between sessions.

``tiny_llava()`` returns the folder of a randomly initialised LLaVA-architecture model (SigLIP
vision tower + Llama text model, the Mantis-8B-siglip-llama3 / LLaVA-Med layout) with a byte-level
BPE tokenizer trained here by ``tokenizers``, an ``<image>`` token and a Jinja chat template that
renders text and image parts in their order. The checkpoint is saved in the llava-hf key layout
(``vision_tower.vision_model.*``) that vLLM loads; transformers 5.x saves ``vision_tower.*``.
``tiny_llava_clip_mistral()`` is the LLaVA-Med v1.5 port layout (CLIP, "default" strategy, layer -2,
Mistral, a tokenizer that adds ``<s>``, the bundled LLaVA-Med chat template); ``tiny_idefics2()``
the Mantis-8B-Idefics2 layout (Idefics2 vision tower, perceiver, Mistral; no image splitting).

Cache: ``$MEDMIM_TEST_MODELS/<BUILDER_VERSION>/<name>`` or
``~/.cache/medmim-eval-test-models/<BUILDER_VERSION>/<name>``. Bump ``BUILDER_VERSION`` (all
models) or the builder's own version in its name (``CLIP_MISTRAL_VERSION``, ``IDEFICS2_VERSION``)
whenever a builder would produce a different checkpoint. Builds are atomic (temporary folder + rename)
and serialised by a file lock, so concurrent sessions share one build.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

BUILDER_VERSION = "1"
CACHE_ENV = "MEDMIM_TEST_MODELS"
# Read at import, before the tests' autouse fixture clears MEDMIM_* variables.
_CACHE_ROOT = os.environ.get(CACHE_ENV)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|user|>", "<|assistant|>", "<|end|>"]
IMAGE_SIZE, PATCH = 64, 8  # 8 x 8 = 64 image tokens per image ("full" feature strategy)

# Text and image parts in their order; a plain string content works too. Ends with the assistant
# cue when add_generation_prompt is set.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_WORDS = (
    "the a an of in on with and or no yes left right upper lower lobe lung heart liver kidney brain "
    "mass lesion nodule opacity effusion edema fracture tumor cyst shadow image first second third scan "
    "chest x-ray ct mri fundus eye retina larger smaller stable worsening improving same different "
    "which shows is are does compared to previous current study visit week normal abnormal finding "
    "A B C D answer option what where how many one two three size shape round rod plate ball view"
).split()


def cache_root() -> Path:
    root = Path(_CACHE_ROOT) if _CACHE_ROOT else Path.home() / ".cache" / "medmim-eval-test-models"
    return root / BUILDER_VERSION


def _corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) + rng.choice(".?") for _ in range(n)]


def _tokenizer(image_token_attribute: bool = True, add_bos: bool = False):  # type: ignore[no-untyped-def]
    """The tiny BPE tokenizer. ``add_bos``: encoding with special tokens prepends ``<s>`` (as
    Mistral's tokenizer does). ``image_token_attribute=False`` leaves out the ``image_token``
    attribute, which Idefics2Processor reads as "the tokens are already set up"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    if add_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
    extra = {"extra_special_tokens": {"image_token": "<image>"}} if image_token_attribute else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", **extra)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _rekey_for_vllm(folder: Path) -> None:
    """The llava-hf key layout vLLM loads (one implementation, shared with the training recipes)."""
    from medmim_eval.training_recipes.run_dir import rekey_for_vllm

    rekey_for_vllm(folder)


def _build_llava(folder: Path, seed: int) -> None:
    import torch
    from transformers import (LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                              SiglipImageProcessorPil, SiglipVisionConfig)

    tokenizer = _tokenizer()
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="full", chat_template=CHAT_TEMPLATE)
    vocab = len(tokenizer)
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH),
        text_config=LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=2048,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    # Larger than default weights make outputs depend visibly on the pixels and their order.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "multi_modal_projector" in name and param.dim() == 2:
                param.normal_(0.0, 0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    _rekey_for_vllm(folder)
    (folder / "medmim_tiny.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, "kind": "llava-siglip",
                                                         "seed": seed}))


# The Idefics2 chat format: "User:" before an image, "User: " before text; "Assistant:" cue.
IDEFICS2_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_utterance>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
CLIP_MISTRAL_VERSION = "2"  # 2: the bundled LLaVA-Med template strips the user text
IDEFICS2_VERSION = "1"
IDEFICS2_LATENTS = 8  # image tokens per image (the perceiver's latents; 64 in Mantis-8B-Idefics2)


def _widen_projector(model, names: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    """Larger than default weights make outputs depend visibly on the pixels and their order."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(n in name for n in names) and param.dim() >= 2:
                param.normal_(0.0, 0.5)


def _build_llava_clip_mistral(folder: Path, seed: int) -> None:
    """CLIP vision tower ("default" strategy: CLS dropped, layer -2) + Mistral text model, LLaVA-Med v1.5's
    layout as HF-format ports have it; ``<s>`` added by the tokenizer; LLaVA-Med chat template."""
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, MistralConfig)

    template = (Path(__file__).resolve().parents[1] / "adapters" / "vllm" / "chat_templates" / "llava_med_mistral.jinja").read_text()
    tokenizer = _tokenizer(add_bos=True)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=template)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
                                       image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64),
        text_config=MistralConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, sliding_window=None),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    _widen_projector(model, ("multi_modal_projector",))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    _rekey_for_vllm(folder)
    (folder / "medmim_tiny.json").write_text(json.dumps({"builder_version": CLIP_MISTRAL_VERSION,
                                                         "kind": "llava-clip-mistral", "seed": seed}))


def _build_idefics2(folder: Path, seed: int) -> None:
    """Idefics2 (SigLIP-like vision tower, perceiver resampler, Mistral text model), the
    Mantis-8B-Idefics2 layout; ``do_image_splitting=False``. The processor is built first: it adds
    ``<fake_token_around_image>`` and ``<end_of_utterance>`` to the tokenizer."""
    import torch
    from transformers import (Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessorPil,
                              Idefics2Processor, MistralConfig)

    tokenizer = _tokenizer(image_token_attribute=False, add_bos=True)
    image_processor = Idefics2ImageProcessorPil(do_image_splitting=False,
                                                size={"shortest_edge": IMAGE_SIZE // 2, "longest_edge": IMAGE_SIZE})
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IDEFICS2_LATENTS,
                                  chat_template=IDEFICS2_TEMPLATE)
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    text = MistralConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, sliding_window=None, rms_norm_eps=1e-5)
    config = Idefics2Config(
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": PATCH},
        perceiver_config={"hidden_size": 128, "rms_norm_eps": 1e-5, "resampler_n_latents": IDEFICS2_LATENTS,
                          "resampler_depth": 1, "resampler_n_heads": 2, "resampler_head_dim": 32,
                          "num_key_value_heads": 1},
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = Idefics2ForConditionalGeneration(config).to(torch.bfloat16)
    _widen_projector(model, ("connector", "patch_embedding"))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_utterance]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "medmim_tiny.json").write_text(json.dumps({"builder_version": IDEFICS2_VERSION, "kind": "idefics2",
                                                         "seed": seed}))


def _cached(name: str, build) -> Path:  # type: ignore[no-untyped-def]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if (final / "medmim_tiny.json").is_file():
        return final
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "medmim_tiny.json").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            build(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_llava(seed: int = 0) -> Path:
    """The folder of the tiny SigLIP + Llama LLaVA checkpoint (built on first use, then cached)."""
    return _cached(f"llava-siglip-s{seed}", lambda folder: _build_llava(folder, seed))


def tiny_llava_clip_mistral(seed: int = 0) -> Path:
    """The folder of the tiny CLIP + Mistral LLaVA checkpoint (the LLaVA-Med v1.5 port layout)."""
    return _cached(f"llava-clip-mistral-v{CLIP_MISTRAL_VERSION}-s{seed}", lambda folder: _build_llava_clip_mistral(folder, seed))


def tiny_idefics2(seed: int = 0) -> Path:
    """The folder of the tiny Idefics2 checkpoint (the Mantis-8B-Idefics2 layout)."""
    return _cached(f"idefics2-v{IDEFICS2_VERSION}-s{seed}", lambda folder: _build_idefics2(folder, seed))


if __name__ == "__main__":
    print(tiny_llava(), tiny_llava_clip_mistral(), tiny_idefics2())

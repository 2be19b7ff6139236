"""Tiny checkpoints of the real architectures, built offline in seconds and cached between sessions.

``tiny_llava()`` returns the folder of a randomly initialised LLaVA-architecture model (SigLIP
vision tower + Llama text model, the Mantis-8B-siglip-llama3 / LLaVA-Med layout) with a byte-level
BPE tokenizer trained here by ``tokenizers``, an ``<image>`` token and a Jinja chat template that
renders text and image parts in their order. The checkpoint is saved in the llava-hf key layout
(``vision_tower.vision_model.*``) that vLLM loads; transformers 5.x saves ``vision_tower.*``.

Cache: ``$MEDMIM_TEST_MODELS/<BUILDER_VERSION>/<name>`` or
``~/.cache/medmim-eval-test-models/<BUILDER_VERSION>/<name>``. Bump ``BUILDER_VERSION`` whenever
the builder would produce a different checkpoint. Builds are atomic (temporary folder + rename)
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


def _tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _rekey_for_vllm(folder: Path) -> None:
    """transformers 5.x writes ``vision_tower.X``; vLLM expects ``vision_tower.vision_model.X``."""
    from safetensors.torch import load_file, save_file

    for path in folder.glob("*.safetensors"):
        tensors = load_file(str(path))
        renamed = {}
        for key, value in tensors.items():
            head = "model.vision_tower." if key.startswith("model.vision_tower.") else "vision_tower."
            if key.startswith(head) and not key.startswith(head + "vision_model."):
                key = head + "vision_model." + key[len(head):]
            renamed[key] = value.contiguous()
        save_file(renamed, str(path), metadata={"format": "pt"})


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


if __name__ == "__main__":
    print(tiny_llava())

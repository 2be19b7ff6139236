"""Tiny DeepSeek-VL checkpoints in the transformers (converted) format, built offline in seconds.

``tiny_deepseek_vl()``: ``DeepseekVLForConditionalGeneration`` (SigLIP 64 px, patch 8 -> 64 image
tokens + a 2-layer Llama) -- the DeepSeek-VL-1.3B layout. ``tiny_deepseek_vl_hybrid()``:
``DeepseekVLHybridForConditionalGeneration`` with an added SAM encoder on a 128 px copy of each
image -- the DeepSeek-VL-7B layout. Both carry a byte-level BPE tokenizer with DeepSeek's special
tokens (``<｜begin▁of▁sentence｜>`` added to every encoding, ``<｜end▁of▁sentence｜>`` as eos,
``<image_placeholder>`` as the image token) and a ``DeepseekVL(Hybrid)Processor`` whose ``*Pil``
image processor needs no torchvision. Cached like :mod:`tiny_models` (same root and lock).
"""
from __future__ import annotations

import json
from pathlib import Path

from tiny_models import BUILDER_VERSION, _cached, _corpus

DEEPSEEK_VERSION = "1"
BOS, EOS, IMAGE_TAG = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<image_placeholder>"
IMAGE_SIZE, PATCH, HIGH_RES = 64, 8, 128
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2


def _deepseek_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", BOS, EOS, "<unk>", IMAGE_TAG],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TAG})


def _build(folder: Path, seed: int, hybrid: bool) -> None:
    import torch
    import transformers
    from transformers import LlamaConfig, SamVisionConfig, SiglipVisionConfig

    tokenizer = _deepseek_tokenizer()
    prefix = "DeepseekVLHybrid" if hybrid else "DeepseekVL"
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    extra = {"high_res_size": {"height": HIGH_RES, "width": HIGH_RES}} if hybrid else {}
    image_processor = getattr(transformers, f"{prefix}ImageProcessorPil")(size=size, **extra)
    processor = getattr(transformers, f"{prefix}Processor")(image_processor=image_processor, tokenizer=tokenizer,
                                                           num_image_tokens=TOKENS_PER_IMAGE)
    parts = {
        "vision_config": SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH).to_dict(),
        "text_config": LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=2048,
                                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id).to_dict(),
    }
    if hybrid:
        parts["high_res_vision_config"] = SamVisionConfig(
            hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=2, image_size=HIGH_RES,
            patch_size=16, global_attn_indexes=[1], window_size=4, mlp_dim=64).to_dict()
    config = getattr(transformers, f"{prefix}Config")(image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TAG),
                                                     tie_word_embeddings=False, **parts)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config)
    # Larger than default weights make outputs depend visibly on the pixels and their order.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".aligner." in f".{name}" and param.dim() == 2:
                param.normal_(0.0, 0.5)
            if name.endswith("high_res_vision_alpha"):
                param.fill_(1.0)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "medmim_tiny.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, "seed": seed,
                                                         "kind": prefix, "deepseek_version": DEEPSEEK_VERSION}))


def tiny_deepseek_vl(seed: int = 0) -> Path:
    """The folder of the tiny DeepseekVL (SigLIP + Llama) checkpoint (built on first use, then cached)."""
    return _cached(f"deepseek-vl-v{DEEPSEEK_VERSION}-s{seed}", lambda folder: _build(folder, seed, hybrid=False))


def tiny_deepseek_vl_hybrid(seed: int = 0) -> Path:
    """The folder of the tiny DeepseekVLHybrid (SigLIP + SAM + Llama) checkpoint (built, then cached)."""
    return _cached(f"deepseek-vl-hybrid-v{DEEPSEEK_VERSION}-s{seed}", lambda folder: _build(folder, seed, hybrid=True))


if __name__ == "__main__":
    print(tiny_deepseek_vl(), tiny_deepseek_vl_hybrid())

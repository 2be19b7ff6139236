"""Tiny checkpoints of the paper models' layouts with tokenizers of the real families, for the parity tests.

``llama3_tokenizer()``: a byte-level BPE trained here with Llama-3's pre-tokenizer split pattern and
its real special tokens (``<|begin_of_text|>`` added in front by the post-processor, eos
``<|end_of_text|>``, ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``) plus Mantis's
``<image>`` and a pad token. ``tiny_llava_llama3()``: a random LLaVA (SigLIP 384 px / 14 px patches,
so 729 image tokens per image as in Mantis-8B-siglip-llama3, and a two-layer Llama) with that
tokenizer and a SigLIP image processor with Mantis's settings (384 x 384 bicubic, mean = std = 0.5).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiny_models import _cached, _corpus

VERSION = "1"
IMAGE_SIZE, PATCH = 384, 14  # (384 // 14)^2 = 729 image tokens ("full" strategy: SigLIP has no CLS)
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<image>", "<pad>"]
# Llama-3's pre-tokenizer pattern (tokenizer.json of the Meta-Llama-3 releases).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_tokenizer():  # type: ignore[no-untyped-def]
    """The tiny Llama-3-style tokenizer (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})


def _build(folder: Path, seed: int) -> None:
    import torch
    from transformers import (LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                              SiglipImageProcessorPil, SiglipVisionConfig)

    tokenizer = llama3_tokenizer()
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="full")
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _save(folder, model, processor, "llava-llama3", seed)


def _save(folder: Path, model: Any, processor: Any, kind: str, seed: int) -> None:
    """Write the checkpoint, its processor and the marker that says which builder made it."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "medmim_tiny.json").write_text(json.dumps({"builder_version": VERSION, "kind": kind, "seed": seed}))


def tiny_llava_llama3(seed: int = 0) -> Path:
    """The folder of the tiny Mantis-8B-siglip-llama3-layout checkpoint (built on first use, then cached)."""
    return _cached(f"llava-llama3-v{VERSION}-s{seed}", lambda folder: _build(folder, seed))


# --- LLaVA-Med v1.5 ------------------------------------------------------------------------------
CLIP_SIZE, CLIP_PATCH = 336, 14  # CLIP ViT-L/14-336: 576 patch features (CLS dropped) per image
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SP_SPECIAL = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]


def mistral_sp_tokenizer(extra: tuple[str, ...] = (), named: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A tiny Mistral-style (sentencepiece-converted, ``legacy``) tokenizer: BPE with byte fallback,
    ``▁`` for spaces and one ``▁`` prepended to every piece between special tokens, ``<s>`` added in
    front, as the fast tokenizer of Mistral-7B (LLaVA-Med v1.5's LLM) behaves. ``extra``: more special
    tokens; ``named``: more named special tokens (``image_token`` is always ``<image>``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=[*SP_SPECIAL, *bytes_], initial_alphabet=["▁"])
    tok.train_from_iterator(_corpus(), trainer)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in [*SP_SPECIAL, *extra]])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>", **(named or {})})


def _build_llava_med(folder: Path, seed: int) -> None:
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, MistralConfig)

    tokenizer = mistral_sp_tokenizer()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": CLIP_SIZE}, resample=3,
                                            crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE},
                                            image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=CLIP_PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=CLIP_SIZE, patch_size=CLIP_PATCH, projection_dim=32),
        text_config=MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, sliding_window=None),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-2, projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    _save(folder, model, processor, "llava-med", seed)


def tiny_llava_med(seed: int = 0) -> Path:
    """The folder of the tiny LLaVA-Med v1.5 port layout (CLIP 336/14 + Mistral, sentencepiece-style tokenizer)."""
    return _cached(f"llava-med-v{VERSION}-s{seed}", lambda folder: _build_llava_med(folder, seed))


# --- Mantis-8B-Idefics2 -------------------------------------------------------------------------
IDEFICS2_SIZES = {"shortest_edge": 378, "longest_edge": 980}  # Mantis-8B-Idefics2's preprocessor_config.json
IDEFICS2_SEQ_LEN = 64  # its image_seq_len (the perceiver's latents)


def _build_idefics2_mistral(folder: Path, seed: int) -> None:
    """Idefics2 with the Mistral-style sentencepiece tokenizer above (Idefics2-8b's LLM is Mistral-7B),
    Mantis-8B-Idefics2's image processor settings (no splitting, 378-980 px edges, mean = std = 0.5)
    and 64 perceiver latents per image; the Idefics2 chat template."""
    import torch
    from tiny_models import IDEFICS2_TEMPLATE
    from transformers import (Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessorPil,
                              Idefics2Processor, MistralConfig)

    tokenizer = mistral_sp_tokenizer(("<fake_token_around_image>", "<end_of_utterance>"),
                                     {"image_boundary_token": "<fake_token_around_image>"})
    image_processor = Idefics2ImageProcessorPil(do_image_splitting=False, size=dict(IDEFICS2_SIZES),
                                                image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IDEFICS2_SEQ_LEN,
                                  chat_template=IDEFICS2_TEMPLATE)
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    text = MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, sliding_window=None, rms_norm_eps=1e-5)
    config = Idefics2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IDEFICS2_SIZES["longest_edge"], "patch_size": 14},
        perceiver_config={"hidden_size": 64, "rms_norm_eps": 1e-5, "resampler_n_latents": IDEFICS2_SEQ_LEN,
                          "resampler_depth": 1, "resampler_n_heads": 2, "resampler_head_dim": 16,
                          "num_key_value_heads": 1},
        text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = Idefics2ForConditionalGeneration(config)
    with torch.no_grad():  # larger weights, so that greedy answers depend on the pixels
        for name, param in model.named_parameters():
            if "connector" in name or "patch_embedding" in name:
                param.normal_(0.0, 0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_utterance]
    _save(folder, model, processor, "idefics2-mistral", seed)


def tiny_idefics2_mistral(seed: int = 0) -> Path:
    """The folder of the tiny Mantis-8B-Idefics2 layout with a Mistral-style tokenizer."""
    return _cached(f"idefics2-mistral-v{VERSION}-s{seed}", lambda folder: _build_idefics2_mistral(folder, seed))

"""Tiny InternVL checkpoints, built offline in seconds and cached like :mod:`tiny_models`.

``tiny_internvl()``: a transformers-native ``InternVLForConditionalGeneration`` (InternViT-style
vision tower, 32-px tiles of 8-px patches, pixel shuffle 0.5 -> 4 image tokens per tile, tiny
Qwen2 text model) with an ``InternVLProcessor`` layout on disk (``GotOcr2ImageProcessor`` with
tiling, a tokenizer carrying ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` and the chat template of the
``-hf`` InternVL conversions: each image -> ``<IMG_CONTEXT>\\n``).

``tiny_internvl_remote()``: an InternVL2-8B-layout remote-code checkpoint that runs InternVL2's
own code: ``modeling_internvl_chat.py``, ``configuration_internvl_chat.py``, the InternViT modules
and ``tokenization_internlm2.py`` copied unchanged from the reference folder
(OpenGVLab/InternVL, see its PROVENANCE.md) and named in ``auto_map``; their absolute imports
(``internvl.conversation``, ``internvl.model.internlm2``) resolve to the same folder, put on
``sys.path`` by ``parity.references.internvl2_importable`` (which also names the two stand-ins for
imports this environment lacks). Random tiny weights (InternViT + InternLM2), the ``internlm2-chat``
template and InternVL2's preprocessing keys.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tiny_models import _cached, _corpus

VERSION = "3"  # 3: the remote checkpoint runs InternVL2's own code (was a stand-in)
TILE, PATCH, TOKENS_PER_TILE = 32, 8, 4  # (32 / 8)^2 patches, pixel shuffle 0.5 -> 4 tokens
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>",
                  "<IMG_CONTEXT>", "<video>"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# The chat template of the transformers InternVL conversions (images in place, no system message).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>",
                              "end_image_token": "</img>", "video_token": "<video>"})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _model(tokenizer, seed: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    config = InternVLConfig(
        vision_config=InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=TILE, patch_size=PATCH),
        text_config=Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=0.5, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    # Larger than default weights make outputs depend visibly on the pixels and their order.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "multi_modal_projector" in name and param.dim() == 2:
                param.normal_(0.0, 0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.to(torch.bfloat16)


def _processor(tokenizer):  # type: ignore[no-untyped-def]
    from transformers import GotOcr2ImageProcessorPil

    from medmim_eval.adapters.hf.internvl.processor import ImageOnlyInternVLProcessor

    images = GotOcr2ImageProcessorPil(size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1,
                                      max_patches=12, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return ImageOnlyInternVLProcessor(image_processor=images, tokenizer=tokenizer,
                                      image_seq_length=TOKENS_PER_TILE, chat_template=CHAT_TEMPLATE)


def _build_native(folder: Path, seed: int) -> None:
    tokenizer = _tokenizer()
    _model(tokenizer, seed).save_pretrained(folder)
    _processor(tokenizer).save_pretrained(folder)
    path = folder / "processor_config.json"
    saved = json.loads(path.read_text())
    saved["processor_class"] = "InternVLProcessor"  # what the hub's -hf conversions declare
    path.write_text(json.dumps(saved, indent=2))
    (folder / "medmim_tiny.json").write_text(json.dumps({"version": VERSION, "kind": "internvl-native", "seed": seed}))


def internlm2_tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    """A tiny InternLM2 tokenizer: InternVL2's own ``InternLM2Tokenizer`` (slow, sentencepiece, as its
    eval code loads it with ``use_fast=False``) over a sentencepiece BPE model trained here on the
    test corpus, with InternLM2-chat's ``<|im_start|>`` / ``<|im_end|>`` inside the model (as in
    InternLM2) and InternVL2-8B's added image tokens. ``folder`` receives ``tokenizer.model``."""
    import io

    import sentencepiece as spm
    from internvl.model.internlm2.tokenization_internlm2 import InternLM2Tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=600,
                                   model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   user_defined_symbols=["<|im_start|>", "<|im_end|>"], character_coverage=1.0,
                                   add_dummy_prefix=False, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity", minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = InternLM2Tokenizer(str(folder / "tokenizer.model"))
    tokenizer.add_tokens(INTERNVL2_ADDED, special_tokens=True)
    return tokenizer


INTERNVL2_ADDED = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
REMOTE_FILES = {"configuration_internvl_chat.py": "model/internvl_chat", "modeling_internvl_chat.py": "model/internvl_chat",
                "configuration_intern_vit.py": "model/internvl_chat", "modeling_intern_vit.py": "model/internvl_chat",
                "tokenization_internlm2.py": "model/internlm2"}


def remote_config(vocab_size: int):  # type: ignore[no-untyped-def]
    """InternVL2-8B's layout, shrunk: InternViT (32-px tiles, 8-px patches, pixel shuffle 0.5 -> 4
    tokens per tile) and InternLM2 (with InternVL2-8B's dynamic rope scaling), the ``internlm2-chat``
    template, dynamic tiling with thumbnail, at most 12 tiles."""
    from internvl.model.internvl_chat import InternVLChatConfig

    return InternVLChatConfig(
        vision_config={"architectures": ["InternVisionModel"], "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": TILE, "patch_size": PATCH,
                       "drop_path_rate": 0.0, "qkv_bias": True, "norm_type": "layer_norm"},
        llm_config={"architectures": ["InternLM2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "vocab_size": vocab_size, "max_position_embeddings": 4096, "bos_token_id": 1,
                    "eos_token_id": 2, "pad_token_id": 2, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
        template="internlm2-chat", force_image_size=TILE, downsample_ratio=0.5, dynamic_image_size=True,
        use_thumbnail=True, ps_version="v2", min_dynamic_patch=1, max_dynamic_patch=12, select_layer=-1)


def _build_remote(folder: Path, seed: int) -> None:
    import torch
    from internvl.model.internvl_chat import InternVLChatModel

    tokenizer = internlm2_tokenizer(folder)
    torch.manual_seed(seed)
    model = InternVLChatModel(remote_config(len(tokenizer)), use_flash_attn=False)
    with torch.no_grad():  # larger than default weights: answers depend visibly on the pixels
        for name, param in model.named_parameters():
            if name.startswith("mlp1") and param.dim() == 2:
                param.normal_(0.0, 0.5)
    # save_pretrained of transformers 5 expects _tied_weights_keys as a dict (InternLM2's is a list).
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.to(torch.bfloat16).state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name, where in REMOTE_FILES.items():
        shutil.copy(REFERENCE_PACKAGE() / where / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                          "AutoModel": "modeling_internvl_chat.InternVLChatModel"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (folder / "medmim_tiny.json").write_text(json.dumps({"version": VERSION, "kind": "internvl-remote", "seed": seed}))


def REFERENCE_PACKAGE() -> Path:  # noqa: N802 - reads like the folder it names
    """``<reference>/internvl2/internvl_chat/internvl``, importable (see ``internvl2_importable``), or skip."""
    from parity.references import internvl2_importable

    return internvl2_importable() / "internvl"


def tiny_internvl(seed: int = 0) -> Path:
    """The folder of the tiny native InternVL checkpoint (built on first use, then cached)."""
    return _cached(f"internvl-native-v{VERSION}-s{seed}", lambda folder: _build_native(folder, seed))


def tiny_internvl_remote(seed: int = 0) -> Path:
    """The folder of the tiny InternVL2-8B-layout checkpoint that runs InternVL2's own remote code
    (copied from the reference folder; skip when it is absent); new reference files make a new one."""
    package = REFERENCE_PACKAGE()
    digest = hashlib.sha256(b"".join((package / where / name).read_bytes()
                                     for name, where in REMOTE_FILES.items())).hexdigest()[:8]
    return _cached(f"internvl-remote-v{VERSION}-{digest}-s{seed}", lambda folder: _build_remote(folder, seed))


if __name__ == "__main__":
    print(tiny_internvl(), tiny_internvl_remote())

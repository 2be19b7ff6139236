"""Tiny InternVL checkpoints, built offline in seconds and cached like :mod:`tiny_models`.

``tiny_internvl()``: a transformers-native ``InternVLForConditionalGeneration`` (InternViT-style
vision tower, 32-px tiles of 8-px patches, pixel shuffle 0.5 -> 4 image tokens per tile, tiny
Qwen2 text model) with an ``InternVLProcessor`` layout on disk (``GotOcr2ImageProcessor`` with
tiling, a tokenizer carrying ``<img>``, ``</img>``, ``<IMG_CONTEXT>`` and the chat template of the
``-hf`` InternVL conversions: each image -> ``<IMG_CONTEXT>\\n``).

``tiny_internvl_remote()``: the same weights as an InternVL2-style remote-code checkpoint:
``architectures: [InternVLChatModel]``, ``model_type: internvl_chat``, ``auto_map`` pointing at the
stand-in modules in ``tests/internvl_standin/`` (copied into the folder), and InternVL2's
preprocessing keys (``force_image_size``, ``max_dynamic_patch``, ``use_thumbnail``, ``template``).
The stand-in is not InternVL2's hub code; see its docstring.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tiny_models import _cached, _corpus

VERSION = "2"
TILE, PATCH, TOKENS_PER_TILE = 32, 8, 4  # (32 / 8)^2 patches, pixel shuffle 0.5 -> 4 tokens
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>",
                  "<IMG_CONTEXT>", "<video>"]
STANDIN = Path(__file__).parent / "internvl_standin"
STANDIN_FILES = ("configuration_internvl_chat.py", "modeling_internvl_chat.py")
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

    from medmim_eval.adapters.internvl_processor import ImageOnlyInternVLProcessor

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


def _build_remote(folder: Path, seed: int) -> None:
    tokenizer = _tokenizer()
    tokenizer.chat_template = None  # InternVL2 builds its prompt in model.chat, not from a template
    model = _model(tokenizer, seed)
    model.save_pretrained(folder)
    # save_pretrained writes the legacy InternVL key layout, which transformers maps back only for
    # model_type "internvl"; the stand-in class loads its own module names.
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    for name in STANDIN_FILES:
        shutil.copy(STANDIN / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    config.update({
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
        "template": "internlm2-chat", "force_image_size": TILE, "max_dynamic_patch": 12, "min_dynamic_patch": 1,
        "use_thumbnail": True, "dynamic_image_size": True, "ps_version": "v2"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "medmim_tiny.json").write_text(json.dumps({"version": VERSION, "kind": "internvl-remote", "seed": seed}))


def tiny_internvl(seed: int = 0) -> Path:
    """The folder of the tiny native InternVL checkpoint (built on first use, then cached)."""
    return _cached(f"internvl-native-v{VERSION}-s{seed}", lambda folder: _build_native(folder, seed))


def tiny_internvl_remote(seed: int = 0) -> Path:
    """The folder of the tiny InternVL2-style remote-code checkpoint (stand-in modules, see above);
    an edit of the stand-in modules makes a new one."""
    digest = hashlib.sha256(b"".join((STANDIN / n).read_bytes() for n in STANDIN_FILES)).hexdigest()[:8]
    return _cached(f"internvl-remote-v{VERSION}-{digest}-s{seed}", lambda folder: _build_remote(folder, seed))


if __name__ == "__main__":
    print(tiny_internvl(), tiny_internvl_remote())

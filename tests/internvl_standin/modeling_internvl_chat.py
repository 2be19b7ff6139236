"""Test stand-in for InternVL2's remote ``modeling_internvl_chat.py`` -- NOT the hub code.

InternVL2-8B's own remote code (InternViT-300M + InternLM2) cannot be downloaded here. This module
is copied into a tiny checkpoint and loaded through ``auto_map`` with ``trust_remote_code=True``,
exactly as the hub code is. It implements InternVL2's documented ``chat`` signature on top of
transformers' native tiny ``InternVLForConditionalGeneration`` and checks the caller keeps the
contract the hub code relies on (the hub code would silently misplace tiles or crash instead):

* one ``<image>`` placeholder in ``question`` per entry of ``num_patches_list``;
* ``sum(num_patches_list) == pixel_values.shape[0]``;
* tiles of ``force_image_size`` (448 in InternVL2) square, in the model's dtype and on its device.

Like the hub code it wraps the question in the InternLM2 chat format with InternVL's system
message, expands each ``<image>`` into ``<img>`` + ``<IMG_CONTEXT>`` x (tokens per tile x tiles) +
``</img>``, and stops at ``<|im_end|>``. ``last_chat`` keeps the arguments of the last call, for tests.
"""
from transformers import InternVLForConditionalGeneration

from .configuration_internvl_chat import InternVLChatConfig

SYSTEM_MESSAGE = "You are InternVL, a helpful assistant."


class InternVLChatModel(InternVLForConditionalGeneration):
    config_class = InternVLChatConfig

    def chat(self, tokenizer, pixel_values, question, generation_config, history=None, return_history=False,
             num_patches_list=None, IMG_START_TOKEN="<img>", IMG_END_TOKEN="</img>",
             IMG_CONTEXT_TOKEN="<IMG_CONTEXT>", verbose=False):
        if history is None and pixel_values is not None and "<image>" not in question:
            question = "<image>\n" + question
        if num_patches_list is None:
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else []
        if question.count("<image>") != len(num_patches_list):
            raise ValueError(f"{question.count('<image>')} <image> placeholders for {len(num_patches_list)} images")
        if pixel_values is not None:
            if pixel_values.shape[0] != sum(num_patches_list):
                raise ValueError(f"{pixel_values.shape[0]} tiles, num_patches_list sums to {sum(num_patches_list)}")
            size = self.config.force_image_size
            if tuple(pixel_values.shape[1:]) != (3, size, size):
                raise ValueError(f"tiles of shape {tuple(pixel_values.shape[1:])}, expected (3, {size}, {size})")
            if pixel_values.dtype != self.dtype or pixel_values.device != self.device:
                raise ValueError(f"pixel_values {pixel_values.dtype} on {pixel_values.device}, the model is "
                                 f"{self.dtype} on {self.device}")
        self.last_chat = {"question": question, "num_patches_list": list(num_patches_list),
                          "pixel_values": None if pixel_values is None else pixel_values.detach().cpu(),
                          "generation_config": dict(generation_config)}
        query = f"<|im_start|>system\n{SYSTEM_MESSAGE}<|im_end|>\n"
        for old_question, old_answer in history or []:
            query += f"<|im_start|>user\n{old_question}<|im_end|>\n<|im_start|>assistant\n{old_answer}<|im_end|>\n"
        query += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        per_tile = self.config.image_seq_length
        for n in num_patches_list:
            query = query.replace("<image>", IMG_START_TOKEN + IMG_CONTEXT_TOKEN * per_tile * n + IMG_END_TOKEN, 1)
        inputs = tokenizer(query, return_tensors="pt").to(self.device)
        generation_config["eos_token_id"] = tokenizer.convert_tokens_to_ids("<|im_end|>")
        output = self.generate(**inputs, pixel_values=pixel_values, **generation_config)
        new = output[:, inputs["input_ids"].shape[1]:]
        response = tokenizer.batch_decode(new, skip_special_tokens=True)[0].split("<|im_end|>")[0].strip()
        if return_history:
            return response, [*(history or []), (question, response)]
        return response

"""Test stand-in for InternVL2's remote ``configuration_internvl_chat.py`` (not the hub code).

Copied into the tiny remote-code checkpoint built by ``tests/tiny_models_internvl.py``; config.json
names it in ``auto_map``. It reuses transformers' native InternVL configuration and keeps the
InternVL2 keys the adapter reads (``force_image_size``, ``max_dynamic_patch``, ``use_thumbnail``,
``template``) as plain attributes.
"""
from transformers import InternVLConfig


class InternVLChatConfig(InternVLConfig):
    model_type = "internvl_chat"

"""Prompt text and images -> a processor's tensors, encoded the same way for evaluation (the
in-process adapters) and for training (the recipes), so a model trains on what it is evaluated on."""
from __future__ import annotations

from typing import Any


def idefics2_inputs(processor: Any, texts: list[str], images: list[list[Any]] | None, add_special_tokens: bool,
                    padding: bool = True) -> Any:
    """An Idefics2 processor's output (tensors), the text expanded as Mantis's Idefics2 processor
    expands it (``mantis/models/idefics2_delta``, which Mantis-8B-Idefics2 was trained with): each
    ``<image>`` -> ``<fake_token_around_image>`` + ``image_seq_len`` x ``<image>`` (x5 when splitting)
    + ``<fake_token_around_image>``, doubled fake tokens merged, and nothing else. (transformers 5's
    processor also puts a space between an image and a word right after it, one token more.)
    Raises ValueError when a prompt's ``<image>`` count differs from its image count."""
    from transformers import BatchFeature

    fake = str(getattr(processor.fake_image_token, "content", processor.fake_image_token))
    token = str(getattr(processor.image_token, "content", processor.image_token))
    expanded_image = (fake + token * processor.image_seq_len + fake) * (
        5 if processor.image_processor.do_image_splitting else 1)
    if images is not None and [t.count(token) for t in texts] != [len(i) for i in images]:
        raise ValueError(f"the text has {[t.count(token) for t in texts]} {token} tokens for "
                         f"{[len(i) for i in images]} images")
    expanded = [t.replace(token, expanded_image).replace(fake + fake, fake) for t in texts]
    data = dict(processor.tokenizer(expanded, add_special_tokens=add_special_tokens, padding=padding,
                                    return_tensors="pt"))
    if images is not None:
        data.update(processor.image_processor(images, return_tensors="pt"))
    return BatchFeature(data)

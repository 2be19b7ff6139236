"""A ``generate`` for remote-code language models written before transformers' ``Cache`` classes.

InternVL2's remote ``InternVLChatModel.generate`` calls ``self.language_model.generate(inputs_embeds=...,
attention_mask=..., use_cache=True, max_new_tokens=..., do_sample=..., eos_token_id=...)``. InternLM2's
remote ``InternLM2ForCausalLM`` (InternVL2-8B's language model) does not inherit ``GenerationMixin``,
and since transformers 4.50 ``PreTrainedModel`` no longer gives it ``generate``. Mixing the class
in does not help under transformers 5: its loop passes a ``Cache`` object (or ``None`` with the
model's own cache under another name) and whole-sequence position ids, where the remote
``prepare_inputs_for_generation`` expects the legacy tuple of ``(key, value)`` pairs.

:func:`legacy_generate` is that loop, written against the legacy contract only: the model's own
``prepare_inputs_for_generation`` builds each step's inputs (position ids from the attention mask,
the embeddings on the first step, the last token afterwards), ``forward`` returns logits and the
tuple cache. Greedy unless ``do_sample``; finished rows are padded with ``pad_token_id``. Like
``GenerationMixin.generate`` called with ``inputs_embeds`` only, it returns the new tokens only.
"""
from __future__ import annotations

from typing import Any


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def legacy_generate(model: Any, input_ids: Any = None, inputs_embeds: Any = None, attention_mask: Any = None,
                    max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                    top_p: float = 1.0, eos_token_id: Any = None, pad_token_id: Any = None,
                    **_ignored: Any) -> Any:
    """The new tokens, ``(batch, <= max_new_tokens)``, for a prompt given as ids or embeddings."""
    import torch
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    if inputs_embeds is None:
        inputs_embeds = model.get_input_embeddings()(input_ids)
    batch, length = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    mask = attention_mask if attention_mask is not None else torch.ones(batch, length, dtype=torch.long, device=device)
    eos = torch.tensor(_as_list(eos_token_id) or _as_list(model.config.eos_token_id), device=device)
    pad = _as_list(pad_token_id) or _as_list(getattr(model.config, "pad_token_id", None)) or [int(eos[0])]
    warpers = LogitsProcessorList()
    if do_sample:
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    new = torch.zeros(batch, 0, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    past = None
    for _ in range(max_new_tokens):
        inputs = model.prepare_inputs_for_generation(new, past_key_values=past, attention_mask=mask,
                                                     inputs_embeds=inputs_embeds if past is None else None,
                                                     use_cache=True)
        output = model(**inputs, return_dict=True)
        logits = output.logits[:, -1, :].float()
        if do_sample:
            scores = warpers(new, logits)
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            token = logits.argmax(dim=-1)
        token = torch.where(finished, torch.full_like(token, pad[0]), token)
        new = torch.cat([new, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=device)], dim=1)
        past = output.past_key_values
        finished |= torch.isin(token, eos)
        if bool(finished.all()):
            break
    return new

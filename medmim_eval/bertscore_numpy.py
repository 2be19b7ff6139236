"""BERTScore recall with a BERT model run in numpy: no torch, no transformers (about 0.1 s to load).

A served run scores its open answers in a child process (:mod:`medmim_eval.bertscore_worker`) that
shares the machine's cores with a local model server; importing torch and transformers there costs
seconds of CPU the server needs (4-5 s of CPU in all, against ~0.9 s here for MIM-RAD). For a local
BERT-architecture folder with ``model.safetensors`` and ``tokenizer.json`` (the default MiniLM is
one) :class:`NumpyRecall` computes what :class:`medmim_eval.bertscore_recall.BatchedRecall`
computes: the same token ids (the model's own ``tokenizer.json`` through the ``tokenizers``
library, which transformers' BERT tokenizer wraps; truncated at ``model_max_length`` like
bert-score's ``sent_encode``), the same hidden states of layer ``num_layers`` (BERT's post-LayerNorm
encoder, exact-erf GELU, padding masked), the same matching; agreement with bert-score is tested to
1e-5 on 0-1. Its forward pass is ~2.4x slower than torch's (600 answers: 11 s against 4.6 s on 2
cores), so in-process scoring, where torch's load is paid once for many answers, stays on torch.
Anything else (a hub name, another architecture, idf weighting, a GPU) goes through bert-score.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

GELU_ACTS = ("gelu", "gelu_python")


def numpy_model_reason(model: str) -> str | None:
    """Why ``model`` cannot run in numpy (None when it can): it must be a local folder of a BERT model
    with absolute positions, exact GELU, ``model.safetensors`` and ``tokenizer.json``."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return f"{model} is not a local folder"
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / n).is_file()]
    if missing:
        return f"{folder} has no {' or '.join(missing)}"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        return f"model_type {config.get('model_type')!r} is not bert"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return "position embeddings are not absolute"
    if config.get("hidden_act", "gelu") not in GELU_ACTS:
        return f"hidden_act {config.get('hidden_act')!r} is not the exact GELU"
    return None


_CHUNK = 1 << 15  # elements per pass of the GELU: its temporaries stay in the CPU cache
# Numerical Recipes' Chebyshev fit of erfc (absolute error under 1.2e-7), highest power first.
_ERFC_COEFFS = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
                0.37409196, 1.00002368, -1.26551223)


def _gelu_inplace(x: np.ndarray) -> None:
    """x * Phi(x) with the exact (erf) normal CDF, as BERT's "gelu", in place on a contiguous float32 array."""
    flat = x.reshape(-1)
    z, t, acc = (np.empty(min(_CHUNK, flat.size), dtype=np.float32) for _ in range(3))
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        n = chunk.size
        zc, tc, ac = z[:n], t[:n], acc[:n]
        np.abs(chunk, out=zc)
        np.multiply(zc, np.float32(1 / math.sqrt(2.0)), out=zc)  # |x| / sqrt(2)
        np.multiply(zc, np.float32(0.5), out=tc)
        tc += np.float32(1.0)
        np.reciprocal(tc, out=tc)  # t = 1 / (1 + |x|/(2 sqrt 2))
        ac.fill(_ERFC_COEFFS[0])
        for c in _ERFC_COEFFS[1:]:
            ac *= tc
            ac += np.float32(c)
        np.square(zc, out=zc)
        np.subtract(ac, zc, out=ac)
        np.exp(ac, out=ac)
        ac *= tc  # erfc(|x|/sqrt 2) = 2 (1 - Phi(|x|))
        # Phi(x) = 1 - erfc/2 for x >= 0, erfc/2 for x < 0; multiplied by x
        ac *= np.float32(0.5)
        np.subtract(np.float32(1.0), ac, out=tc)
        np.copyto(ac, tc, where=chunk >= 0)
        chunk *= ac


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a read-only array over a memory map: nothing is
    copied, and only the pages a forward pass touches are read (a few rows of the word embeddings).

    The format: an 8-byte little-endian header length, a JSON header mapping each name to its
    ``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header), then the data.

    Raises:
        ValueError: not a safetensors file, or a dtype numpy has no type for (BF16).
    """
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    if mapped.size < 8:
        raise ValueError(f"{path} is not a safetensors file")
    length = int(mapped[:8].view("<u8")[0])
    if not 2 <= length <= mapped.size - 8:
        raise ValueError(f"{path} is not a safetensors file (header length {length})")
    header = json.loads(bytes(mapped[8:8 + length]))
    start = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: {name} is {info['dtype']}, which numpy cannot read")
        begin, end = (start + int(o) for o in info["data_offsets"])
        tensors[name] = mapped[begin:end].view(np.dtype(dtype).newbyteorder("<")).reshape(info["shape"])
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


class NumpyBert:
    """The first ``num_layers`` encoder layers of a local BERT model, in float32 numpy."""

    def __init__(self, folder: str | Path, num_layers: int) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder).expanduser()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        total = int(config["num_hidden_layers"])
        if not 0 <= num_layers <= total:
            raise ValueError(f"num_layers should be between 0 and {total} for {folder}")
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        weights = read_safetensors(folder / "model.safetensors")
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self.w = {k[len(prefix):]: v.astype(np.float32, copy=False) for k, v in weights.items() if k.startswith(prefix)}
        self.num_layers = num_layers
        needed = [f"embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight",
                                               "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")]
        for i in range(num_layers):
            needed += [f"encoder.layer.{i}.{part}.{kind}" for kind in ("weight", "bias") for part in (
                "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")]
        missing = [n for n in needed if n not in self.w]
        if missing:
            raise KeyError(f"{folder / 'model.safetensors'} has no {missing[0]} (and {len(missing) - 1} more)")

        tokenizer_config: dict[str, Any] = {}
        if (folder / "tokenizer_config.json").is_file():
            tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        max_length = tokenizer_config.get("model_max_length")
        if not isinstance(max_length, int) or max_length > 10**6:  # transformers' "no limit" is a huge number
            max_length = int(config.get("max_position_embeddings", 512))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)  # bert-score: model_max_length, truncation=True
        vocab = self.tokenizer.get_vocab()
        special = [tokenizer_config.get(k) or d for k, d in (("cls_token", "[CLS]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"))]
        self.cls_id, self.sep_id, self.pad_id = (vocab[s] for s in special)

    def encode(self, sentence: str) -> list[int]:
        """bert-score's ``sent_encode``: the stripped sentence with [CLS] ... [SEP]; [CLS] [SEP] when empty."""
        sentence = sentence.strip()
        if not sentence:
            return [self.cls_id, self.sep_id]
        return list(self.tokenizer.encode(sentence).ids)

    def hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Hidden states of the last kept layer, (batch, length, hidden), for right-padded ``ids``."""
        w, eps = self.w, self.eps
        batch, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        hidden_size = x.shape[-1]
        head = hidden_size // self.heads
        scale = np.float32(1.0 / math.sqrt(head))
        masked = np.where(mask[:, None, None, :] > 0, np.float32(0.0), np.finfo(np.float32).min)

        def linear(h: np.ndarray, name: str) -> np.ndarray:
            out = h.reshape(-1, h.shape[-1]) @ w[f"{name}.weight"].T  # (out, in) as stored: BLAS reads it transposed
            out += w[f"{name}.bias"]
            return out.reshape(*h.shape[:-1], out.shape[-1])

        def split(h: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(h.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3))

        for i in range(self.num_layers):
            p = f"encoder.layer.{i}."
            q = split(linear(x, p + "attention.self.query"))
            k = split(linear(x, p + "attention.self.key"))
            v = split(linear(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + masked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden_size)
            x = _layer_norm(linear(context, p + "attention.output.dense") + x,
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            inner = linear(x, p + "intermediate.dense")
            _gelu_inplace(inner)
            x = _layer_norm(linear(inner, p + "output.dense") + x,
                            w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x


class NumpyRecall:
    """BatchedRecall's interface and numbers, with :class:`NumpyBert` instead of torch."""

    def __init__(self, model: str, num_layers: int, batch_size: int | None = None) -> None:
        self.folder = Path(model).expanduser()
        self.bert = NumpyBert(model, num_layers)
        self.batch_size = max(1, batch_size or 16)
        self._special = {self.bert.cls_id, self.bert.sep_id}
        self._ids: dict[str, list[int]] = {}
        self._embedded: dict[str, np.ndarray] = {}

    @property
    def width(self) -> int:
        """The length of each token embedding (the model's hidden size)."""
        return int(self.bert.w["embeddings.word_embeddings.weight"].shape[1])

    def remember(self, embedded: dict[str, np.ndarray]) -> None:
        """Take embeddings computed earlier by this model at this layer (a cache) as if embedded now."""
        self._embedded.update(embedded)

    def token_ids(self, sentence: str) -> list[int]:
        ids = self._ids.get(sentence)
        if ids is None:
            ids = self._ids[sentence] = self.bert.encode(sentence)
        return ids

    def embed(self, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit-length token embeddings per distinct sentence, batched by token length, once each."""
        out = self._embedded
        order = sorted({s for s in sentences if s not in out}, key=lambda s: len(self.token_ids(s)), reverse=True)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            longest = len(self.token_ids(batch[0]))
            ids = np.full((len(batch), longest), self.bert.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, sentence in enumerate(batch):
                tokens = self.token_ids(sentence)
                ids[row, :len(tokens)] = tokens
                mask[row, :len(tokens)] = 1
            hidden = self.bert.hidden(ids, mask)
            for row, sentence in enumerate(batch):
                emb = hidden[row, :len(self.token_ids(sentence))]
                out[sentence] = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
        return out

    def recall(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        """BERTScore recall (0-1) of each candidate against its reference."""
        embedded = self.embed([*candidates, *references])
        scores = []
        for candidate, reference in zip(candidates, references):
            ref_ids = self.token_ids(reference)
            if len(self.token_ids(candidate)) <= 2 or len(ref_ids) <= 2:  # nothing but [CLS] [SEP]
                scores.append(0.0)
                continue
            best = (embedded[reference] @ embedded[candidate].T).max(axis=1)
            weights = np.array([0.0 if i in self._special else 1.0 for i in ref_ids], dtype=np.float32)
            scores.append(float((best * (weights / weights.sum())).sum()))
        return scores


def gpu_visible() -> bool:
    """Whether a GPU is there for torch, without importing torch when this process has not."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def numpy_recall_or_none(model: str, num_layers: int | None, batch_size: int | None) -> NumpyRecall | None:
    """A :class:`NumpyRecall` where it computes bert-score's numbers and a GPU would not be faster:
    a local BERT folder (see :func:`numpy_model_reason`), an explicit layer (bert-score requires one
    for a folder), no GPU. None otherwise: the caller loads bert-score and torch."""
    if num_layers is None or gpu_visible() or numpy_model_reason(model) is not None:
        return None
    try:
        return NumpyRecall(model, num_layers, batch_size)
    except (KeyError, ValueError, OSError):  # weights named otherwise (old checkpoints), a tokenizer without
        return None                          # [CLS]/[SEP]/[PAD], a bad layer: bert-score loads it or says why

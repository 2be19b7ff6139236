"""Reference embeddings kept on disk, so a task's references are embedded once per BERT model.

A served run's BERTScore child (:mod:`medmim_eval.bertscore_worker`) spends most of its CPU on the
references: MIM-RAD's 73 open references take ~0.8 s of one core with MiniLM in numpy, on the same
cores the model server needs, and they are the same for every model and every rerun of the task.
:class:`ReferenceEmbeddings` stores what :class:`medmim_eval.bertscore_numpy.NumpyRecall` computed
for a set of references (unit-length token embeddings, float32, exactly as computed) in one
``.npz`` file under ``<cache dir>/bertscore-embeddings/``, named by a digest of:

* this file's format version and the scorer's (``numpy``),
* the model folder (resolved path) with the size and modification time of its ``model.safetensors``,
  ``tokenizer.json``, ``tokenizer_config.json`` and ``config.json``, so new weights are never matched
  with old embeddings,
* the layer, and the distinct references, sorted.

A file that cannot be read, or whose content does not match its name (another length, another
width, other sentences), is ignored and written again; writing goes through a temporary file and a
rename, so a killed run leaves no half file. Nothing but sentences from the task's references and
numbers is stored. ``--no-cache`` concerns the response cache only; delete the folder to drop these.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

FORMAT_VERSION = 1
SUBDIR = "bertscore-embeddings"
MODEL_FILES = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json")


def store_key(folder: str | Path, layer: int, references: Sequence[str], scorer: str = "numpy") -> str:
    """The digest naming the file for ``references`` embedded by ``folder`` at ``layer``."""
    folder = Path(folder).expanduser().resolve()
    files = []
    for name in MODEL_FILES:
        path = folder / name
        stat = path.stat() if path.is_file() else None
        files.append([name, stat.st_size, stat.st_mtime_ns] if stat else [name, None, None])
    identity = {"format": FORMAT_VERSION, "scorer": scorer, "folder": str(folder), "files": files, "layer": layer,
                "references": sorted(set(references))}
    return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


class ReferenceEmbeddings:
    """The ``.npz`` files of one cache folder."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.folder = Path(cache_dir) / SUBDIR

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str, references: Sequence[str], width: int) -> dict[str, np.ndarray] | None:
        """The stored embeddings of exactly ``references`` (distinct), each ``(tokens, width)``; None
        when there is no file or it does not hold them."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as stored:
                sentences = [str(s) for s in stored["sentences"]]
                lengths, matrix = stored["lengths"], stored["embeddings"]
        except Exception:  # any unreadable file (not a zip, cut off, other arrays) is a miss
            return None
        wanted = set(references)
        if (set(sentences) != wanted or len(sentences) != len(wanted) or lengths.shape != (len(sentences),)
                or matrix.ndim != 2 or matrix.shape != (int(lengths.sum()), width) or matrix.dtype != np.float32
                or (lengths < 1).any()):
            return None
        ends = np.cumsum(lengths)
        return {s: matrix[end - n:end] for s, n, end in zip(sentences, lengths.tolist(), ends.tolist())}

    def save(self, key: str, embedded: dict[str, np.ndarray]) -> None:
        """Write ``embedded`` (sentence -> ``(tokens, width)`` float32) atomically; a write that fails
        (read-only or full disk) is skipped: the cache only saves time."""
        sentences = sorted(embedded)
        if not sentences:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out:
                    np.savez(out, sentences=np.array(sentences, dtype=str),
                             lengths=np.array([len(embedded[s]) for s in sentences], dtype=np.int64),
                             embeddings=np.concatenate([embedded[s] for s in sentences]).astype(np.float32, copy=False))
                os.replace(temporary, self.path(key))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            pass


__all__ = ["ReferenceEmbeddings", "store_key", "SUBDIR", "FORMAT_VERSION"]

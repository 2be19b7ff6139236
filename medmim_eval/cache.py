"""A response cache shared between runs, keyed by model fingerprint, prompt, image hashes and
generation settings.

One SQLite file in write-ahead-log mode, shared by every process, the ranks of a data-parallel run
included: readers never block, writers take turns (one short transaction per batch) and wait up to
``BUSY_TIMEOUT_S`` for the lock. One shared file keeps every answer reusable by later runs whatever
their number of ranks. The cache is an accelerator, never a source of truth: a lookup that fails is
a miss, and a write that fails turns writing off for this process with one warning.
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from medmim_eval.adapter import GenerationResult, GenerationSettings
from medmim_eval.schema import PromptRecord, Sample, content_hash


class ImageHasher:
    """SHA-256 of image files, computed once per path per run."""

    def __init__(self) -> None:
        self._hashes: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        digest = self._hashes.get(path)
        if digest is None:
            digest = content_hash(Path(path).read_bytes())
            self._hashes[path] = digest
        return digest


def cache_key(fingerprint: dict[str, Any], sample: Sample, settings: GenerationSettings, hasher: ImageHasher) -> str:
    parts = [
        {"type": "image", "sha256": hasher(p.path)} if p.type == "image" else {"type": "text", "text": p.text}
        for p in sample.prompt.parts
    ]
    payload: dict[str, Any] = {"model": fingerprint, "prompt": parts, "settings": settings.as_dict()}
    control = sample.metadata.get("control")
    if control:  # a control never shares an answer with the standard task, even for an identical prompt
        payload["control"] = control
    rotation = sample.metadata.get("rotation")
    if rotation is not None:  # TASK@circular: one rotation's answer is never served for another
        payload["rotation"] = rotation
    return content_hash(json.dumps(payload, sort_keys=True, default=str))


BUSY_TIMEOUT_S = 120


class ResponseCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.writable = True
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def _write_failed(self, exc: sqlite3.Error) -> None:
        if self.writable:
            print(f"warning: response cache {self.path}: {exc}; answers of this process are not cached",
                  file=sys.stderr)
        self.writable = False
        try:
            self._db.rollback()
        except sqlite3.Error:
            pass

    def get(self, key: str) -> GenerationResult | None:
        try:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
            sent = PromptRecord.model_validate(value["sent"]) if value.get("sent") else None
            return GenerationResult(text=value["text"], sent=sent, tokens=value.get("tokens"))
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable entry is a miss, not a failure

    def put(self, key: str, result: GenerationResult) -> None:
        value = {
            "text": result.text,
            "sent": result.sent.model_dump() if result.sent else None,
            "tokens": result.tokens,
        }
        if not self.writable:
            return
        try:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(value)))
        except sqlite3.Error as exc:
            self._write_failed(exc)

    def commit(self) -> None:
        """Make the answers put so far durable (called once per batch, not per answer)."""
        try:
            self._db.commit()
        except sqlite3.Error as exc:
            self._write_failed(exc)

    def close(self) -> None:
        self.commit()
        self._db.close()

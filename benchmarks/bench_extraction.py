"""Benchmark: answer-extraction rules v2 and v3 on the labelled reply corpus (tests/data/).

For each corpus part, a rule's outcome on every reply is one of: right (the label a careful reader
gives), confident wrong pick (a letter other than the label, including a letter where the label is
``unparseable``), or lost (``unparseable`` where the reader sees a clear answer).

    python benchmarks/bench_extraction.py [--part test] [--quick] [--show] [--out FILE]

``--quick`` reads the first 40 replies of each part (the test suite runs it so the script cannot
rot). v2 is the frozen copy ``benchmarks/extract_rule_v2.py``; v3 is the installed rule.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "tests" / "data"
PARTS = ("dev", "test")
UNPARSEABLE = "unparseable"


def load_part(part: str, limit: int | None = None) -> list[dict]:
    path = CORPUS / f"extraction_corpus_{part}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def rules() -> dict[str, Callable[[str, dict[str, str]], str]]:
    from medmim_eval.extract import EXTRACTION_RULE_VERSION, extract_choice

    spec = importlib.util.spec_from_file_location("extract_rule_v2", HERE / "extract_rule_v2.py")
    assert spec is not None and spec.loader is not None
    v2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v2)
    return {f"v{v2.EXTRACTION_RULE_VERSION}": v2.extract_choice, f"v{EXTRACTION_RULE_VERSION}": extract_choice}


def score(rows: list[dict], rule: Callable[[str, dict[str, str]], str]) -> tuple[dict[str, float], list[tuple]]:
    counts: Counter[str] = Counter()
    misses = []
    for row in rows:
        got = rule(row["reply"], row["options"])
        clear = row["label"] != UNPARSEABLE
        counts["clear"] += clear
        if got == row["label"]:
            counts["right"] += 1
        elif got == UNPARSEABLE:
            counts["lost"] += 1
            misses.append(("lost", row, got))
        else:
            counts["wrong"] += 1
            misses.append(("WRONG", row, got))
    n = len(rows)
    return {"n": n, "clear": counts["clear"], "agree_pct": 100 * counts["right"] / n,
            "wrong_picks": counts["wrong"], "lost": counts["lost"],
            "lost_pct_of_clear": 100 * counts["lost"] / max(1, counts["clear"])}, misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="the first 40 replies of each part")
    parser.add_argument("--show", action="store_true", help="print every reply a rule got wrong or lost")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    parts = PARTS if args.part == "all" else (args.part,)
    table = {}
    print("| part | rule | replies | clear | agrees with reader | confident wrong picks | lost (clear -> unparseable) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for part in parts:
        rows = load_part(part, 40 if args.quick else None)
        for name, rule in rules().items():
            result, misses = score(rows, rule)
            table[f"{part}/{name}"] = result
            print(f"| {part} | {name} | {result['n']} | {result['clear']} | {result['agree_pct']:.1f}% | "
                  f"{result['wrong_picks']} | {result['lost']} ({result['lost_pct_of_clear']:.1f}%) |")
            if args.show:
                for kind, row, got in misses:
                    print(f"    {kind} {row['id']} label={row['label']} got={got}: {row['reply'][:160]!r}",
                          file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark card section of the HTML report, from the task samples the report reloaded."""
from __future__ import annotations

from html import escape
from typing import Iterable

from medmim_eval.benchmark_card import benchmark_card
from medmim_eval.view_model import fmt
from medmim_eval.schema import Sample
from medmim_eval.shortcuts import SHORTCUT_RULES


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pairs(counts: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items()) or "—"


def card_html(samples: Iterable[Sample]) -> str:
    """Two tables (composition; closed-question shortcuts) over the reloaded samples, per task."""
    by_task: dict[str, list[Sample]] = {}
    for sample in samples:
        by_task.setdefault(sample.task, []).append(sample)
    card = benchmark_card(dict(sorted(by_task.items())))
    rows, shortcut_rows = [], []
    for t in card.tasks:
        rows.append(f"<tr><td>{_e(t.task)}</td><td>{t.n_closed}</td><td>{t.n_open}</td><td>{_e(_pairs(t.gold_letters))}</td>"
                    f"<td>{_e(_pairs(t.option_counts))}</td><td>{t.image_sets} ({t.image_sets_reused} / "
                    f"{t.items_on_reused_image_sets} / {t.max_items_per_image_set})</td>"
                    f"<td>{t.repeated_ids} / {t.items_with_repeated_ids}</td><td>{_e(_pairs(t.sources))}</td></tr>")
        if t.n_closed:
            rules = "".join(f"<td>{fmt(t.shortcuts.get(r))}</td>" for r in SHORTCUT_RULES)
            shortcut_rows.append(f"<tr><td>{_e(t.task)}</td><td>{fmt(t.chance)}</td><td>{_e(t.best_letter)} "
                                 f"({fmt(t.best_letter_share)})</td>{rules}<td>{_e(t.best_shortcut)}</td></tr>")
    rule_heads = "".join(f"<th>{_e(r)}</th>" for r in SHORTCUT_RULES)
    return ("<p class=\"note\">From the task samples reloaded for this report (see <code>medmim-eval audit "
            "benchmark</code>); ties go to the earliest option letter.</p>"
            "<table><thead><tr><th>Task</th><th>closed</th><th>open</th><th>gold letters</th><th>options per item</th>"
            "<th>image sets (reused / items on them / max)</th><th>repeated ids (ids / items)</th>"
            f"<th>items per source</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "<h3>Closed questions: accuracy (%) without looking at an image</h3>"
            f"<table><thead><tr><th>Task</th><th>chance</th><th>best letter</th>{rule_heads}<th>best</th></tr></thead>"
            f"<tbody>{''.join(shortcut_rows)}</tbody></table>")

"""HTML of the per-sample drill-down: one ``<details>`` per model x task, one card per record."""
from __future__ import annotations

from html import escape

from medmim_eval.exports.drilldown import RecordGroup
from medmim_eval.exports.thumbnails import ThumbnailSheet
from medmim_eval.schema import UNPARSEABLE, Sample, SampleRecord


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _outcome(record: SampleRecord) -> tuple[str, str]:
    """(CSS class, text) of a record's result."""
    if record.error is not None:
        return "err", "model error (not scored)"
    if record.kind == "closed":
        if record.extracted == UNPARSEABLE:
            return "bad", "unparseable (counted wrong)"
        return ("ok", "correct") if record.correct else ("bad", "wrong")
    scores = ", ".join(f"{name} {value:.2f}" for name, value in sorted(record.scores.items()))
    return "open", scores or "no scores"


def _images_sent(record: SampleRecord) -> str:
    sent = record.sent
    if sent is None:
        return f"not reported (the sample has {record.n_images} image(s))"
    text = f"{sent.n_images} of {record.n_images}"
    if sent.image_order and sent.image_order != list(range(len(sent.image_order))):
        text += f", order {sent.image_order}"
    text += ", sizes " + (", ".join(f"{w}×{h}" for w, h in sent.image_sizes) if sent.image_sizes else "not reported")
    if sent.images_dropped:
        text += f", {sent.images_dropped} dropped"
    if sent.notes:
        text += "; " + "; ".join(sent.notes)
    return text


def _gold(record: SampleRecord, sample: Sample | None) -> str:
    if sample is not None and record.gold in sample.options:
        return f"{record.gold}: {sample.options[record.gold]}"
    return record.gold


def _thumbs(sample: Sample | None, sheet: ThumbnailSheet) -> str:
    if sample is None:
        return '<div class="thumbs none">no thumbnails (task not reloaded)</div>'
    spans = []
    for index, (rel, path) in enumerate(zip(sample.images, sample.image_paths), start=1):
        name = sheet.class_for(path)
        label = _e(f"image {index}: {rel}")
        if name is None:
            spans.append(f'<span class="th miss" title="{label}">{_e(sheet.failures.get(path, "missing"))}</span>')
        else:
            spans.append(f'<span class="th {name}" role="img" aria-label="{label}" title="{label}"></span>')
    return '<div class="thumbs">' + "".join(spans) + "</div>"


def record_card(record: SampleRecord, sample: Sample | None, sheet: ThumbnailSheet) -> str:
    """One record: thumbnails, key, item, prompt, gold, output, extracted answer, result, images, error."""
    css, outcome = _outcome(record)
    rows = [
        ("key", f"<code>{_e(record.key)}</code>"),
        ("item", _e(f"{record.item_id} · {record.kind} · {record.source}")),
    ]
    if sample is not None:
        rows.append(("prompt", f"<pre>{_e(sample.prompt.render())}</pre>"))
    rows.append(("gold", _e(_gold(record, sample))))
    if record.output is not None:
        rows.append(("output", f"<pre>{_e(record.output)}</pre>"))
    if record.kind == "closed" and record.error is None:
        rows.append(("extracted", _e(record.extracted)))
    rows.append(("result", f'<span class="tag {css}">{_e(outcome)}</span>'))
    rows.append(("images sent", _e(_images_sent(record))))
    if record.error is not None:
        rows.append(("error", _e(f"{record.error.type}: {record.error.message} (attempts: {record.error.attempts})")))
    if record.latency_s is not None or record.cached:
        rows.append(("latency", _e(f"{record.latency_s or 0:.3f} s" + (" (from cache)" if record.cached else ""))))
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<div class="rec {css}">{_thumbs(sample, sheet)}<dl>{body}</dl></div>'


def group_details(group: RecordGroup, samples: dict[str, Sample], sheet: ThumbnailSheet, max_records: int) -> str:
    """A collapsible list of the first ``max_records`` records of one model x task, saying when truncated."""
    shown = group.records[:max_records]
    errors = sum(r.error is not None for r in group.records)
    wrong = sum(r.kind == "closed" and r.error is None and not r.correct for r in group.records)
    summary = (f"{_e(group.model)} · {_e(group.task)} <small>({len(group.records)} records, {wrong} closed wrong, "
               f"{errors} errors; run {_e(group.run)})</small>")
    note = (f'<p class="note">Showing the first {len(shown)} of {len(group.records)} records '
            f"(raise --max-records to see more).</p>" if len(shown) < len(group.records) else "")
    cards = "".join(record_card(r, samples.get(r.key), sheet) for r in shown)
    return f"<details><summary>{summary}</summary>{note}{cards}</details>"

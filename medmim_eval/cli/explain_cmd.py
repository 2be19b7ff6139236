"""``medmim-eval explain``: one sample's reply, options and how its answer was extracted."""
from __future__ import annotations

from pathlib import Path

import click

from medmim_eval.errors import MedmimError


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sample", "key", required=True, help="Sample key (the `key` field of samples.jsonl).")
@click.option("--model", help="Only this model's record (default: every model that answered the sample).")
def explain(run_dir: Path, key: str, model: str | None) -> None:
    """Print a sample's reply, its options and which extraction rule decided its answer (or why none did).

    For runs with an LLM judge, the judge's verdict follows the rule's.
    """
    from medmim_eval.extract import EXTRACTION_RULE_VERSION, decide_choice
    from medmim_eval.records import RecordStore, shard_paths

    records = {}
    for store in [RecordStore(run_dir)] + [RecordStore(run_dir, p.name) for p in shard_paths(run_dir)]:
        records.update(store.load(repair=False))
    found = [r for (m, k), r in sorted(records.items()) if k == key and (model is None or m == model)]
    if not found:
        known = sorted({k for _, k in records})
        hint = f" (e.g. {', '.join(known[:3])})" if known else " (it holds no records)"
        who = f" answered by model '{model}'" if model else ""
        raise MedmimError(f"{run_dir}: no record of sample '{key}'{who}; pass a key from samples.jsonl{hint}")
    for record in found:
        click.echo(f"sample:    {record.key}\nmodel:     {record.model}\ntask:      {record.task} ({record.kind})")
        click.echo(f"gold:      {record.gold}")
        if record.error is not None:
            click.echo(f"error:     {record.error.type}: {record.error.message} (no answer to extract)\n")
            continue
        if record.kind != "closed":
            click.echo(f"reply:\n{_indent(record.output or '')}\nopen answer: scored by the open metrics, "
                       "no option to extract\n")
            continue
        click.echo("options:" + ("" if record.options else " not recorded (a record written before rule v3)"))
        for letter, text in (record.options or {}).items():
            click.echo(f"  {letter}: {text}")
        click.echo(f"reply:\n{_indent(record.output or '')}")
        click.echo(f"extracted: {record.extracted} ({'correct' if record.correct else 'wrong'})")
        if record.extraction is not None:
            how = record.extraction
            click.echo(f"decided by: {how.rule} (rule v{how.rule_version})\nevidence:  {how.detail}")
        elif record.options:
            now = decide_choice(record.output or "", record.options)
            click.echo(f"decided by: not recorded (a record written before rule v3); rule v{EXTRACTION_RULE_VERSION} "
                       f"would now give {now.answer} by {now.rule}: {now.detail}")
        else:
            click.echo("decided by: not recorded (a record written before rule v3)")
        if record.judge is not None:
            judge = record.judge
            verdict = f"{judge.outcome} {judge.answer}" if judge.answer else judge.outcome
            cached = ", from cache" if judge.cached else ""
            click.echo(f"judge:     {judge.judge} (prompt v{judge.prompt_version}{cached}): {verdict}\n"
                       f"           {judge.reason}")
            if judge.reply is not None:
                click.echo(f"judge reply: {judge.reply!r}")
        click.echo("")


def _indent(text: str) -> str:
    return "\n".join(f"  | {line}" for line in (text.splitlines() or [""]))

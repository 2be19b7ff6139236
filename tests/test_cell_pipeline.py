"""With several workers, a worker sends its next request before it scores and writes the answer it
just received (a server answering many requests at once is not left idle while the client records);
with one, it records first. Every answer received is recorded: at the end, when a later batch
breaks the contract, when cancelled."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medmim_eval.adapter import Capabilities, GenerationResult, ModelSpec
from medmim_eval.datadir import DataPaths
from medmim_eval.hookspecs import hookimpl
from medmim_eval.plugins import create_plugin_host
from medmim_eval.registry import AdapterEntry
from medmim_eval.run_setup import RunOptions, prepare_run
from medmim_eval.runner import run_prepared
from medmim_eval.tasks_api import select_tasks

N = 6


def _task(folder: Path) -> Path:
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 128).save(folder / name)
    items = [{"id": f"q{i}", "images": ["a.png", "b.png"], "source": "T",
              "conversation": [{"role": "user", "content": f"<image><image>Question {i}?\nA: yes\nB: no\n"},
                               {"role": "assistant", "content": "A: yes"}]} for i in range(N)]
    path = folder / "task.json"
    path.write_text(json.dumps(items))
    return path


class Tracer:
    """Notes, at each request, how many answers it has given and how many records the run has written."""

    def __init__(self, samples: Path, options: dict[str, str]) -> None:
        self.model_id, self.samples, self.options = "tracer", samples, options
        self.capabilities = Capabilities(batch_size=1, max_concurrency=int(options.get("workers", "1")))
        self.at_send: list[tuple[int, int]] = []  # (records written, answers given)
        self.answered: list[str] = []

    def fingerprint(self) -> dict[str, str]:
        return {"tracer": "1"}

    async def generate(self, requests: Any) -> list[Any]:
        written = self.samples.read_text().count("\n") if self.samples.exists() else 0
        self.at_send.append((written, len(self.answered)))
        call = len(self.at_send)
        if str(call) == self.options.get("break_at"):
            return []  # a wrong number of results: the adapter breaks its contract
        if str(call) == self.options.get("cancel_at"):
            raise asyncio.CancelledError
        await asyncio.sleep(0.01 * (1 + call % 3))
        self.answered += [r.sample.item_id for r in requests]
        return [GenerationResult("A") for _ in requests]

    async def aclose(self) -> None:
        pass


def _run(tmp_path: Path, made: list[Tracer] | None = None, **options: str) -> tuple[Tracer, list[dict]]:
    out = tmp_path / "out"
    made = [] if made is None else made

    def factory(target: Any, opts: dict[str, str], context: Any) -> Tracer:
        made.append(Tracer(out / "samples.jsonl", opts))
        return made[-1]

    class Plugin:
        @hookimpl
        def register_adapters(self, register):  # type: ignore[no-untyped-def]
            register(AdapterEntry(name="tracer", description="x", factory=factory))

    host = create_plugin_host(autoload=False, extra_plugins=(Plugin(),))
    run_options = RunOptions(models=[ModelSpec("tracer", None, tuple(options.items()))],
                             tasks=select_tasks(str(_task(tmp_path)), host), output=out,
                             data=DataPaths.resolve(tmp_path), use_cache=False)
    try:
        run_prepared(prepare_run(run_options, host), host)
    finally:
        records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()] \
            if (out / "samples.jsonl").exists() else []
    return made[0], records


def test_with_several_workers_the_next_request_goes_out_before_the_last_answer_is_written(tmp_path: Path) -> None:
    tracer, records = _run(tmp_path, workers="2")
    assert any(written < answered for written, answered in tracer.at_send)  # an answer still unwritten at a send
    assert len(records) == N and all(r["correct"] for r in records)


def test_with_one_worker_each_answer_is_written_before_the_next_request(tmp_path: Path) -> None:
    tracer, records = _run(tmp_path)
    assert tracer.at_send == [(k, k) for k in range(N)]
    assert len(records) == N


@pytest.mark.parametrize("workers", ["1", "2"])
def test_answers_received_before_a_contract_break_are_all_recorded(tmp_path: Path, workers: str) -> None:
    tracer, records = _run(tmp_path, break_at="4", workers=workers)  # the run reports it and goes on to its end
    assert len(tracer.answered) >= 2
    assert sorted(r["item_id"] for r in records) == sorted(tracer.answered)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_answers_received_before_a_cancellation_are_all_recorded(tmp_path: Path, workers: str) -> None:
    made: list[Tracer] = []
    with pytest.raises(asyncio.CancelledError):
        _run(tmp_path, made, cancel_at="4", workers=workers)
    records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(made[0].answered) >= 2
    assert sorted(r["item_id"] for r in records) == sorted(made[0].answered)

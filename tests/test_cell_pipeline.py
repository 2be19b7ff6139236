"""A worker sends its next request before it scores and writes the answer it just received (a server
answering many requests at once is not left idle while the client records), and every answer
received is still recorded: at the end, when a later batch breaks the contract, when cancelled."""
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
    """One request at a time; notes, at each request, how many records the run has written."""

    capabilities = Capabilities(batch_size=1, max_concurrency=1)

    def __init__(self, samples: Path, options: dict[str, str]) -> None:
        self.model_id, self.samples, self.options = "tracer", samples, options
        self.written_at_send: list[int] = []

    def fingerprint(self) -> dict[str, str]:
        return {"tracer": "1"}

    async def generate(self, requests: Any) -> list[Any]:
        self.written_at_send.append(self.samples.read_text().count("\n") if self.samples.exists() else 0)
        call = len(self.written_at_send)
        if str(call) == self.options.get("break_at"):
            return []  # a wrong number of results: the adapter breaks its contract
        if str(call) == self.options.get("cancel_at"):
            raise asyncio.CancelledError
        await asyncio.sleep(0.01)
        return [GenerationResult("A") for _ in requests]

    async def aclose(self) -> None:
        pass


def _run(tmp_path: Path, **options: str) -> tuple[Tracer, list[dict]]:
    out = tmp_path / "out"
    made: list[Tracer] = []

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


def test_the_next_request_goes_out_before_the_last_answer_is_written(tmp_path: Path) -> None:
    tracer, records = _run(tmp_path)
    # request k+1 is sent while answer k is still unwritten: k-1 records exist then, not k
    assert tracer.written_at_send == [0, 0, 1, 2, 3, 4]
    assert len(records) == N and all(r["correct"] for r in records)


def test_answers_received_before_a_contract_break_are_all_recorded(tmp_path: Path) -> None:
    _, records = _run(tmp_path, break_at="4")  # the run reports the contract error and goes on to its end
    assert sorted(r["item_id"] for r in records) == ["q0", "q1", "q2"]  # the three answers received


def test_answers_received_before_a_cancellation_are_all_recorded(tmp_path: Path) -> None:
    with pytest.raises(asyncio.CancelledError):
        _run(tmp_path, cancel_at="4")
    records = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["item_id"] for r in records) == ["q0", "q1", "q2"]

"""A third-party plugin, installed like any other package, that medmim-eval must pick up.

It registers the adapter ``echo-test`` and the task ``toy-shapes``, plus a command.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path
from typing import Any, Sequence

import click

from medmim_eval.adapter import Capabilities, GenerationResult
from medmim_eval.errors import TooManyImagesError
from medmim_eval.hookspecs import hookimpl
from medmim_eval.medmim_format import load_medmim_file
from medmim_eval.registry import AdapterEntry, TaskEntry
from medmim_eval.schema import PromptRecord
from medmim_eval.tasks_api import LoadedTask, TaskContext

__version__ = "0.3.1"


class EchoAdapter:
    """Answers by looking at the first image: bright -> option A, dark -> option B.

    Options (``echo-test,key=value``): ``log=PATH`` appends one JSON line per prompt it answers;
    ``delay=SECONDS`` sleeps per batch; ``jitter=SECONDS`` sleeps a further 0 to SECONDS per batch,
    fixed by the batch's first sample key, so concurrent batches finish out of order as they do on a
    real server; ``fail=SUBSTRING`` raises for samples whose key contains it;
    ``gate=PATH,after=N`` holds every batch after the first N prompts of this process until PATH
    exists (a run that stops mid-way, to be killed); ``max_images=N`` is the capability the runner
    enforces, like ``min_images=N``; ``refuse_over=N`` makes the adapter itself refuse samples with more than N images
    (a ``TooManyImagesError`` carrying what was sent); ``broken_rank=R`` makes ``fingerprint()`` crash
    in the data-parallel rank R (``$RANK``), like a bug that hits one process only.
    """

    def __init__(self, options: dict[str, str]) -> None:
        self.model_id = "echo-test"
        self.log = options.get("log")
        self.delay = float(options.get("delay", 0))
        self.jitter = float(options.get("jitter", 0))
        self.fail = options.get("fail")
        self.gate = options.get("gate")
        self.after = int(options.get("after", 0))
        self.refuse_over = int(options["refuse_over"]) if "refuse_over" in options else None
        self.answered = 0
        self.broken_rank = options.get("broken_rank")
        self.capabilities = Capabilities(max_images=int(options.get("max_images", 3)),
                                         min_images=int(options.get("min_images", 0)),
                                         batch_size=int(options.get("batch", 2)),
                                         max_concurrency=int(options.get("concurrency", 2)))

    def fingerprint(self) -> dict[str, Any]:
        if self.broken_rank is not None and os.environ.get("RANK") == self.broken_rank:
            raise RuntimeError(f"simulated crash on rank {self.broken_rank}")
        return {"adapter": "echo-test", "version": __version__}

    async def generate(self, requests: Sequence[Any]) -> list[GenerationResult | BaseException]:
        from PIL import Image

        if self.delay:
            await asyncio.sleep(self.delay)
        if self.jitter and requests:
            await asyncio.sleep(self.jitter * random.Random(requests[0].sample.key).random())
        while self.gate and self.answered >= self.after and not os.path.exists(self.gate):
            await asyncio.sleep(0.02)
        self.answered += len(requests)
        out: list[GenerationResult | BaseException] = []
        for request in requests:
            sample = request.sample
            if self.log:
                with open(self.log, "a") as handle:
                    handle.write(json.dumps({"pid": os.getpid(), "key": sample.key}) + "\n")
            if self.fail and self.fail in sample.key:
                out.append(RuntimeError(f"simulated failure for {sample.key}"))
                continue
            if self.refuse_over is not None and len(sample.prompt.images) > self.refuse_over:
                refused = TooManyImagesError(len(sample.prompt.images), self.refuse_over, "echo-test")
                refused.sent = PromptRecord(n_images=0, notes=["refused before sending: too many images"])
                out.append(refused)
                continue
            sizes = []
            for part in sample.prompt.images:
                with Image.open(part.path) as image:
                    sizes.append(image.size)
                    bright = sum(image.convert("L").getdata()) / (image.size[0] * image.size[1]) > 127
                if len(sizes) == 1:
                    first_bright = bright
            text = ("A" if first_bright else "B") if sample.kind == "closed" else "a bright first image"
            out.append(GenerationResult(text=text, sent=PromptRecord(n_images=len(sizes), image_sizes=sizes,
                                                                     image_order=[p.index for p in sample.prompt.images])))
        return out

    async def aclose(self) -> None:
        return None


def make_echo(target: str | None, options: dict[str, str], context: Any) -> EchoAdapter:
    return EchoAdapter(options)


def load_toy(context: TaskContext) -> LoadedTask:
    """Twelve two-image questions: is the first image bright (A) or dark (B)?"""
    from PIL import Image

    folder = Path(context.cache_dir) / "toy-shapes"
    path = folder / "toy_shapes.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(7)
        items = []
        for i in range(12):
            bright = i % 2 == 0
            names = [f"img{i}_0.png", f"img{i}_1.png"]
            Image.new("L", (16, 16), 230 if bright else 20).save(folder / names[0])
            Image.new("L", (16, 16), rng.randint(0, 255)).save(folder / names[1])
            user = "<image><image>Is the first image bright or dark?\nA: bright\nB: dark\n"
            answer = "A: bright" if bright else "B: dark"
            items.append({"id": f"toy-{i}", "images": names, "source": "TOY_multichoice",
                          "conversation": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
        items.append({"id": "toy-open", "images": ["img0_0.png", "img1_0.png"], "source": "TOY_conv",
                      "conversation": [{"role": "user", "content": "<image><image>Describe the first image."},
                                       {"role": "assistant", "content": "a bright first image"}]})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(items))
        os.replace(tmp, path)
    samples = load_medmim_file(path, task="toy-shapes", ability="toy", image_root=lambda _tag: folder)
    return LoadedTask("toy-shapes", samples, [path])


@hookimpl
def register_adapters(register):  # type: ignore[no-untyped-def]
    register(AdapterEntry(name="echo-test", description="test plugin adapter", factory=make_echo))


@hookimpl
def register_tasks(register):  # type: ignore[no-untyped-def]
    register(TaskEntry(name="toy-shapes", description="test plugin task", loader=load_toy, ability="toy"))


@hookimpl
def register_commands(cli):  # type: ignore[no-untyped-def]
    @cli.command("toy-hello")
    def toy_hello() -> None:
        """A command added by the test plugin."""
        click.echo("hello from medmim-test-plugin")

"""Samples, images and task files shared by the in-process adapter tests (hf-llava, hf-idefics2)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from medmim_eval.adapter import GenerationRequest, GenerationResult, GenerationSettings
from medmim_eval.schema import ImagePart, Prompt, Sample, TextPart

QUESTION = "Which image is brightest?\nA: first\nB: second\n"


def make_images(folder: Path, count: int = 4) -> list[str]:
    """``count`` PNGs of different colours and heights (48 x 40, 48 x 48, ...)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for j in range(count):
        path = folder / f"img{j}.png"
        Image.new("RGB", (48, 40 + 8 * j), (70 * j, 255 - 60 * j, 30 + 40 * j)).save(path)
        paths.append(str(path))
    return paths


def sample(paths: list[str], key: str = "k", order: list[int] | None = None, text_first: str = "") -> Sample:
    """A closed sample whose prompt is the images (in ``order``) then QUESTION, after ``text_first``."""
    order = order if order is not None else list(range(len(paths)))
    parts: list[Any] = [TextPart(text=text_first)] if text_first else []
    parts += [ImagePart(index=i, path=paths[i]) for i in order]
    return Sample(key=key, task="t", ability="a", source="s", item_id=key, file="f.json", index=0,
                  images=[Path(p).name for p in paths], image_paths=paths,
                  prompt=Prompt(parts=[*parts, TextPart(text=QUESTION)]), question=QUESTION, kind="closed",
                  options={"A": "first", "B": "second"}, answer="A")


def generate(adapter: Any, samples: list[Sample], tokens: int = 8) -> list[GenerationResult | BaseException]:
    settings = GenerationSettings(max_new_tokens=tokens)
    return asyncio.run(adapter.generate([GenerationRequest(sample=s, settings=settings) for s in samples]))


def image_task(folder: Path, counts: list[int]) -> Path:
    """A Med-MIM JSON task with one closed item per entry of ``counts`` (images per item)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, count in enumerate(counts):
        names = [f"img{i}_{j}.png" for j in range(count)]
        for j, name in enumerate(names):
            Image.new("RGB", (48, 48), ((60 * j) % 256, 255 - 50 * j, 40 * i % 256)).save(folder / name)
        items.append({"id": f"item-{i}", "images": names, "source": "TEST_multichoice",
                      "conversation": [{"role": "user", "content": "<image>" * count + QUESTION},
                                       {"role": "assistant", "content": "A: first"}]})
    path = folder / "images.json"
    path.write_text(json.dumps(items))
    return path


def records_by_images(out: Path) -> dict[int, dict[str, Any]]:
    """The run's sample records keyed by their image count."""
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines() if line.strip()]
    return {r["n_images"]: r for r in lines}


def assert_mixed_batch_matches_one_by_one(adapter: Any, batch: list[Sample]) -> None:
    """Answers, token counts and records of one left-padded batch equal those of each sample alone,
    and so do the first-token logits (to 1e-4)."""
    together = generate(adapter, batch, tokens=16)
    alone = [generate(adapter, [s], tokens=16)[0] for s in batch]
    assert len({r.text for r in alone if isinstance(r, GenerationResult)}) >= 2  # the comparison means something
    padded = adapter.next_token_logits(*batch)
    for row, one in enumerate(batch):
        assert float((padded[row] - adapter.next_token_logits(one)[0]).abs().max()) < 1e-4
    for joint, single in zip(together, alone):
        assert isinstance(joint, GenerationResult) and isinstance(single, GenerationResult)
        assert joint.text == single.text and joint.tokens == single.tokens and joint.sent == single.sent


def assert_image_order_changes_logits(adapter: Any, paths: list[str]) -> None:
    forward = adapter.next_token_logits(sample(paths[:2], order=[0, 1]))[0]
    again = adapter.next_token_logits(sample(paths[:2], order=[0, 1]))[0]
    swapped = adapter.next_token_logits(sample(paths[:2], order=[1, 0]))[0]
    noise = float((forward - again).abs().max())
    change = float((forward - swapped).abs().max())
    assert change > max(10 * noise, 1e-3), (noise, change)

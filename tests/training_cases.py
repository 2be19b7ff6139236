"""Real Med-MIM training files for the training-recipe tests: PNG images and JSON items on disk."""
from __future__ import annotations

import json
from pathlib import Path

from medmim_eval.tasks.synth import generate_suite

QUESTION = "Which image shows the larger lesion?\nA: the first\nB: the second\nC: the third\n"


def counted_items(folder: Path, counts: list[int], name: str = "counts.json", source: str = "TEST_multichoice_comparison",
                  answers: list[str] | None = None) -> Path:
    """A closed-question file with one item per entry of ``counts`` (images per item), images beside it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, count in enumerate(counts):
        names = []
        for j in range(count):
            rel = f"img/{Path(name).stem}_{i}_{j}.png"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40 + 8 * j, 48), ((50 * j + 30 * i) % 256, 200 - 40 * j, 90)).save(folder / rel)
            names.append(rel)
        answer = (answers or ["B: the second"])[i % len(answers or ["x"])]
        items.append({"id": f"item-{i}", "images": names, "source": source,
                      "conversation": [{"role": "user", "content": "<image>" * count + QUESTION},
                                       {"role": "assistant", "content": answer}]})
    path = folder / name
    path.write_text(json.dumps(items, indent=1))
    return path


def synth_train(folder: Path, n_closed: int = 6, n_open: int = 2, seed: int = 3) -> dict[str, Path]:
    """The synthetic suite's train split, small: ``{ability key: json path}``."""
    return generate_suite(folder, seed=seed, split="train", n_closed=n_closed, n_open=n_open)


def lineage(folder: Path) -> dict:
    return json.loads((folder / "medmim_lineage.json").read_text())

"""Small Med-MIM JSON tasks mixing closed and open items with 2 or 3 images each."""
from __future__ import annotations

import json
from pathlib import Path

QUESTION = "Which image is brightest?\nA: first\nB: second\nC: third\n"


def mixed_task(folder: Path, counts: list[int]) -> Path:
    """A Med-MIM JSON task: per entry of ``counts`` one closed and one open item with that many images."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, count in enumerate(counts):
        names = [f"img{i}_{j}.png" for j in range(count)]
        for j, name in enumerate(names):
            Image.new("RGB", (40, 40), ((70 * j + 30 * i) % 256, 200 - 40 * j, (50 * i) % 256)).save(folder / name)
        items.append({"id": f"c{i}", "images": names, "source": "TEST_multichoice",
                      "conversation": [{"role": "user", "content": "<image>" * count + QUESTION},
                                       {"role": "assistant", "content": "A: first"}]})
        items.append({"id": f"o{i}", "images": names, "source": "TEST_conv",
                      "conversation": [{"role": "user", "content": "<image>" * count + "Describe the change."},
                                       {"role": "assistant", "content": "the lesion grew in the later image"}]})
    path = folder / "mixed.json"
    path.write_text(json.dumps(items))
    return path

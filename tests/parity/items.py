"""The inputs every parity test renders: Med-MIM items in the released JSON form (user text with one
``<image>`` per image, closed items with ``\\nA: ...`` option lines) with 1, 2 and 3 images, closed and
open, and real PNG files of different sizes, aspect ratios and colours (so padding, resizing and
tiling are exercised)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medmim_eval.medmim_format import build_prompt
from medmim_eval.schema import Prompt, Sample

SIZES = [(300, 200), (180, 260), (512, 512)]  # landscape, portrait, square


@dataclass(frozen=True)
class Item:
    """One Med-MIM item: ``user`` is the released user text, ``paths`` its image files in order."""

    name: str
    kind: str
    user: str
    paths: tuple[str, ...]

    @property
    def prompt(self) -> Prompt:
        return build_prompt(self.user, list(self.paths))

    @property
    def question(self) -> str:
        """The user text without its image tokens (what LLaVA-style eval scripts call the question)."""
        return self.user.replace("<image>", "")

    def sample(self) -> Sample:
        return Sample(key=self.name, task="parity", ability="parity", source="parity", item_id=self.name,
                      file="parity.json", index=0, images=[Path(p).name for p in self.paths],
                      image_paths=list(self.paths), prompt=self.prompt, question=self.question, kind=self.kind,
                      options={"A": "x", "B": "y"} if self.kind == "closed" else {}, answer="A" if self.kind == "closed" else "x")


CLOSED = "What is the diagnosis for the first fundus image?\nA: diabetic retinopathy\nB: glaucoma\nC: cataract\nD: normal fundus\n"
OPEN = "What are the differences in the pathologies presented in the images? Describe the second one."


def make_images(folder: Path) -> list[str]:
    """Three RGB PNGs with a gradient (so resampling differences show) of the ``SIZES``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for j, (w, h) in enumerate(SIZES):
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([(x * 255 // w + 40 * j) % 256, (y * 255 // h) % 256, (x + y + 90 * j) % 256], -1)
        path = folder / f"parity{j}.png"
        Image.fromarray(rgb.astype("uint8"), "RGB").save(path)
        paths.append(str(path))
    return paths


def items(paths: list[str]) -> list[Item]:
    """1, 2 and 3 images x closed and open (images first, as the released items have them)."""
    out = []
    for n in (1, 2, 3):
        for kind, text in (("closed", CLOSED), ("open", OPEN)):
            out.append(Item(f"{kind}-{n}", kind, "<image>" * n + text, tuple(paths[:n])))
    return out


ITEM_IDS = [f"{kind}-{n}" for n in (1, 2, 3) for kind in ("closed", "open")]

"""InternVL2's own rendering of a parity item (shared by the remote- and native-route tests): the
question as its README writes it, the ``internlm2-chat`` query of ``internvl.conversation``, the
``<image>`` expansion of ``InternVLChatModel.chat`` and the pixels of ``internvl.train.dataset``'s
``dynamic_preprocess`` + ``build_transform``."""
from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Iterator

from items import Item
from references import internvl2_importable, torchvision_importable


def conversation() -> SimpleNamespace:
    """``get_conv_template`` of the reference ``internvl.conversation``."""
    internvl2_importable()
    from internvl.conversation import get_conv_template

    return SimpleNamespace(get_conv_template=get_conv_template)


@contextlib.contextmanager
def tiling(target: Path) -> Iterator[SimpleNamespace]:
    """``dynamic_preprocess`` and ``build_transform`` of ``internvl/train/dataset.py`` while the block
    runs. That module needs torchvision (see ``torchvision_importable``) and imports cv2, imageio and
    decord, which it does not use for images: those three are empty stand-ins while it loads."""
    internvl2_importable()
    saved = {name: sys.modules.get(name) for name in ("cv2", "imageio", "decord")}
    with torchvision_importable(target):
        for name in saved:
            sys.modules.setdefault(name, ModuleType(name))
        sys.modules["decord"].VideoReader = object  # type: ignore[attr-defined]
        dataset = importlib.import_module("internvl.train.dataset")
        try:
            yield SimpleNamespace(dynamic_preprocess=dataset.dynamic_preprocess,
                                  build_transform=dataset.build_transform)
        finally:
            del sys.modules["internvl.train.dataset"]
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)


def question(item: Item) -> str:
    """The question of InternVL2's README: ``<image>\\n{q}`` or ``Image-1: <image>\\nImage-2: ...{q}``."""
    n = len(item.paths)
    return ("<image>\n" if n == 1 else "".join(f"Image-{i}: <image>\n" for i in range(1, n + 1))) + item.question


def query(reference: SimpleNamespace, text: str) -> str:
    """``text`` as the user turn of the ``internlm2-chat`` template, generation prompt appended."""
    template = reference.get_conv_template("internlm2-chat")
    template.append_message(template.roles[0], text)
    template.append_message(template.roles[1], None)
    return template.get_prompt()


def expand(text: str, tiles: list[int], per_tile: int) -> str:
    """``chat``'s expansion: the i-th ``<image>`` -> ``<img>`` + ``<IMG_CONTEXT>`` x per_tile x tiles[i] + ``</img>``."""
    for n in tiles:
        text = text.replace("<image>", "<img>" + "<IMG_CONTEXT>" * per_tile * n + "</img>", 1)
    return text


def pixels(tiling: SimpleNamespace, paths: tuple[str, ...], size: int, max_num: int) -> tuple[Any, list[int]]:
    """The tiles of each image (``dynamic_preprocess(..., use_thumbnail=True)``, ``build_transform``),
    concatenated in order, and the tile count of each."""
    import torch
    from PIL import Image

    transform = tiling.build_transform(is_train=False, input_size=size)
    stacks = []
    for path in paths:
        with Image.open(path) as image:
            tiles = tiling.dynamic_preprocess(image.convert("RGB"), image_size=size, use_thumbnail=True, max_num=max_num)
        stacks.append(torch.stack([transform(tile) for tile in tiles]))
    return torch.cat(stacks), [len(s) for s in stacks]

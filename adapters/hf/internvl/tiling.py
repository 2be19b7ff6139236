"""InternVL's dynamic-resolution tiling, in PIL + numpy + torch (no torchvision).

The preprocessing InternVL 1.5 / 2 document for ``model.chat`` (their ``load_image``):

1. Candidate grids are all ``(columns, rows)`` with ``min_tiles <= columns * rows <= max_tiles``,
   ordered by tile count.
2. The grid whose aspect ratio ``columns / rows`` is closest to the image's ``width / height``
   wins; on an exact tie a later (larger) grid replaces the best one while the image's area is more
   than half the area of that grid at ``tile_size``.
3. The image is resized (bicubic) to ``(columns * tile_size, rows * tile_size)`` and cut into tiles
   row by row, left to right.
4. With more than one tile, a thumbnail (the whole image resized to ``tile_size`` square) is appended.
5. Each tile becomes ``(pixel / 255 - mean) / std`` per channel (ImageNet mean and std), CHW.

A multi-image prompt shares a tile budget: each image gets ``per_image_budget(total, n)`` tiles
(at least 1), so three images fit where one image alone could take the whole budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_TILE_SIZE = 448
DEFAULT_MAX_TILES = 12


@dataclass(frozen=True)
class TiledImage:
    """One image as tiles.

    Attributes:
        pixel_values: float32 tensor ``(n_tiles, 3, tile_size, tile_size)``, normalised.
        grid: ``(columns, rows)`` of the grid the image was resized to.
        thumbnail: a thumbnail tile was appended (the grid has more than one tile).
        resized: ``(width, height)`` of the image after resizing to the grid, before cutting.
    """

    pixel_values: Any
    grid: tuple[int, int]
    thumbnail: bool
    resized: tuple[int, int]

    @property
    def n_tiles(self) -> int:
        return self.grid[0] * self.grid[1] + int(self.thumbnail)


def per_image_budget(total_tiles: int, n_images: int) -> int:
    """Tiles each image may use when ``n_images`` images share ``total_tiles`` (at least 1)."""
    return max(1, total_tiles // max(1, n_images))


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """All ``(columns, rows)`` with a tile count in ``[min_tiles, max_tiles]``, fewest tiles first."""
    grids = [(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
             if min_tiles <= c * r <= max_tiles]
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0], g[1]))


def choose_grid(width: int, height: int, tile_size: int = DEFAULT_TILE_SIZE, min_tiles: int = 1,
                max_tiles: int = DEFAULT_MAX_TILES) -> tuple[int, int]:
    """The ``(columns, rows)`` grid InternVL picks for a ``width`` x ``height`` image (rules 1-2 above)."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * columns * rows:
            best = (columns, rows)
    return best


def split_into_tiles(image: Any, tile_size: int = DEFAULT_TILE_SIZE, max_tiles: int = DEFAULT_MAX_TILES,
                     use_thumbnail: bool = True, min_tiles: int = 1) -> tuple[list[Any], tuple[int, int]]:
    """The PIL tiles of an RGB ``image`` (rules 1-4) and the grid used."""
    from PIL import Image

    columns, rows = choose_grid(image.width, image.height, tile_size, min_tiles, max_tiles)
    resized = image.resize((columns * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    tiles = []
    for index in range(columns * rows):
        left, top = (index % columns) * tile_size, (index // columns) * tile_size
        tiles.append(resized.crop((left, top, left + tile_size, top + tile_size)))
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return tiles, (columns, rows)


def normalise(tiles: list[Any], mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> Any:
    """Stack RGB PIL tiles into a float32 ``(n, 3, H, W)`` tensor, scaled to [0, 1] then normalised."""
    import numpy as np
    import torch

    array = np.stack([np.asarray(tile.convert("RGB"), dtype=np.float32) for tile in tiles]) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def tile_image(image: Any, tile_size: int = DEFAULT_TILE_SIZE, max_tiles: int = DEFAULT_MAX_TILES,
               use_thumbnail: bool = True, mean: tuple[float, ...] = IMAGENET_MEAN,
               std: tuple[float, ...] = IMAGENET_STD) -> TiledImage:
    """``image`` (PIL, any mode) as normalised tiles, the way InternVL's ``load_image`` prepares it."""
    rgb = image.convert("RGB")
    tiles, grid = split_into_tiles(rgb, tile_size, max_tiles, use_thumbnail)
    return TiledImage(pixel_values=normalise(tiles, mean, std), grid=grid,
                      thumbnail=len(tiles) > grid[0] * grid[1],
                      resized=(grid[0] * tile_size, grid[1] * tile_size))

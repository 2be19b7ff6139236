"""Images as base64 data URLs for chat-completions requests, encoded once and off the event loop.

The policy, chosen for speed and fidelity:

* An image that needs no resizing, in a format servers accept (JPEG, PNG, WebP, single-frame GIF)
  and in a mode they decode faithfully (1, L, LA, P, PA, RGB, RGBA), is sent as its **original
  bytes** with its own mime type: no decode, no re-encode, byte-identical to the file.
* Anything else is decoded, converted to 8-bit and encoded as **JPEG** (``jpeg_quality``):
  an image whose longer side exceeds ``max_side`` is shrunk to it (Lanczos, aspect kept; large
  JPEGs are decoded at a reduced scale first); 16-bit and float images (``I;16``, ``I``, ``F``)
  are scaled min-max to 8-bit grey, because servers decode them with PIL and would clip every value
  above 255 to white; alpha is composited on black (the usual background of a scan); palette,
  CMYK and other modes become RGB or L.

:class:`ImagePayloadCache` keeps each result, keyed by (path, mtime, size, max_side, jpeg_quality),
so an image shared by many samples is encoded once. An image sent as its original bytes is read and
checked on the event loop (a header parse and base64: ~0.3 ms for a 100 kB JPEG); a re-encode, and
any file over ``INLINE_MAX_BYTES``, runs in the cache's own thread pool (never in the loop's default
executor, which also resolves host names). Handing the cheap case to a thread cost far more than
doing it: with the loop busy sending requests, the thread waited for the GIL at every step, and on
MIM-RAD at concurrency 32 requests sat ~18 ms on average waiting for their images.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from medmim_eval.images import to_8bit  # noqa: F401  (moved to the core; kept importable here)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# GPT-4o first fits an image into 2048x2048, and the open VLMs work at 224-448 px: at 2048 nothing
# a model would use is dropped, while multi-megapixel scans stop costing upload time and server work.
DEFAULT_MAX_SIDE = 2048
DEFAULT_JPEG_QUALITY = 90
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
MIME_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
FAITHFUL_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}
INLINE_MAX_BYTES = 4 * 1024 * 1024  # larger files are read in the thread pool, off the event loop


@dataclass(frozen=True)
class EncodedImage:
    """One image as sent.

    Attributes:
        data_url: ``data:<mime>;base64,<payload>``.
        mime: the mime type of the payload.
        size: (width, height) of the image sent.
        original_size: (width, height) of the file.
        sha256: hex SHA-256 of the payload bytes (before base64).
        note: how the file was changed, or None when its original bytes are sent.
    """

    data_url: str
    mime: str
    size: tuple[int, int]
    original_size: tuple[int, int]
    sha256: str
    note: str | None = None

    @property
    def resized(self) -> bool:
        return self.size != self.original_size


def target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` shrunk so its longer side is at most ``max_side`` (never enlarged; None: unchanged)."""
    width, height = size
    if not max_side or max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_image(path: str, max_side: int | None = DEFAULT_MAX_SIDE,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> EncodedImage:
    """Encode one image file by the module's policy. Blocking: run it in a thread.

    Raises:
        OSError, PIL.UnidentifiedImageError: when the file cannot be read or decoded.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    return original_payload(raw, max_side) or encode_bytes(raw, max_side, jpeg_quality)


def original_payload(raw: bytes, max_side: int | None = DEFAULT_MAX_SIDE) -> EncodedImage | None:
    """The image's own bytes as its payload when the policy sends them unchanged (a header parse, no
    decode), else None: it must be re-encoded (:func:`encode_bytes`).

    Raises:
        PIL.UnidentifiedImageError: not an image PIL can open.
    """
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        original = image.size
        mime = MIME_TYPES.get(image.format or "")
        if (target_size(original, max_side) == original and mime and getattr(image, "n_frames", 1) == 1
                and image.mode in FAITHFUL_MODES):
            return _encoded(raw, mime, original, original, None)
    return None


def encode_bytes(raw: bytes, max_side: int | None = DEFAULT_MAX_SIDE,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> EncodedImage:
    """The image in ``raw`` decoded and encoded as JPEG by the module's policy (see
    :func:`encode_image`, which sends original bytes where it can). Blocking: run it in a thread.

    Raises:
        OSError, PIL.UnidentifiedImageError: when the image cannot be decoded.
    """
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        original = image.size
        size = target_size(original, max_side)
        mime = MIME_TYPES.get(image.format or "")
        single_frame = getattr(image, "n_frames", 1) == 1
        notes = []
        if size != original:
            if image.format == "JPEG":
                image.draft(image.mode, size)  # DCT-domain downscale: decodes 2-8x fewer pixels
            notes.append(f"resized {original[0]}x{original[1]} -> {size[0]}x{size[1]}")
        elif not mime or not single_frame:
            notes.append(f"{image.format or 'unknown'} format{'' if single_frame else ' (first frame)'} re-encoded")
        image.load()
        pixels, converted = to_8bit(image)
        if converted:
            notes.append(converted)
        if pixels.size != size:
            pixels = pixels.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        pixels.save(buffer, "JPEG", quality=jpeg_quality)
    notes.append(f"JPEG q{jpeg_quality}")
    return _encoded(buffer.getvalue(), "image/jpeg", size, original, ", ".join(notes))


def _encoded(data: bytes, mime: str, size: tuple[int, int], original: tuple[int, int], note: str | None) -> EncodedImage:
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return EncodedImage(url, mime, size, original, hashlib.sha256(data).hexdigest(), note)


CacheKey = tuple[str, int, int, Optional[int], int]


class ImageUnreadable(OSError):
    """An image file that cannot be read or decoded; the message names the file."""


class ImagePayloadCache:
    """Encodes images in a private thread pool and remembers the results (LRU, bounded in bytes).

    Concurrent requests for the same image share one encode. A file changed on disk (new mtime or
    size) is encoded again. Use from one event loop; call :meth:`close` when done.
    """

    def __init__(self, max_side: int | None = DEFAULT_MAX_SIDE, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                 workers: int | None = None, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_side, self.jpeg_quality, self.max_bytes = max_side, jpeg_quality, max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 2),
                                        thread_name_prefix="medmim-image")
        self._done: OrderedDict[CacheKey, EncodedImage] = OrderedDict()
        self._running: dict[CacheKey, asyncio.Future[EncodedImage]] = {}
        self._bytes = 0
        self.encoded = 0  # files read and encoded (cache misses)
        self.hits = 0

    def key(self, path: str) -> CacheKey:
        stat = os.stat(path)
        return (path, stat.st_mtime_ns, stat.st_size, self.max_side, self.jpeg_quality)

    async def get(self, path: str) -> EncodedImage:
        """The encoded image for ``path``, from the cache or encoded now (inline or in the pool).

        Raises:
            ImageUnreadable: the file cannot be read or is no image PIL can open (names the file).
        """
        try:
            return await self._get(path)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for broken files
            raise ImageUnreadable(f"image {path} cannot be sent: {type(exc).__name__}: {exc}; replace the file and "
                                  "rerun (only the samples that failed are sent again)") from exc

    async def _get(self, path: str) -> EncodedImage:
        key = self.key(path)
        found = self._done.get(key)
        if found is not None:
            self._done.move_to_end(key)
            self.hits += 1
            return found
        running = self._running.get(key)
        if running is not None:
            self.hits += 1
            return await asyncio.shield(running)
        loop = asyncio.get_running_loop()
        if key[2] <= INLINE_MAX_BYTES:
            with open(path, "rb") as handle:
                raw = handle.read()
            ready = original_payload(raw, self.max_side)
            if ready is not None:
                self.encoded += 1
                self._remember(key, ready)
                return ready
            future = loop.run_in_executor(self._pool, encode_bytes, raw, self.max_side, self.jpeg_quality)
        else:
            future = loop.run_in_executor(self._pool, encode_image, path, self.max_side, self.jpeg_quality)
        self._running[key] = future
        try:
            result = await asyncio.shield(future)
        finally:
            self._running.pop(key, None)
        self.encoded += 1
        self._remember(key, result)
        return result

    def _remember(self, key: CacheKey, result: EncodedImage) -> None:
        if key in self._done:
            return
        self._done[key] = result
        self._bytes += len(result.data_url)
        while self._bytes > self.max_bytes and len(self._done) > 1:
            _, dropped = self._done.popitem(last=False)
            self._bytes -= len(dropped.data_url)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._done.clear()
        self._bytes = 0


"""Benchmark: the near-duplicate thresholds of the contamination audit, measured on real VQA-RAD images.

Positives: each VQA-RAD image against four edited copies of itself — resized to half its size,
re-encoded as JPEG at quality 75, cropped by 5% (the central 95% of width and height kept), made 10%
brighter — and one copy with all four edits. Negatives: every pair of distinct VQA-RAD images.
For a grid of (pHash, dHash) Hamming thresholds (a pair matches when both distances are within
them) it prints recall on the positives and the false-match rate on the negatives, and the figures
of the thresholds the audit ships (``medmim_eval.image_hashes``).

    MEDMIM_DATA_DIR=../shared/data python benchmarks/bench_near_duplicates.py [--quick]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from medmim_eval.image_hashes import DHASH_MAX, PHASH_MAX, hamming, perceptual_hashes

IMAGE_FOLDER = ("vqa-rad", "VQA_RAD Image Folder")
GRID = tuple(range(6, 17))
SUMS = tuple(range(12, 31, 2))


def _jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).copy()


def _crop(image: Image.Image, fraction: float = 0.05) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction / 2), round(h * fraction / 2)
    return image.crop((dx, dy, w - dx, h - dy))


def _resize(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.LANCZOS)


def _brighter(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image.convert("RGB")).enhance(1.10)


EDITS = {
    "resized 50%": _resize,
    "JPEG q75": _jpeg,
    "cropped 5%": _crop,
    "brightness +10%": _brighter,
    "all four": lambda im: _jpeg(_brighter(_crop(_resize(im)))),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MEDMIM_DATA_DIR"))
    parser.add_argument("--quick", action="store_true", help="the first 30 images only")
    parser.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/near_duplicates.json; "
                        "a temporary file with --quick)")
    args = parser.parse_args()
    folder = Path(args.data_dir or "").joinpath(*IMAGE_FOLDER)
    if not args.data_dir or not folder.is_dir():
        print(f"SKIP: {folder} is absent (set --data-dir or MEDMIM_DATA_DIR to the shared data folder)")
        return 0
    files = sorted(folder.glob("*.jpg"))[: 30 if args.quick else None]
    started = time.perf_counter()
    originals, edited = [], {name: [] for name in EDITS}
    for path in files:
        with Image.open(path) as image:
            image.load()
            originals.append(perceptual_hashes(image))
            for name, edit in EDITS.items():
                edited[name].append(perceptual_hashes(edit(image)))
    seconds = time.perf_counter() - started
    p0 = np.array([h[0] for h in originals], dtype=np.uint64)
    d0 = np.array([h[1] for h in originals], dtype=np.uint64)
    positives = {name: (hamming(p0, np.array([h[0] for h in hs], dtype=np.uint64)),
                        hamming(d0, np.array([h[1] for h in hs], dtype=np.uint64))) for name, hs in edited.items()}
    upper = np.triu_indices(len(files), k=1)
    neg_p = hamming(p0[:, None], p0[None, :])[upper]
    neg_d = hamming(d0[:, None], d0[None, :])[upper]
    pos_p = np.concatenate([p for p, _ in positives.values()])
    pos_d = np.concatenate([d for _, d in positives.values()])

    def rates(pmax: int, dmax: int) -> tuple[float, float]:
        recall = float(np.mean((pos_p <= pmax) & (pos_d <= dmax)))
        false = float(np.mean((neg_p <= pmax) & (neg_d <= dmax))) if len(neg_p) else 0.0
        return recall, false

    print(f"{len(files)} VQA-RAD images, {len(pos_p)} edited copies, {len(neg_p)} distinct pairs "
          f"({seconds:.1f} s hashing)")
    print("\nHamming distances (bits of 64): edited copy vs its original")
    print("| edit | pHash max | pHash mean | dHash max | dHash mean |")
    print("|---|---|---|---|---|")
    for name, (p, d) in positives.items():
        print(f"| {name} | {p.max()} | {p.mean():.1f} | {d.max()} | {d.mean():.1f} |")
    print(f"| distinct pairs (min / 0.1th percentile) | {neg_p.min()} / {np.percentile(neg_p, 0.1):.0f} | "
          f"{neg_p.mean():.1f} | {neg_d.min()} / {np.percentile(neg_d, 0.1):.0f} | {neg_d.mean():.1f} |")
    print("\nrecall % / false-match % for pHash <= row AND dHash <= column")
    print("| pHash \\ dHash | " + " | ".join(map(str, GRID)) + " |")
    print("|---" * (len(GRID) + 1) + "|")
    grid = {}
    for pmax in GRID:
        cells = []
        for dmax in GRID:
            recall, false = rates(pmax, dmax)
            grid[f"{pmax},{dmax}"] = {"recall": recall, "false_match_rate": false}
            cells.append(f"{100 * recall:.1f} / {100 * false:.2f}")
        print(f"| {pmax} | " + " | ".join(cells) + " |")
    print("\nrecall % / false-match % for pHash + dHash <= T")
    print("| T | " + " | ".join(map(str, SUMS)) + " |")
    print("|---" * (len(SUMS) + 1) + "|")
    sums = {}
    for total in SUMS:
        recall = float(np.mean(pos_p + pos_d <= total))
        false = float(np.mean(neg_p + neg_d <= total)) if len(neg_p) else 0.0
        sums[str(total)] = {"recall": recall, "false_match_rate": false}
    print("| | " + " | ".join(f"{100 * v['recall']:.1f} / {100 * v['false_match_rate']:.2f}" for v in sums.values()) + " |")
    recall, false = rates(PHASH_MAX, DHASH_MAX)
    per_edit = {name: float(np.mean((p <= PHASH_MAX) & (d <= DHASH_MAX))) for name, (p, d) in positives.items()}
    false_pairs = int(np.sum((neg_p <= PHASH_MAX) & (neg_d <= DHASH_MAX)))
    print(f"\nshipped thresholds pHash <= {PHASH_MAX}, dHash <= {DHASH_MAX}: recall {100 * recall:.1f}% "
          f"({', '.join(f'{k} {100 * v:.1f}%' for k, v in per_edit.items())}), false-match rate "
          f"{100 * false:.3f}% ({false_pairs} of {len(neg_p)} distinct pairs)")
    result = {"date": date.today().isoformat(), "quick": args.quick, "images": len(files),
              "edited_copies": int(len(pos_p)), "distinct_pairs": int(len(neg_p)),
              "shipped": {"phash_max": PHASH_MAX, "dhash_max": DHASH_MAX, "recall": recall,
                          "false_match_rate": false, "false_pairs": false_pairs, "recall_per_edit": per_edit},
              "grid": grid, "sum_rule": sums, "host": {"python": sys.version.split()[0], "platform": platform.platform()}}
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) / "near_duplicates.json" if args.quick
                                           else Path(__file__).parent / "results" / "near_duplicates.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

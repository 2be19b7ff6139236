"""Where a named model's weights are on this machine. Nothing is ever downloaded here.

A model's weights folder is, in order: ``$MEDMIM_WEIGHTS_<NAME>`` (name upper-cased, ``-`` -> ``_``),
the config file's ``weights: {NAME: PATH}``, ``$MEDMIM_WEIGHTS_DIR/<folder>`` where ``<folder>`` is
the model's name or the last part of its hub id, or a complete snapshot in the Hugging Face cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from medmim_eval.datadir import default_config_path

WEIGHTS_DIR_ENV = "MEDMIM_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DIGEST_BYTES = 1 << 20
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def env_name(model: str) -> str:
    return "MEDMIM_WEIGHTS_" + model.upper().replace("-", "_").replace(".", "_")


def _config_weights() -> dict[str, str]:
    path = default_config_path()
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}  # reported by DataPaths.resolve, which reads the same file
    weights = data.get("weights") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in weights.items()} if isinstance(weights, dict) else {}


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does, without importing it:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface").expanduser() / "hub"


def hf_offline() -> bool:
    """Whether downloads from the hub are switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    """The newest snapshot of ``repo_id`` in the Hugging Face cache that has a config.json."""
    snapshots = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = sorted((p for p in snapshots.iterdir() if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def hub_weights_present(repo_id: str) -> bool:
    """Whether a cached snapshot of ``repo_id`` holds a config and a weights file."""
    snapshot = _hf_cache_snapshot(repo_id)
    return snapshot is not None and any((snapshot / name).is_file() for name in WEIGHT_FILES)


def find_weights(model: str, hub_id: str | None) -> tuple[Path | None, str]:
    """(folder or None, where it was looked for) for a named model."""
    looked = []
    env = env_name(model)
    if os.environ.get(env):
        return Path(os.environ[env]), env
    looked.append(f"${env}")
    configured = _config_weights().get(model)
    if configured:
        return Path(configured).expanduser(), "config file"
    looked.append(f"weights.{model} in {default_config_path()}")
    root = os.environ.get(WEIGHTS_DIR_ENV)
    names = [model] + ([hub_id.rsplit("/", 1)[-1]] if hub_id else [])
    if root:
        for name in names:
            if (Path(root) / name / "config.json").is_file():
                return Path(root) / name, WEIGHTS_DIR_ENV
        looked.append(f"${WEIGHTS_DIR_ENV}/{{{','.join(names)}}}")
    else:
        looked.append(f"${WEIGHTS_DIR_ENV} (unset)")
    if hub_id:
        snapshot = _hf_cache_snapshot(hub_id)
        if snapshot is not None:
            return snapshot, "Hugging Face cache"
        looked.append(f"the Hugging Face cache ({hub_id})")
    return None, "; ".join(looked)


def weights_digest(folder: Path) -> str | None:
    """SHA-256 over config.json and, per weight file, its name, size and first and last MiB (None
    without a config.json). Cheap (reads ~2 MiB per file) yet changes when a checkpoint is retrained
    or re-exported; the same wherever the folder lies."""
    if not (folder / "config.json").is_file():
        return None
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(_DIGEST_BYTES))
            if size > 2 * _DIGEST_BYTES:
                handle.seek(size - _DIGEST_BYTES)
                digest.update(handle.read(_DIGEST_BYTES))
    return digest.hexdigest()

"""Where the benchmark data lives: one data directory, each source folder overridable.

Precedence for each folder: CLI flag > environment variable > config file > under the data dir.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmim_eval.errors import MedmimError

DATA_DIR_ENV = "MEDMIM_DATA_DIR"
CONFIG_ENV = "MEDMIM_CONFIG"
CACHE_DIR_ENV = "MEDMIM_CACHE_DIR"

# folder name -> environment variable that overrides it
SOURCE_FOLDERS: dict[str, str] = {
    "med-mim": "MEDMIM_MED_MIM_DIR",
    "vqa-rad": "MEDMIM_VQA_RAD_DIR",
    "odir": "MEDMIM_ODIR_DIR",
    "ms-cxr-t": "MEDMIM_MS_CXR_T_DIR",
    "embed": "MEDMIM_EMBED_DIR",
    "lumiere": "MEDMIM_LUMIERE_DIR",
}

# Where the images of each source sit inside its folder (paths in the JSON are relative to it).
IMAGE_SUBFOLDER: dict[str, str] = {
    "vqa-rad": "VQA_RAD Image Folder",
    "odir": "",
    "ms-cxr-t": "",
    "embed": "",
    "lumiere": "",
}


def _xdg(env: str, fallback: str) -> Path:
    base = os.environ.get(env)
    return Path(base) if base else Path.home() / fallback


def default_data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "medmim-eval"


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or _xdg("XDG_CONFIG_HOME", ".config") / "medmim-eval" / "config.yaml")


def cache_dir() -> Path:
    """The per-user cache (response cache, generated synthetic data)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else _xdg("XDG_CACHE_HOME", ".cache") / "medmim-eval"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MedmimError(f"{path}: not valid YAML ({exc}); fix or remove the config file") from None
    if not isinstance(data, dict):
        raise MedmimError(f"{path}: expected a mapping with 'data_dir' and 'paths'")
    return data


@dataclass(frozen=True)
class DataPaths:
    """Resolved folders for the benchmark files and each source dataset."""

    root: Path
    folders: dict[str, Path] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        return self.folders.get(name, self.root / name)

    def image_root(self, source_folder: str) -> Path:
        return self.folder(source_folder) / IMAGE_SUBFOLDER.get(source_folder, "")

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        overrides: dict[str, str] | None = None,
        config_path: Path | None = None,
    ) -> "DataPaths":
        config = _read_config(config_path or default_config_path())
        if data_dir is not None:
            root, root_origin = Path(data_dir), "--data-dir"
        elif os.environ.get(DATA_DIR_ENV):
            root, root_origin = Path(os.environ[DATA_DIR_ENV]), DATA_DIR_ENV
        elif config.get("data_dir"):
            root, root_origin = Path(str(config["data_dir"])).expanduser(), "config file"
        else:
            root, root_origin = default_data_dir(), "default"
        folders: dict[str, Path] = {}
        origin: dict[str, str] = {"root": root_origin}
        config_paths = config.get("paths") or {}
        for name, env in SOURCE_FOLDERS.items():
            if overrides and overrides.get(name):
                folders[name], origin[name] = Path(overrides[name]), "command line"
            elif os.environ.get(env):
                folders[name], origin[name] = Path(os.environ[env]), env
            elif config_paths.get(name):
                folders[name], origin[name] = Path(str(config_paths[name])).expanduser(), "config file"
            else:
                folders[name], origin[name] = root / name, root_origin
        return cls(root=root, folders=folders, origin=origin)

"""The training output folder: its plan, resumable checkpoints, and the lineage of the result.

Layout of ``--output DIR``::

    medmim_train_plan.json   what this folder is training (recipe, hyper-parameters, data hashes, base)
    checkpoint-N/            resumable Trainer checkpoints (model, optimizer, scheduler, RNG, data position)
    config.json, *.safetensors, processor files, medmim_lineage.json   the finished model

Resume is automatic: rerunning the same command on a folder with checkpoints continues from the
last complete one (a checkpoint is complete once its ``trainer_state.json`` is written, the
Trainer's last step). A different plan is refused; ``--restart`` starts the folder over. Plans are
compared by content, not by where things lie: the data files by their hashes in order, the base by
its ``base_digest`` (config and weights; plans written before it existed compare the base's path),
so a folder moved with its data and base (a cache folder that has moved) still resumes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medmim_eval.errors import MedmimError

PLAN = "medmim_train_plan.json"
LINEAGE = "medmim_lineage.json"
LINEAGE_VERSION = 1
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def checkpoints(folder: Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) of every ``checkpoint-N`` in ``folder``, by step."""
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child, (child / "trainer_state.json").is_file()))
    return sorted(found)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _comparable(plan: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``plan`` as compared with ``other`` (see the module docstring)."""
    out = dict(plan)
    if out.get("base_digest") and other.get("base_digest"):
        out.pop("base", None)
    else:  # a plan from before base_digest: the path is all there is to compare
        out.pop("base_digest", None)
    if isinstance(out.get("data"), dict):
        out["data"] = [f"{Path(path).name} {sha}" for path, sha in out["data"].items()]
    return out


def prepare_folder(folder: Path, plan: dict[str, Any], restart: bool, is_main: bool) -> tuple[Path | None, bool]:
    """Decide how to use ``folder``: (checkpoint to resume from or None, already finished).

    Raises MedmimError when the folder holds something else, or an unfinished run with another plan.
    """
    plan_file = folder / PLAN
    if folder.exists() and any(folder.iterdir()):
        if not plan_file.is_file():
            raise MedmimError(f"{folder}: not empty and not a training folder (no {PLAN}); choose a new or empty --output")
        if restart:
            if is_main:
                shutil.rmtree(folder)
        else:
            old = json.loads(plan_file.read_text(encoding="utf-8"))
            before = old.get("plan", {})
            changed = _differences(_comparable(before, plan), _comparable(plan, before))
            if (folder / LINEAGE).is_file():
                if changed:
                    raise MedmimError(f"{folder} already holds a model trained with other settings "
                                      f"({'; '.join(changed[:4])}); choose another --output or pass --restart "
                                      "(medmim-eval demo: --retrain)")
                return None, True
            if changed:
                raise MedmimError(f"{folder} holds an unfinished run with other settings ({'; '.join(changed[:4])}); "
                                  "rerun with the same settings to resume, or pass --restart to start over "
                                  "(medmim-eval demo: --retrain)")
            complete = [(step, path) for step, path, ok in checkpoints(folder) if ok]
            last = complete[-1] if complete else None
            if is_main:
                for step, path, ok in checkpoints(folder):
                    if last is None or step > last[0]:
                        shutil.rmtree(path, ignore_errors=True)  # a checkpoint cut off by the kill
                if last is not None:
                    old.setdefault("resumes", []).append({"at": now(), "from_step": last[0]})
                    _write_json(plan_file, old)
            return (last[1] if last else None), False
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(plan_file, {"created_at": now(), "plan": plan, "resumes": []})
    return None, False


def resumes(folder: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((folder / PLAN).read_text(encoding="utf-8")).get("resumes", []))
    except (OSError, ValueError):
        return []


def finish_folder(folder: Path, lineage: dict[str, Any], keep_checkpoints: bool) -> None:
    """Write the lineage file (last: it marks the folder finished) and drop the checkpoints."""
    if not keep_checkpoints:
        for _, path, _ in checkpoints(folder):
            shutil.rmtree(path, ignore_errors=True)
    _write_json(folder / LINEAGE, {"version": LINEAGE_VERSION, **lineage})


def add_to_lineage(folder: Path, extra: dict[str, Any]) -> None:
    """Add ``extra`` to a finished folder's lineage file (written whole again, atomically)."""
    path = folder / LINEAGE
    _write_json(path, {**json.loads(path.read_text(encoding="utf-8")), **extra})


def declare_format(folder: Path, prompt_format: str) -> None:
    """Add ``medmim_prompt_format`` to config.json, so ``hf-llava:``/``vllm:`` pick the trained format."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["medmim_prompt_format"] = prompt_format
    _write_json(path, config)


def rekey_for_vllm(folder: Path) -> None:
    """Rename ``vision_tower.X`` to ``vision_tower.vision_model.X`` in the weights (the llava-hf
    layout vLLM loads; transformers reads both)."""
    from safetensors.torch import load_file, save_file

    for path in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(path))
        renamed: dict[str, Any] = {}
        changed = False
        for key, value in tensors.items():
            head = "model.vision_tower." if key.startswith("model.vision_tower.") else "vision_tower."
            if key.startswith(head) and not key.startswith(head + "vision_model."):
                key, changed = head + "vision_model." + key[len(head):], True
            renamed[key] = value.contiguous()
        if changed:
            save_file(renamed, str(path), metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = {}
        for key, file in data.get("weight_map", {}).items():
            head = "model.vision_tower." if key.startswith("model.vision_tower.") else "vision_tower."
            if key.startswith(head) and not key.startswith(head + "vision_model."):
                key = head + "vision_model." + key[len(head):]
            weight_map[key] = file
        data["weight_map"] = weight_map
        _write_json(index, data)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)

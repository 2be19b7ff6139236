"""Files a command writes where the user asked (``--output``, ``--write-json``): one error line when
the place cannot be written, never a traceback."""
from __future__ import annotations

from pathlib import Path

from medmim_eval.errors import MedmimError


def write_output_file(path: Path, text: str, option: str) -> None:
    """Write ``text`` to ``path``, creating its folder.

    Raises:
        MedmimError: naming the file, the reason and ``option`` (the flag that named it).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or type(exc).__name__)
        raise MedmimError(f"cannot write {path}: {reason}; pass another {option}") from None

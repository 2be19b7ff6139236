"""Files a command writes where the user asked (``--output``, ``--write-json``): one error line when
the place cannot be written, never a traceback."""
from __future__ import annotations

from pathlib import Path

from medmim_eval.errors import MedmimError, os_error_reason


def write_output_file(path: Path, text: str, option: str) -> None:
    """Write ``text`` to ``path``, creating its folder.

    Raises:
        MedmimError: naming the file, the reason and ``option`` (the flag that named it).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise MedmimError(f"cannot write {path}: {os_error_reason(exc, path)}; pass another {option}") from None

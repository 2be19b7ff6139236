"""CSV export: the long format of :mod:`medmim_eval.exports.rows`, missing values as empty fields."""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from medmim_eval.exports.rows import COLUMNS, long_rows

if TYPE_CHECKING:
    from medmim_eval.view_model import LeaderboardView


def to_csv(view: "LeaderboardView") -> str:
    """One header line, then one line per row; floats at full precision (``repr``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in long_rows(view):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()

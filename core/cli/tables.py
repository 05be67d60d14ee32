"""Fixed-width text tables for the summaries the commands print on stdout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Column", "format_table"]

#: (key in the record, header, format spec such as ".3f"; "" for str())
Column = tuple[str, str, str]


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Render records as an aligned table (numbers right-aligned, text left-aligned).

    Parameters
    ----------
    rows : sequence of mapping
        Records; a missing key or None prints as ``-``.
    columns : sequence of (key, header, format spec)

    Returns
    -------
    str
        Header line, one line per row, no trailing newline.
    """
    cells = [[_cell(row.get(key), spec) for key, _, spec in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(spec) for _, _, spec in columns]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in cells])

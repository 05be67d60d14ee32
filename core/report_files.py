"""Report files (headless commands, GUI exports): JSON and CSV, atomic and laid out for diff.

A report is written through :func:`core.atomic_files.write_text_atomic`, so a crash never
leaves half a report under the final name. The JSON layout puts
every flat record (a per-class row, a timing table) on one line and rounds floats to a fixed
number of significant digits, so ``diff old.json new.json`` shows one changed line per changed
class instead of a wall of re-indented numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.atomic_files import write_text_atomic

__all__ = [
    "FLOAT_DIGITS",
    "format_report_json",
    "json_ready",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

#: Significant digits kept for floats in reports: well below any metric's meaningful precision
#: loss, and stable across runs where the computation is deterministic.
FLOAT_DIGITS = 6


def json_ready(value: Any) -> Any:
    """Turn a report value into plain JSON: numpy scalars and arrays, tuples, paths, NaN.

    Floats are rounded to :data:`FLOAT_DIGITS` significant digits; NaN and infinities become
    None (JSON has no NaN, and ``json.dumps`` would otherwise write the invalid token ``NaN``).

    Parameters
    ----------
    value : Any
        Nested dicts, lists, tuples, numbers, strings, paths, numpy values.

    Returns
    -------
    Any
        The same structure with only dict, list, str, int, float, bool and None.
    """
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, str | bytes):
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return json_ready(value.tolist())
    if isinstance(value, Iterable):
        return [json_ready(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{FLOAT_DIGITS}g}")
    return str(value)


def _is_flat(value: Any) -> bool:
    """True for a dict or list holding only scalars (written on one line)."""
    items = value.values() if isinstance(value, dict) else value
    return not any(isinstance(v, dict | list) for v in items)


def _format(value: Any, indent: int) -> str:
    if isinstance(value, dict | list) and value and not _is_flat(value):
        pad = "  " * (indent + 1)
        if isinstance(value, dict):
            lines = [f"{pad}{json.dumps(k)}: {_format(v, indent + 1)}" for k, v in value.items()]
            opening, closing = "{", "}"
        else:
            lines = [f"{pad}{_format(v, indent + 1)}" for v in value]
            opening, closing = "[", "]"
        return opening + "\n" + ",\n".join(lines) + "\n" + "  " * indent + closing
    # Scalars and flat records (a class row, a shape, the timings) fit one line.
    return json.dumps(value, ensure_ascii=False)


def format_report_json(data: Any) -> str:
    """Serialise a report: nested objects indented, flat records on one line each.

    Parameters
    ----------
    data : Any
        The report (run through :func:`json_ready` first).

    Returns
    -------
    str
        Valid JSON ending with a newline; ``json.loads`` gives back ``json_ready(data)``.
    """
    return _format(json_ready(data), 0) + "\n"


def write_json_atomic(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write a report as JSON (:func:`format_report_json`) atomically.

    Parameters
    ----------
    data : Any
        The report.
    path : path-like
        Target file.

    Returns
    -------
    pathlib.Path
    """
    return write_text_atomic(format_report_json(data), path)


def write_csv_atomic(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Write records as CSV with a header row, atomically.

    Parameters
    ----------
    rows : iterable of mapping
        One record per line; missing keys and None become empty cells, floats are rounded as in
        :func:`json_ready`.
    columns : sequence of str
        Column order (keys not listed are left out).
    path : path-like
        Target file.

    Returns
    -------
    pathlib.Path
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_cell(row.get(key)) for key in columns})
    return write_text_atomic(buffer.getvalue(), path)


def _csv_cell(value: Any) -> Any:
    value = json_ready(value)
    return "" if value is None else value

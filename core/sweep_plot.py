"""The figure of a quantization sweep: mean foreground Dice against weight bits, per method."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.atomic_files import atomic_write

__all__ = ["plot_dice_vs_bits"]


def plot_dice_vs_bits(
    rows: Sequence[dict[str, Any]], paths: Sequence[str | os.PathLike[str]], decision: str
) -> list[Path]:
    """Draw one line per method (mean over seeds, each seed a dot) and the float model's level.

    Parameters
    ----------
    rows : sequence of dict
        :func:`core.sweep.sweep_rows` output.
    paths : sequence of path-like
        Files to write; the format follows the ending (``.png``, ``.svg``, ``.pdf``).
    decision : str
        The decision rule whose rows are drawn.

    Returns
    -------
    list of pathlib.Path
        The files written (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    from matplotlib.figure import Figure

    from core.sweep import FLOAT_METHOD

    chosen = [r for r in rows if r["decision"] == decision and r.get("mean_dice") is not None]
    figure = Figure(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    methods = list(dict.fromkeys(r["method"] for r in chosen if r["method"] != FLOAT_METHOD))
    for method in methods:
        own = [r for r in chosen if r["method"] == method]
        bits = sorted({r["bits"] for r in own})
        means = [
            sum(r["mean_dice"] for r in own if r["bits"] == b)
            / sum(1 for r in own if r["bits"] == b)
            for b in bits
        ]
        (line,) = axes.plot(bits, means, marker="o", label=method)
        axes.scatter(
            [r["bits"] for r in own], [r["mean_dice"] for r in own], color=line.get_color(), s=10
        )
    for row in chosen:
        if row["method"] == FLOAT_METHOD:
            axes.axhline(row["mean_dice"], color="black", linestyle="--", label="float")
    all_bits = sorted({r["bits"] for r in chosen if r["method"] != FLOAT_METHOD})
    if all_bits:
        axes.set_xticks(all_bits)
    axes.set_xlabel("weight bits")
    axes.set_ylabel(f"mean foreground Dice ({decision})")
    axes.grid(alpha=0.3)
    axes.legend()
    written = []
    for path in map(Path, paths):
        kind = path.suffix.lstrip(".").lower() or "png"
        written.append(
            atomic_write(path, lambda temp, kind=kind: figure.savefig(temp, format=kind, dpi=120))
        )
    return written

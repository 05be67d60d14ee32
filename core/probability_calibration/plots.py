"""Reliability diagrams as PNG and SVG files (matplotlib, without pyplot's global state).

One figure per model: a panel per class with mean predicted probability against observed
frequency per bin (the diagonal is perfect calibration), the pixel count per bin on a log
scale below it, and the class's ECE and tail figures in the title.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.atomic_files import atomic_write
from core.probability_calibration.measure import TAIL_PROBABILITY, ClassCalibration

__all__ = ["write_reliability_diagrams"]


def _figure(title: str, classes: Sequence[ClassCalibration]):
    from matplotlib.figure import Figure  # lazy: matplotlib is only needed for files

    n = len(classes)
    columns = min(n, 4)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(3.2 * columns, 4.2 * rows), layout="constrained")
    figure.suptitle(title)
    grid = figure.add_gridspec(2 * rows, columns, height_ratios=[3, 1] * rows)
    for index, cls in enumerate(classes):
        row, column = divmod(index, columns)
        top = figure.add_subplot(grid[2 * row, column])
        bottom = figure.add_subplot(grid[2 * row + 1, column], sharex=top)
        filled = cls.counts > 0
        centres = (cls.bin_edges[:-1] + cls.bin_edges[1:]) / 2
        top.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--")
        top.plot(cls.mean_predicted[filled], cls.observed[filled], marker="o", markersize=3)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("observed frequency")
        tail = f"tail p<{TAIL_PROBABILITY:g}: mass {cls.tail_mass:.3g} vs {cls.tail_positives} true"
        top.set_title(f"{cls.name}: ECE {cls.ece:.2g}\n{tail}", fontsize=8)
        width = np.diff(cls.bin_edges)
        bottom.bar(centres, np.maximum(cls.counts, 0), width=width, color="0.5")
        bottom.set_yscale("log")
        bottom.set_xlabel("predicted probability")
        bottom.set_ylabel("pixels")
    return figure


def write_reliability_diagrams(
    classes: Sequence[ClassCalibration], title: str, stem: str | Path
) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` (each atomically); returns both paths."""
    figure = _figure(title, classes)
    written = []
    for suffix in (".png", ".svg"):
        target = Path(f"{stem}{suffix}")
        atomic_write(target, lambda temp, s=suffix: figure.savefig(temp, format=s[1:], dpi=110))
        written.append(target)
    return written

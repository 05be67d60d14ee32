"""A live reconstruction-loss curve: one continuous line over all blocks, block starts marked.

The quantizer reports ``Progress(step, total, values={"loss": ...})`` where ``step`` counts
optimizer iterations over all blocks together (``iters`` per block), throttled to about ten
reports a second. While a run goes, :meth:`LossCurveView.add_point` appends those sparse points;
when it ends, :meth:`LossCurveView.set_history` replaces them with the full per-iteration
history of every block. The y axis is logarithmic because the loss falls by orders of magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

__all__ = ["LossCurveView"]

_CURVE_PEN = pg.mkPen((40, 110, 200), width=2)
_BOUNDARY_PEN = pg.mkPen((150, 150, 150), width=1, style=pg.QtCore.Qt.PenStyle.DashLine)


class LossCurveView(pg.PlotWidget):
    """Reconstruction loss against iteration, with a dashed line where each block starts.

    Parameters
    ----------
    parent : QWidget, optional
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setMinimumHeight(150)
        self.setLabel("bottom", "iteration (all blocks in a row)")
        # Short enough to fit the height of a bottom tab; the tooltip says the rest.
        self.setLabel("left", "loss (log)")
        self.setToolTip(
            "Reconstruction loss (squared error against the float model's output, log scale) "
            "per optimizer iteration; dashed lines mark where each block starts."
        )
        self.setLogMode(x=False, y=True)
        self.showGrid(x=True, y=True, alpha=0.2)
        self.getAxis("bottom").enableAutoSIPrefix(False)
        # Long runs have 10^5 iterations: draw at most a few points per pixel.
        self.setDownsampling(auto=True, mode="peak")
        self.setClipToView(True)
        self._curve = self.plot([], [], pen=_CURVE_PEN)
        self._x: list[float] = []
        self._y: list[float] = []
        self._boundaries: list[pg.InfiniteLine] = []
        self._iters_per_block = 0

    # --- public API ------------------------------------------------------------------------
    def reset(self, iters_per_block: int = 0) -> None:
        """Forget every point; a new run with ``iters_per_block`` iterations per block starts."""
        self._x.clear()
        self._y.clear()
        self._iters_per_block = max(0, int(iters_per_block))
        self._clear_boundaries()
        self._redraw()

    def add_point(self, step: int, loss: float) -> None:
        """Append the loss reported at global iteration ``step`` (1-based).

        Reports at or before the last plotted step (the quantizer repeats a block's last loss
        when the block ends) and losses that a log axis cannot show (zero, negative, NaN)
        are ignored.
        """
        if not np.isfinite(loss) or loss <= 0:
            return
        if self._x and step <= self._x[-1]:
            return
        if self._iters_per_block and step > self._iters_per_block:
            # A new block started since the last point: mark where, unnamed until the end.
            block_start = ((step - 1) // self._iters_per_block) * self._iters_per_block
            if block_start > 0 and block_start not in self.boundary_positions():
                self._add_boundary(block_start, "")
        self._x.append(float(step))
        self._y.append(float(loss))
        self._redraw()

    def set_history(self, history: Mapping[str, Sequence[float]], blocks: Sequence[str]) -> None:
        """Show the complete per-iteration loss of every block, blocks in ``blocks`` order.

        Parameters
        ----------
        history : mapping of str to sequence of float
            Loss per iteration for each block (``QuantResult.history``).
        blocks : sequence of str
            Block names in execution order (``QuantResult.blocks``).
        """
        self._x.clear()
        self._y.clear()
        self._clear_boundaries()
        offset = 0
        for name in blocks:
            losses = list(history.get(name, []))
            if not losses:
                continue
            if offset > 0:
                self._add_boundary(offset, name or "(model)")
            for index, loss in enumerate(losses):
                if np.isfinite(loss) and loss > 0:
                    self._x.append(float(offset + index + 1))
                    self._y.append(float(loss))
            offset += len(losses)
        self._redraw()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The plotted (iteration, loss) pairs, loss not log-transformed."""
        return np.asarray(self._x, dtype=float), np.asarray(self._y, dtype=float)

    def boundary_positions(self) -> list[float]:
        """Iterations at which a block after the first starts."""
        return [float(line.value()) for line in self._boundaries]

    # --- internals -------------------------------------------------------------------------
    def _add_boundary(self, position: float, label: str) -> None:
        line = pg.InfiniteLine(
            pos=position,
            angle=90,
            pen=_BOUNDARY_PEN,
            label=label or None,
            labelOpts={"position": 0.7, "color": (90, 90, 90), "rotateAxis": (1, 0)},
        )
        self.addItem(line)
        self._boundaries.append(line)

    def _clear_boundaries(self) -> None:
        for line in self._boundaries:
            self.removeItem(line)
        self._boundaries.clear()

    def _redraw(self) -> None:
        self._curve.setData(np.asarray(self._x, dtype=float), np.asarray(self._y, dtype=float))

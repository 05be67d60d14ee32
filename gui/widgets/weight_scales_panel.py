"""The Weight-scales panel: what quantization did to each layer's weights.

For a chosen variant and layer it plots, from :class:`core.quant.LayerReport`:

* the histogram of FlexRound's per-weight divisor ``log(S2 * s3 * s4)`` (0 = the plain grid step);
* the histogram of the rounding change against round-to-nearest, ``delta_q = q - q_nearest``;
* ``delta_q`` against ``|W| / s1`` (FlexRound lets large weights move several levels);
* the weight histogram with the quantization grid drawn as vertical lines;
* the per-output-channel factor s3 and the per-input-channel factor s4;

and a table of every layer (bits, s1 learned/initial, % of codes changed, % moved two levels or
more, reconstruction loss before/after, relative weight error). Where a method has no such
quantity (round-to-nearest learns nothing; AdaRound has no divisor) the plot is replaced by a
note saying why. Numbers come from the report; numpy only bins them for plotting.

Integration (MainWindow)::

    panel = WeightScalesPanel()
    self.add_dock("Weight scales", panel, Qt.DockWidgetArea.BottomDockWidgetArea)
    quantization_panel.variant_created.connect(
        lambda name, model, result: panel.add_variant(name, result))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from core.quant import LayerReport, QuantResult
from core.quant.diagnostics import layer_summary
from gui.widgets.table_rows import fill_text_rows

__all__ = ["KEPT_NEAREST_TEXT", "PLOT_KEYS", "TABLE_COLUMNS", "WeightScalesPanel"]

#: The panel's plots, in display order.
PLOT_KEYS = ("divisor", "delta", "scatter", "weights", "s3", "s4")

_PLOT_TITLES = {
    "divisor": "Effective divisor log(S2·s3·s4)",
    "delta": "Rounding change against round-to-nearest",
    "scatter": "Rounding change against weight size",
    "weights": "Weights and the quantization grid",
    "s3": "s3 per output channel",
    "s4": "s4 per input channel",
}
_AXES = {
    "divisor": ("log(S2·s3·s4) (natural log; 0 = grid step s1)", "weights (count)"),
    "delta": ("Δq = q − q_nearest (grid levels)", "weights (count)"),
    "scatter": ("|W| / s1 (grid steps)", "Δq (grid levels)"),
    "weights": ("weight value (layer units)", "weights (count)"),
    "s3": ("output channel (index)", "s3 (factor; 1 = unchanged)"),
    "s4": ("input channel (index)", "s4 (factor; 1 = unchanged)"),
}

#: Column titles of the per-layer table.
TABLE_COLUMNS = (
    "Layer",
    "Bits",
    "s1 learned / initial",
    "% changed",
    "% moved ≥2 levels",
    "Held-out loss before (nearest)",
    "Held-out loss after",
    "Layer error (nearest)",
    "Layer error",
    "Weight rel. error",
    "Weight rel. error (nearest)",
    "Result",
)
_COLUMN_TIPS = {
    "Held-out loss before (nearest)": "Reconstruction loss of the layer's block (the layer "
    "itself with layer-wise reconstruction) at round-to-nearest, on calibration samples that "
    "were never trained on.",
    "Held-out loss after": "The same loss for the kept result: never above the loss before, "
    "because round-to-nearest is one of the candidates.",
    "Layer error (nearest)": "Error of this layer's own output against the float model on the "
    "held-out samples, at round-to-nearest.",
    "Layer error": "The same for the kept result; inside a block it may rise while the block's "
    "output gets closer to the float one.",
    "Result": "learned: the block's best held-out iterate was kept; nearest kept: no iterate "
    "beat round-to-nearest on the held-out samples (hover a row for the reason).",
}
#: What the "Result" column says for a learned layer that kept its round-to-nearest start.
KEPT_NEAREST_TEXT = "nearest kept"
#: Background of the rows of such layers (a learned method whose learning was not kept).
KEPT_NEAREST_BRUSH = QBrush(QColor(255, 228, 170))

_NEAREST_METHODS = ("rtn", "rtn-minmax")
_HIST_PEN = pg.mkPen((40, 110, 200), width=1)
_HIST_BRUSH = pg.mkBrush(40, 110, 200, 110)
_GRID_PEN = pg.mkPen((220, 80, 40, 160), width=1)
_REFERENCE_PEN = pg.mkPen((120, 120, 120), width=1, style=Qt.PenStyle.DashLine)


def _format_number(value: float, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


class _PlotSlot(QStackedWidget):
    """A pyqtgraph plot, or in its place a note saying why there is nothing to plot."""

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(self)
        self.plot.setBackground("w")
        self.plot.setTitle(_PLOT_TITLES[key], size="9pt")
        bottom, left = _AXES[key]
        self.plot.setLabel("bottom", bottom)
        self.plot.setLabel("left", left)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        for side in ("bottom", "left"):
            # The labels carry their own units; an added "(x0.001)" would only confuse.
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.plot.setMinimumSize(220, 170)
        self.note = QLabel(self)
        self.note.setWordWrap(True)
        self.note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.note.setStyleSheet("QLabel { color: #555; padding: 12px; }")
        self.addWidget(self.plot)
        self.addWidget(self.note)

    def show_note(self, title: str, text: str) -> None:
        self.plot.clear()
        self.note.setText(f"<b>{title}</b><br>{text}")
        self.setCurrentWidget(self.note)

    def show_plot(self) -> None:
        self.plot.clear()
        self.setCurrentWidget(self.plot)

    @property
    def note_text(self) -> str:
        """The note shown instead of the plot, or "" when the plot is shown."""
        return self.note.text() if self.currentWidget() is self.note else ""


class WeightScalesPanel(QWidget):
    """Per-layer weight-scale diagnostics of quantized variants.

    Parameters
    ----------
    parent : QWidget, optional
    """

    #: (variant name, layer name) after the shown layer changed.
    layer_selected = Signal(str, str)

    #: Bins of the continuous histograms (divisor, weights).
    HISTOGRAM_BINS = 60

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._results: dict[str, QuantResult] = {}
        self._variant = ""
        self._layer = ""
        self._updating = False
        self._build()
        self._show_empty()

    # --- construction ------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        pickers = QHBoxLayout()
        form = QFormLayout()
        self.variant_combo = QComboBox(self)
        self.variant_combo.setToolTip("Quantized variant whose layers are shown.")
        self.variant_combo.currentIndexChanged.connect(self._on_variant_combo_changed)
        form.addRow("Variant", self.variant_combo)
        pickers.addLayout(form, 1)
        layer_form = QFormLayout()
        self.layer_combo = QComboBox(self)
        self.layer_combo.setToolTip("Layer shown in the plots (or click a table row).")
        self.layer_combo.currentIndexChanged.connect(self._on_layer_combo_changed)
        layer_form.addRow("Layer", self.layer_combo)
        pickers.addLayout(layer_form, 2)
        channel_form = QFormLayout()
        self.channel_spin = QSpinBox(self)
        self.channel_spin.setToolTip(
            "Per-channel grids: the output channel whose grid is drawn over the weights."
        )
        self.channel_spin.valueChanged.connect(self._on_channel_changed)
        channel_form.addRow("Grid of channel", self.channel_spin)
        pickers.addLayout(channel_form)
        layout.addLayout(pickers)

        self.summary_label = QLabel(self)
        self.summary_label.setWordWrap(True)
        layout.addWidget(self.summary_label)

        splitter = QSplitter(Qt.Orientation.Vertical, self)
        plots = QWidget(splitter)
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        self.slots: dict[str, _PlotSlot] = {}
        for index, key in enumerate(PLOT_KEYS):
            slot = _PlotSlot(key, plots)
            self.slots[key] = slot
            grid.addWidget(slot, index // 3, index % 3)
        splitter.addWidget(plots)

        self.table = QTableWidget(0, len(TABLE_COLUMNS), splitter)
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        for column, tip in _COLUMN_TIPS.items():
            self.table.horizontalHeaderItem(TABLE_COLUMNS.index(column)).setToolTip(tip)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header_tips = (
            "Module name in the model.",
            "Weight bits of the layer (first and last layers are often kept at 8).",
            "Grid step after learning divided by the step the range search chose (mean over "
            "channels for per-channel grids).",
            "Share of integer codes that differ from rounding to nearest.",
            "Share of codes moved two grid levels or more (only FlexRound can do this).",
            "The layer's output error with rounding to nearest (squared error, summed over "
            "channels, averaged over the rest).",
            "The same error after learning.",
            "||W − W_quantized|| / ||W||: it can rise while the output error falls.",
            "||W − W_nearest|| / ||W|| for comparison.",
        )
        for column, tip in enumerate(header_tips):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        splitter.addWidget(self.table)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter, 1)

    # --- public API --------------------------------------------------------------------------
    def add_variant(self, name: str, quant_result: QuantResult) -> None:
        """Add (or replace) a variant and show its first layer."""
        self._results[name] = quant_result
        if self.variant_combo.findText(name) < 0:
            self.variant_combo.addItem(name)
        if name == self._variant:
            self._variant = ""  # replaced: rebuild the layer list and the table
        first = quant_result.layers[0].name if quant_result.layers else ""
        self.select(name, first)

    def remove_variant(self, name: str) -> None:
        """Forget a variant (for example when its model was closed)."""
        self._results.pop(name, None)
        index = self.variant_combo.findText(name)
        if index >= 0:
            self.variant_combo.removeItem(index)
        if not self._results:
            self._variant = self._layer = ""
            self._show_empty()

    def variant_names(self) -> list[str]:
        """Names of the variants, in the order they were added."""
        return list(self._results)

    def select(self, variant_name: str, layer_name: str | None = None) -> None:
        """Show ``layer_name`` of ``variant_name`` (its first layer when None).

        Raises
        ------
        ValueError
            Unknown variant or layer.
        """
        result = self._results.get(variant_name)
        if result is None:
            raise ValueError(f"unknown variant {variant_name!r}: known are {list(self._results)}")
        names = [layer.name for layer in result.layers]
        if layer_name is None:
            layer_name = names[0] if names else ""
        if names and layer_name not in names:
            raise ValueError(f"variant {variant_name!r} has no quantized layer {layer_name!r}")
        variant_changed = variant_name != self._variant
        self._variant, self._layer = variant_name, layer_name
        self._updating = True
        try:
            self.variant_combo.setCurrentIndex(self.variant_combo.findText(variant_name))
            if variant_changed or self.layer_combo.count() != len(names):
                self.layer_combo.clear()
                self.layer_combo.addItems(names)
                self._fill_table(result)
            self.layer_combo.setCurrentIndex(max(0, names.index(layer_name)) if names else -1)
            if names:
                self.table.selectRow(names.index(layer_name))
        finally:
            self._updating = False
        self._show_layer()
        self.layer_selected.emit(variant_name, layer_name)

    def current_layer(self) -> LayerReport | None:
        """The report of the layer shown, or None."""
        result = self._results.get(self._variant)
        if result is None:
            return None
        return next((layer for layer in result.layers if layer.name == self._layer), None)

    @property
    def current_variant(self) -> str:
        """Name of the variant shown ("" when none)."""
        return self._variant

    def plot_widget(self, key: str) -> pg.PlotWidget:
        """The pyqtgraph plot of ``key`` (one of :data:`PLOT_KEYS`)."""
        return self.slots[key].plot

    def note(self, key: str) -> str:
        """The note shown instead of plot ``key``, or "" when the plot is shown."""
        return self.slots[key].note_text

    # --- slots -------------------------------------------------------------------------------
    def _on_variant_combo_changed(self, _index: int) -> None:
        if not self._updating and self.variant_combo.currentText() in self._results:
            self.select(self.variant_combo.currentText(), None)

    def _on_layer_combo_changed(self, _index: int) -> None:
        if not self._updating and self.layer_combo.currentText():
            self.select(self._variant, self.layer_combo.currentText())

    def _on_table_selection_changed(self) -> None:
        if self._updating:
            return
        rows = {index.row() for index in self.table.selectedIndexes()}
        if len(rows) == 1:
            item = self.table.item(rows.pop(), 0)
            if item is not None and item.text() != self._layer:
                self.select(self._variant, item.text())

    def _on_channel_changed(self, _value: int) -> None:
        if not self._updating:
            layer = self.current_layer()
            if layer is not None:
                self._plot_weights(layer)

    # --- drawing -----------------------------------------------------------------------------
    def _show_empty(self) -> None:
        self.summary_label.setText("Run a quantization to see what it did to each layer.")
        for key, slot in self.slots.items():
            slot.show_note(_PLOT_TITLES[key], "No quantized variant yet.")
        self.table.setRowCount(0)
        self.layer_combo.clear()
        self.channel_spin.setEnabled(False)

    def _fill_table(self, result: QuantResult) -> None:
        rows = []
        marks: list[tuple[str, bool]] = []
        for layer in result.layers:
            # The same per-layer numbers the `segbench quantize` report prints.
            summary = layer_summary(layer)
            ratio_text = _format_number(summary["s1_ratio"])
            if layer.s1_init.size > 1:
                ratio_text += f" (mean of {layer.s1_init.size})"
            # Only a learned method can end at its start; for round-to-nearest that is the method.
            marked = summary["kept_nearest"] and layer.method not in _NEAREST_METHODS
            if layer.method in _NEAREST_METHODS:
                outcome = "nearest (method)"
            else:
                outcome = KEPT_NEAREST_TEXT if marked else "learned"
            rows.append(
                (
                    summary["name"],
                    str(summary["bits"]),
                    ratio_text,
                    f"{summary['percent_changed']:.2f}",
                    f"{summary['percent_moved_2plus']:.2f}",
                    _format_number(summary["loss_before"]),
                    _format_number(summary["loss_after"]),
                    _format_number(summary["layer_error_before"]),
                    _format_number(summary["layer_error_after"]),
                    _format_number(summary["weight_rel_error"]),
                    _format_number(summary["weight_rel_error_rtn"]),
                    outcome,
                )
            )
            marks.append((summary["kept_reason"], marked))
        fill_text_rows(self.table, rows)
        # Tooltips and tints change no column width: set after the columns were measured once.
        for row, (reason, marked) in enumerate(marks):
            for column in range(self.table.columnCount()):
                item = self.table.item(row, column)
                item.setToolTip(reason)
                if marked:
                    item.setBackground(KEPT_NEAREST_BRUSH)

    def _show_layer(self) -> None:
        layer = self.current_layer()
        if layer is None:
            self._show_empty()
            return
        self.summary_label.setText(
            f"<b>{layer.name}</b> ({layer.kind}, weight {tuple(layer.weight_shape)}, "
            f"{layer.bits} bit, {layer.method}, block {layer.block or '(model)'}): "
            f"{100 * layer.frac_changed:.2f} % of codes differ from rounding to nearest, "
            f"{100 * layer.frac_moved_2plus:.2f} % by two levels or more."
            + self._outcome_text(layer)
        )
        self._plot_divisor(layer)
        self._plot_delta(layer)
        self._plot_scatter(layer)
        n_grids = layer.grid_levels.shape[0]
        self._updating = True
        try:
            self.channel_spin.setRange(0, max(0, n_grids - 1))
            self.channel_spin.setEnabled(n_grids > 1)
        finally:
            self._updating = False
        self._plot_weights(layer)
        self._plot_factor("s3", layer, layer.s3)
        self._plot_factor("s4", layer, layer.s4)

    @staticmethod
    def _outcome_text(layer: LayerReport) -> str:
        """What was kept, with the held-out losses (empty for round-to-nearest methods)."""
        if layer.method in _NEAREST_METHODS:
            return ""
        losses = (
            f"held-out loss {_format_number(layer.loss_before)} at round-to-nearest, "
            f"{_format_number(layer.loss_after)} kept"
        )
        if layer.kept_nearest:
            return f"<br><b>Round-to-nearest start kept</b> ({losses}): {layer.kept_reason}."
        return f"<br>Learned result kept ({losses}): {layer.kept_reason}."

    def _histogram(self, key: str, values: np.ndarray, bins: Any) -> None:
        counts, edges = np.histogram(values, bins=bins)
        self.slots[key].plot.plot(
            edges,
            counts,
            stepMode="center",
            fillLevel=0,
            pen=_HIST_PEN,
            brush=_HIST_BRUSH,
        )

    def _plot_divisor(self, layer: LayerReport) -> None:
        slot = self.slots["divisor"]
        if layer.divisor_log is None:
            if layer.method in _NEAREST_METHODS:
                text = (
                    "Round-to-nearest learns no divisor: every weight is divided by the grid "
                    "step s1 alone."
                )
            else:
                text = (
                    f"{layer.method} learns up/down rounding, not a divisor: see the rounding "
                    "change plots."
                )
            slot.show_note(_PLOT_TITLES["divisor"], text)
            return
        slot.show_plot()
        self._histogram("divisor", layer.divisor_log, self.HISTOGRAM_BINS)
        slot.plot.addItem(pg.InfiniteLine(pos=0.0, angle=90, pen=_REFERENCE_PEN))

    def _nearest_note(self, key: str, layer: LayerReport) -> bool:
        if layer.method in _NEAREST_METHODS:
            self.slots[key].show_note(
                _PLOT_TITLES[key],
                "Round-to-nearest is the reference: Δq = 0 for every weight.",
            )
            return True
        return False

    def _plot_delta(self, layer: LayerReport) -> None:
        if self._nearest_note("delta", layer):
            return
        slot = self.slots["delta"]
        slot.show_plot()
        delta = layer.scatter_delta_q
        low, high = (float(delta.min()), float(delta.max())) if delta.size else (0.0, 0.0)
        # One bin per integer level, centred on it.
        self._histogram("delta", delta, np.arange(low - 0.5, high + 1.5, 1.0))

    def _plot_scatter(self, layer: LayerReport) -> None:
        if self._nearest_note("scatter", layer):
            return
        slot = self.slots["scatter"]
        slot.show_plot()
        scatter = pg.ScatterPlotItem(
            x=layer.scatter_abs_w_over_s1,
            y=layer.scatter_delta_q,
            size=4,
            pen=None,
            brush=pg.mkBrush(40, 110, 200, 60),
        )
        slot.plot.addItem(scatter)

    def _plot_weights(self, layer: LayerReport) -> None:
        slot = self.slots["weights"]
        slot.show_plot()
        counts, edges = np.histogram(layer.weights, bins=self.HISTOGRAM_BINS)
        slot.plot.plot(
            edges, counts, stepMode="center", fillLevel=0, pen=_HIST_PEN, brush=_HIST_BRUSH
        )
        channel = min(self.channel_spin.value(), layer.grid_levels.shape[0] - 1)
        levels = np.asarray(layer.grid_levels[channel], dtype=float)
        top = float(counts.max()) if counts.size else 1.0
        # All grid lines as one item: pairs of points (level, 0) - (level, top).
        slot.plot.plot(
            np.repeat(levels, 2),
            np.tile([0.0, top], levels.size),
            connect="pairs",
            pen=_GRID_PEN,
        )
        which = f"channel {channel}" if layer.grid_levels.shape[0] > 1 else "tensor"
        slot.plot.setTitle(f"{_PLOT_TITLES['weights']} ({levels.size} levels, {which})", size="9pt")

    def _plot_factor(self, key: str, layer: LayerReport, values: np.ndarray | None) -> None:
        slot = self.slots[key]
        if values is None:
            if layer.method != "flexround":
                text = "s3 and s4 are FlexRound's per-channel factors; this method has none."
            else:
                text = f"A {layer.kind} layer has no per-input-channel factor s4."
            slot.show_note(_PLOT_TITLES[key], text)
            return
        slot.show_plot()
        slot.plot.plot(
            np.arange(values.size, dtype=float),
            np.asarray(values, dtype=float),
            pen=_HIST_PEN,
            symbol="o",
            symbolSize=5,
            symbolBrush=(40, 110, 200),
        )
        slot.plot.addItem(pg.InfiniteLine(pos=1.0, angle=0, pen=_REFERENCE_PEN))

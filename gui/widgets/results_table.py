"""The results table: one row per (model variant, decision rule), with per-class readouts."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from core.pipeline import result_table_row
from gui.session import ResultEntry
from gui.widgets.table_rows import fill_text_rows

__all__ = ["ResultsTable"]

_HEADER_TITLES = {
    "model": "Model",
    "decision": "Rule",
    "backend": "Backend",
    "model_mb": "Size MB",
    "ms_per_slice": "ms/slice",
    "mean_dice": "Dice (mean)",
    "mean_iou": "IoU (mean)",
    "mean_expected_dice": "E[Dice] (mean)",
}


_KIND_TITLES = {
    "dice": "Dice",
    "iou": "IoU",
    "expected_dice": "E[Dice]",
    "ml": "mL",
    "px": "pixels",
    "mean_intensity": "mean",
    "sd_intensity": "SD",
}


def _column_title(key: str) -> str:
    if key in _HEADER_TITLES:
        return _HEADER_TITLES[key]
    name, _, kind = key.rpartition(" ")
    kind = _KIND_TITLES.get(kind, kind)
    return f"{name}\n{kind}"


_TOOLTIPS = {
    "dice": "Dice against the ground truth: 2 TP / (2 TP + FP + FN); 1.0 when both are empty.",
    "iou": "IoU against the ground truth: TP / (TP + FP + FN); 1.0 when both are empty.",
    "expected_dice": "Expected Dice of this mask under the model's own probabilities (voxels "
    "independent), no ground truth needed. Only as good as the model's calibration: a long "
    "tail of small probabilities drags it down.",
    "ml": "Volume of the class in the mask, in millilitres (voxels x voxel volume).",
    "px": "Pixels of the class in the mask (a photograph has no physical size).",
    "mean_intensity": "Mean image value inside the class's mask (Hounsfield units for CT).",
    "sd_intensity": "Standard deviation of the image values inside the class's mask.",
    "rule": "The rule the guarded decision used for this class, learned with the probability "
    "calibration: argmax where RankSEG-RMA lowered the class's Dice on the calibration cases.",
}


_RUN_TOOLTIPS = {
    "backend": "What ran the network: torch, or ONNX Runtime (the variant exported to ONNX with "
    "integer weights).",
    "model_mb": "Size of the network as it ran: the ONNX model for ONNX Runtime; for torch every "
    "tensor of the module (a quantized torch variant simulates its integers in float).",
    "ms_per_slice": "Inference time per slice (axis k) of this run; the time of the run that "
    "computed the probabilities when another rule reused them.",
}


def _tooltip(key: str) -> str:
    if key in _RUN_TOOLTIPS:
        return _RUN_TOOLTIPS[key]
    if key in _HEADER_TITLES:  # the whole-result columns: "mean_dice" and friends
        text = _TOOLTIPS.get(key.removeprefix("mean_"), "")
        return "Mean over the foreground classes. " + text if text else ""
    return _TOOLTIPS.get(key.rpartition(" ")[2], "")


def _format(key: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"  # NaN: a corrected mask or a mask file has no expected Dice
    if isinstance(value, float):
        if key.endswith("_intensity") or key == "ms_per_slice":
            return f"{value:.1f}"
        return f"{value:.2f}" if key.endswith(" ml") else f"{value:.3f}"
    return str(value)


class ResultsTable(QWidget):
    """Shows results; clicking a row selects it, selecting two enables Compare.

    Dice and IoU are per class against the ground truth (both empty counts as 1.0; means are
    over foreground classes). E[Dice] is the model's own expected Dice of the mask, available
    without a ground truth.
    """

    result_selected = Signal(str)  # entry key
    compare_requested = Signal(str, str)
    export_requested = Signal()
    save_mask_requested = Signal()
    remove_requested = Signal(list)  # entry keys; the window makes it undoable

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 0, self)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.note = QLabel(
            "Dice/IoU per class vs ground truth (both empty = 1); E[Dice]: the model's expected "
            "Dice of the mask, no ground truth needed. Select two rows to compare.",
            self,
        )
        self.note.setWordWrap(True)
        self.compare_button = QPushButton("Compare selected", self)
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self._on_compare_clicked)
        self.save_mask_button = QPushButton("Save mask…", self)
        self.save_mask_button.setEnabled(False)
        self.save_mask_button.clicked.connect(self.save_mask_requested)
        self.export_button = QPushButton("Export table…", self)
        self.export_button.clicked.connect(self.export_requested)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip(
            "Remove the selected results (Del); Edit > Undo brings them back"
        )
        self.remove_button.setEnabled(False)
        self.remove_button.clicked.connect(self._on_remove_clicked)
        remove_key = QShortcut(QKeySequence.StandardKey.Delete, self.table)
        remove_key.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        remove_key.activated.connect(self._on_remove_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.save_mask_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        layout.addLayout(buttons)
        self._keys: list[str] = []
        self.rows: list[dict] = []
        self.columns: list[str] = []  # every column, as exported
        self.shown_columns: list[str] = []  # those with a value in some row, as on screen

    def set_entries(self, entries: list[ResultEntry], selected: str | None = None) -> None:
        """Show ``entries`` (in order); keep ``selected`` selected when given."""
        self.rows = [result_table_row(e.variant, e.result) for e in entries]
        self._keys = [e.key for e in entries]
        self.columns = []
        for row in self.rows:
            self.columns.extend(k for k in row if k not in self.columns)
        # A column with no value in any row (intensity statistics of an RGB image, Dice
        # without a ground truth) only takes room on screen; the export keeps it.
        columns = [
            key
            for key in self.columns
            if key in _HEADER_TITLES or any(row.get(key) is not None for row in self.rows)
        ]
        self.shown_columns = columns
        self.table.blockSignals(True)
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels([_column_title(c) for c in columns])
        for c, key in enumerate(columns):
            self.table.horizontalHeaderItem(c).setToolTip(_tooltip(key))
        texts = [[_format(key, row.get(key)) for key in columns] for row in self.rows]
        fill_text_rows(self.table, texts, right_aligned_from=2)
        self.table.blockSignals(False)
        if selected in self._keys:
            self.select(selected)

    def select(self, key: str) -> None:
        self.table.selectRow(self._keys.index(key))

    def selected_keys(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self._keys[r] for r in rows]

    def cell_text(self, row: int, column_key: str) -> str:
        return self.table.item(row, self.shown_columns.index(column_key)).text()

    def _on_table_selection_changed(self) -> None:
        keys = self.selected_keys()
        self.compare_button.setEnabled(len(keys) == 2)
        self.save_mask_button.setEnabled(len(keys) == 1)
        self.remove_button.setEnabled(bool(keys))
        if len(keys) == 1:
            self.result_selected.emit(keys[0])

    def _on_remove_clicked(self) -> None:
        keys = self.selected_keys()
        if keys:
            self.remove_requested.emit(keys)

    def _on_compare_clicked(self) -> None:
        keys = self.selected_keys()
        if len(keys) == 2:
            self.compare_requested.emit(keys[0], keys[1])

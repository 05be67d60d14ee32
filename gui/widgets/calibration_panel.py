"""The Calibration view: reliability diagrams, ECE and tail figures, and the fitting buttons.

Probability calibration (how far the model's probabilities can be taken at their word), not the
quantization calibration of the Quantization panel. Placed beside Weight scales::

    panel = CalibrationPanel()
    window.add_dock("Calibration", panel, Qt.DockWidgetArea.BottomDockWidgetArea)

The panel only shows figures and asks for actions; :mod:`gui.calibration_flow` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from core.probability_calibration import TAIL_PROBABILITY, ClassCalibration
from gui.widgets.table_rows import fill_text_rows

__all__ = ["CALIBRATION_COLUMNS", "CalibrationPanel"]

#: Table columns: (header, tooltip).
CALIBRATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Class", ""),
    (
        "ECE",
        "Expected calibration error: the pixel-weighted mean gap between predicted "
        "probability and observed frequency over the bins (0 = calibrated).",
    ),
    (
        f"Tail mass (p<{TAIL_PROBABILITY:g})",
        "Sum of the class's probabilities below "
        f"{TAIL_PROBABILITY:g}: RankSEG-RMA counts it as expected volume.",
    ),
    (
        "Tail true",
        f"Pixels of the class among those with p < {TAIL_PROBABILITY:g}: a tail mass "
        "far above it means RMA will over-segment the class.",
    ),
    ("Σp", "Expected volume in pixels (sum of the probabilities)."),
    ("True px", "Pixels of the class in the ground truth."),
)


class CalibrationPanel(QWidget):
    """Per-class reliability of the model's probabilities on labelled data.

    Signals
    -------
    measure_requested : the current result's probabilities against the open ground truth
    fit_image_requested(bool) : fit on the open labelled image (True: vector scaling)
    fit_folder_requested(bool) : fit on a folder of labelled cases (True: vector scaling)
    report_requested : show the calibration section of an evaluate report
    """

    measure_requested = Signal()
    fit_image_requested = Signal(bool)
    fit_folder_requested = Signal(bool)
    report_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel(self)
        self.title.setWordWrap(True)
        self.plot = pg.PlotWidget(self)
        self.plot.setLabel("bottom", "predicted probability")
        self.plot.setLabel("left", "observed frequency")
        self.plot.setXRange(0, 1)
        self.plot.setYRange(0, 1)
        self.plot.addLegend(offset=(10, 10))
        self.table = QTableWidget(0, len(CALIBRATION_COLUMNS), self)
        self.table.setHorizontalHeaderLabels([h for h, _ in CALIBRATION_COLUMNS])
        for column, (_, tip) in enumerate(CALIBRATION_COLUMNS):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        splitter = QSplitter(self)
        splitter.addWidget(self.plot)
        splitter.addWidget(self.table)
        splitter.setStretchFactor(0, 3)  # the diagram needs the room; the table is narrow
        splitter.setStretchFactor(1, 2)
        self.measure_button = QPushButton("Measure current result", self)
        self.measure_button.setToolTip(
            "Reliability of the shown result's model on the open image against its ground truth"
        )
        self.fit_image_button = QPushButton("Fit on this image…", self)
        self.fit_image_button.setToolTip(
            "Fit temperature scaling and the per-class decision guard on the open labelled "
            "image, write a calibrated copy of the model and add it as a variant. Measure it "
            "on other images: a fit is judged on cases it was not fitted on."
        )
        self.fit_folder_button = QPushButton("Fit on a folder…", self)
        self.fit_folder_button.setToolTip(
            "The same on a folder of labelled cases (images/ and labels/ subfolders, or label "
            "files named like case01_seg.nii.gz beside case01.nii.gz)"
        )
        self.vector_check = QCheckBox("Per-class scaling", self)
        self.vector_check.setToolTip(
            "Fit a scale and a bias per class instead of one temperature. It can move the "
            "argmax (the guard then keeps the model's own argmax for classes it does not help); "
            "it helped on a 512x512x300 CT fitted on a CT of that size, and cost a class up to "
            "a third of a Dice point on natural images"
        )
        self.report_button = QPushButton("Open evaluate report…", self)
        self.report_button.setToolTip("Show the calibration measured by `main.py evaluate`")
        self.measure_button.clicked.connect(self.measure_requested)
        self.fit_image_button.clicked.connect(
            lambda: self.fit_image_requested.emit(self.vector_check.isChecked())
        )
        self.fit_folder_button.clicked.connect(
            lambda: self.fit_folder_requested.emit(self.vector_check.isChecked())
        )
        self.report_button.clicked.connect(self.report_requested)
        buttons = QHBoxLayout()
        for widget in (
            self.measure_button,
            self.fit_image_button,
            self.fit_folder_button,
            self.vector_check,
            self.report_button,
        ):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(splitter, 1)
        layout.addLayout(buttons)
        self.rows: list[list[str]] = []
        self.show_classes(
            [],
            "Probability calibration: run a segmentation with a ground truth "
            "open, then Measure; or open an evaluate report.",
        )

    def show_classes(
        self,
        classes: Sequence[ClassCalibration],
        title: str,
        colors: Sequence[tuple[int, int, int]] | None = None,
    ) -> None:
        """Draw each class's reliability curve and fill the table."""
        self.title.setText(title)
        self.plot.clear()
        self.plot.plot([0, 1], [0, 1], pen=pg.mkPen((150, 150, 150), style=pg.QtCore.Qt.DashLine))
        for cls in classes:
            filled = cls.counts > 0
            color = colors[cls.label] if colors and cls.label < len(colors) else (30, 120, 200)
            if sum(color) < 60:  # the background's black would vanish on a dark plot
                color = (200, 200, 200)
            self.plot.plot(
                np.asarray(cls.mean_predicted)[filled],
                np.asarray(cls.observed)[filled],
                pen=pg.mkPen(color, width=2),
                symbol="o",
                symbolSize=5,
                symbolBrush=color,
                name=f"{cls.name} (ECE {cls.ece:.3g})",
            )
        self.rows = [
            [
                cls.name,
                f"{cls.ece:.4f}",
                f"{cls.tail_mass:.1f}",
                str(cls.tail_positives),
                f"{cls.expected_volume:.0f}",
                str(cls.true_volume),
            ]
            for cls in classes
        ]
        self.table.setRowCount(0)
        fill_text_rows(self.table, self.rows, right_aligned_from=1)

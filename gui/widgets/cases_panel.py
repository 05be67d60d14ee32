"""The Cases panel: a worklist's cases with their status, comment, time and edit Dice.

The panel shows and asks; :class:`gui.review_controller.ReviewController` does the work. A
click on a row opens that case; the buttons move to the previous / next / next unreviewed
case and set the verdict; the comment is saved when the reviewer presses Enter or leaves the
field. The header says how far the review has come ("12 of 50 reviewed").
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from core.review import STATUSES
from gui.widgets.table_rows import fill_text_rows

__all__ = ["COLUMNS", "CasesPanel"]

COLUMNS = ("Case", "Status", "Time", "Edit Dice", "Comment")
_STATUS_COLORS = {
    "accepted": QColor(40, 150, 60),
    "rejected": QColor(190, 50, 40),
    "corrected": QColor(200, 120, 20),
}


def _time(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


class CasesPanel(QWidget):
    """The worklist's cases and the reviewer's controls.

    Signals
    -------
    case_requested(str)
        A row was clicked.
    step_requested(int)
        Previous (-1) or next (+1) case.
    next_unreviewed_requested()
    status_requested(str)
        A verdict button.
    comment_edited(str)
    reviewer_edited(str)
    export_requested()
    """

    case_requested = Signal(str)
    step_requested = Signal(int)
    next_unreviewed_requested = Signal()
    status_requested = Signal(str)
    comment_edited = Signal(str)
    reviewer_edited = Signal(str)
    export_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []
        self._current: str | None = None
        layout = QVBoxLayout(self)
        self.progress_label = QLabel("No worklist open (File > Open worklist…)", self)
        self.progress_label.setObjectName("reviewProgress")
        self.progress_label.setStyleSheet("QLabel#reviewProgress { font-weight: bold; }")
        layout.addWidget(self.progress_label)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show", self))
        self.filter_combo = QComboBox(self)
        self.filter_combo.addItem("all cases", "")
        for status in STATUSES:
            self.filter_combo.addItem(status, status)
        self.filter_combo.currentIndexChanged.connect(lambda _i: self._fill())
        top.addWidget(self.filter_combo, 1)
        layout.addLayout(top)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # The comment takes the width that is left (elided, whole in its tooltip): sized to its
        # longest text it pushed the table into sideways scrolling in a laptop-sized dock.
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.cellClicked.connect(self._on_cell_clicked)
        layout.addWidget(self.table, 1)
        buttons = QGridLayout()
        self.previous_button = QPushButton("◀ Previous", self)
        self.next_button = QPushButton("Next ▶", self)
        self.unreviewed_button = QPushButton("Next unreviewed", self)
        self.accept_button = QPushButton("Accept", self)
        self.reject_button = QPushButton("Reject", self)
        self.export_button = QPushButton("Export review…", self)
        self.previous_button.setToolTip("Previous case (Alt+Up)")
        self.next_button.setToolTip("Next case (Alt+Down)")
        self.unreviewed_button.setToolTip("Next case without a verdict (Alt+N)")
        self.accept_button.setToolTip("Accept the mask shown (Alt+A)")
        self.reject_button.setToolTip("Reject the case (Alt+X)")
        self.previous_button.clicked.connect(lambda: self.step_requested.emit(-1))
        self.next_button.clicked.connect(lambda: self.step_requested.emit(1))
        self.unreviewed_button.clicked.connect(self.next_unreviewed_requested)
        self.accept_button.clicked.connect(lambda: self.status_requested.emit("accepted"))
        self.reject_button.clicked.connect(lambda: self.status_requested.emit("rejected"))
        self.export_button.clicked.connect(self.export_requested)
        buttons.addWidget(self.previous_button, 0, 0)
        buttons.addWidget(self.next_button, 0, 1)
        buttons.addWidget(self.unreviewed_button, 0, 2)
        buttons.addWidget(self.accept_button, 1, 0)
        buttons.addWidget(self.reject_button, 1, 1)
        buttons.addWidget(self.export_button, 1, 2)
        layout.addLayout(buttons)
        self.comment_edit = QLineEdit(self)
        self.comment_edit.setPlaceholderText("Comment on this case (Enter saves)")
        self.comment_edit.editingFinished.connect(
            lambda: self.comment_edited.emit(self.comment_edit.text())
        )
        layout.addWidget(self.comment_edit)
        reviewer = QHBoxLayout()
        reviewer.addWidget(QLabel("Reviewer", self))
        self.reviewer_edit = QLineEdit(self)
        self.reviewer_edit.setPlaceholderText("your name, saved with each verdict")
        self.reviewer_edit.editingFinished.connect(
            lambda: self.reviewer_edited.emit(self.reviewer_edit.text().strip())
        )
        reviewer.addWidget(self.reviewer_edit, 1)
        layout.addLayout(reviewer)
        self.set_enabled(False)

    def set_enabled(self, enabled: bool) -> None:
        """Enable the controls once a worklist is open."""
        for widget in (
            self.previous_button,
            self.next_button,
            self.unreviewed_button,
            self.accept_button,
            self.reject_button,
            self.export_button,
            self.comment_edit,
        ):
            widget.setEnabled(enabled)

    def show_rows(self, rows: list[dict[str, Any]], current: str | None) -> None:
        """Show the cases (rows of :meth:`core.review.ReviewState.rows`), ``current`` selected."""
        self._rows = rows
        self._current = current
        reviewed = sum(row["status"] != "unreviewed" for row in rows)
        self.progress_label.setText(f"{reviewed} of {len(rows)} reviewed")
        self._fill()
        comment = next((row["comment"] for row in rows if row["case"] == current), "")
        if not self.comment_edit.hasFocus():
            self.comment_edit.setText(comment)
        self.set_enabled(bool(rows))

    @property
    def shown_cases(self) -> list[str]:
        """Case names in the table now (after the status filter)."""
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    def set_filter(self, status: str) -> None:
        """Show only cases with ``status`` ("" for all)."""
        self.filter_combo.setCurrentIndex(max(0, self.filter_combo.findData(status)))

    def _fill(self) -> None:
        wanted = self.filter_combo.currentData()
        rows = [row for row in self._rows if not wanted or row["status"] == wanted]
        texts = [
            [
                row["case"],
                row["status"],
                _time(row["seconds"]),
                "–" if row["edit_dice"] is None else f"{row['edit_dice']:.3f}",
                row["comment"],
            ]
            for row in rows
        ]
        self.table.blockSignals(True)
        fill_text_rows(self.table, texts, right_aligned_from=2)
        for r, row in enumerate(rows):
            comment = self.table.item(r, len(COLUMNS) - 1)
            comment.setToolTip(comment.text())
            comment.setTextAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            color = _STATUS_COLORS.get(row["status"])
            if color is not None:
                self.table.item(r, 1).setForeground(color)
            if row["case"] == self._current:
                self.table.selectRow(r)
        self.table.blockSignals(False)

    def _on_cell_clicked(self, row: int, _column: int) -> None:
        self.case_requested.emit(self.table.item(row, 0).text())

"""The Corrections toolbar: pick a tool (navigate, paint, erase, fill, delete component), the
brush radius in millimetres and the label to paint.

Keys: N navigate, B paint, E erase, K fill a closed region, X delete a connected component,
[ and ] brush radius. Plain left drags on a view then paint; Ctrl/Shift drags keep their
window/level and pan meaning.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QLabel, QToolBar, QWidget

__all__ = ["CorrectionToolbar"]

_TOOLS = (
    ("navigate", "Navigate", "N", "The pointer moves the crosshair (no editing)"),
    ("brush", "Paint", "B", "Paint the chosen label with a round brush (drag)"),
    ("erase", "Erase", "E", "Erase the chosen label under a round brush (drag)"),
    ("fill", "Fill", "K", "Fill the closed region under the pointer with the chosen label"),
    ("delete", "Delete blob", "X", "Delete the connected component under the pointer"),
)


class CorrectionToolbar(QToolBar):
    """Tool, radius and label for :class:`gui.mask_editor.MaskEditor`.

    Signals
    -------
    tool_changed(str), radius_changed(float), label_changed(int)
    """

    tool_changed = Signal(str)
    radius_changed = Signal(float)
    label_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Corrections", parent)
        self.setObjectName("toolbar_corrections")
        group = QActionGroup(self)
        group.setExclusive(True)
        self.tool_actions: dict[str, QAction] = {}
        for tool, text, key, tip in _TOOLS:
            action = QAction(text, self)
            action.setCheckable(True)
            action.setShortcut(QKeySequence(key))
            action.setToolTip(f"{tip} ({key})")
            action.triggered.connect(lambda _checked=False, t=tool: self.tool_changed.emit(t))
            group.addAction(action)
            self.addAction(action)
            self.tool_actions[tool] = action
        self.tool_actions["navigate"].setChecked(True)
        self.addSeparator()
        self.addWidget(QLabel(" Radius ", self))
        self.radius_spin = QDoubleSpinBox(self)
        self.radius_spin.setRange(0.1, 200.0)
        self.radius_spin.setValue(3.0)
        self.radius_spin.setSuffix(" mm")
        self.radius_spin.setToolTip(
            "Brush radius in mm (pixels for photographs); [ and ] change it"
        )
        self.radius_spin.valueChanged.connect(self.radius_changed)
        self.addWidget(self.radius_spin)
        for key, factor in (("[", 1 / 1.25), ("]", 1.25)):
            action = QAction(self.radius_spin)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            action.triggered.connect(
                lambda _c=False, f=factor: self.radius_spin.setValue(self.radius_spin.value() * f)
            )
            self.radius_spin.addAction(action)  # a key without a button of its own
        self.addWidget(QLabel(" Label ", self))
        self.label_combo = QComboBox(self)
        self.label_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.label_combo.setToolTip("The label painted, erased or filled")
        self.label_combo.currentIndexChanged.connect(self._on_label_index)
        self.addWidget(self.label_combo)

    def select_tool(self, tool: str) -> None:
        """Check ``tool``'s button (as its key would) and announce it."""
        self.tool_actions[tool].setChecked(True)
        self.tool_changed.emit(tool)

    def set_labels(self, names: list[str]) -> None:
        """Offer the foreground labels ``names[1:]`` (label 1 first)."""
        current = self.label_combo.currentIndex()
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        for value, name in enumerate(names[1:], start=1):
            self.label_combo.addItem(f"{value}: {name}", value)
        if self.label_combo.count() == 0:
            self.label_combo.addItem("1", 1)
        self.label_combo.setCurrentIndex(max(0, min(current, self.label_combo.count() - 1)))
        self.label_combo.blockSignals(False)
        self._on_label_index(self.label_combo.currentIndex())

    def _on_label_index(self, index: int) -> None:
        value = self.label_combo.itemData(index)
        if value is not None:
            self.label_changed.emit(int(value))

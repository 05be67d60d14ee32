"""Controls for the viewer's overlays and window presets.

Bound to an :class:`OrthoViewer` or a :class:`CompareViewer` (both expose the same setters):
overlay mode, filled/outline, global opacity, a per-label list (visibility checkbox, colour
swatch, name, opacity), the difference-overlay legend, the display convention, and the
window presets with their number keys.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.display import (
    DIFFERENCE_CLASS_NAMES,
    DIFFERENCE_COLORS,
    WINDOW_PRESETS,
    WindowPreset,
    format_window,
)
from gui.widgets.compact import narrow_combo
from gui.widgets.compare_viewer import CompareViewer
from gui.widgets.ortho_viewer import OrthoViewer

__all__ = ["OverlayPanel"]

_MODE_TITLES = {
    "prediction": "Prediction",
    "ground_truth": "Ground truth",
    "both": "Prediction + ground truth outline",
    "difference": "Difference (TP / FP / FN)",
}


def _swatch(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


class OverlayPanel(QWidget):
    """Overlay and window controls for one viewer.

    Parameters
    ----------
    viewer : OrthoViewer or CompareViewer or None
        The viewer to control; see :meth:`bind`.
    """

    def __init__(
        self, viewer: OrthoViewer | CompareViewer | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._viewer: OrthoViewer | CompareViewer | None = None
        self._source: OrthoViewer | None = None  # where label names and state are read

        overlay_box = QGroupBox("Overlay", self)
        form = QFormLayout(overlay_box)
        self.visible_check = QCheckBox("Show overlay (O)", self)
        self.visible_check.setChecked(True)
        self.visible_check.toggled.connect(lambda on: self._apply("set_overlay_visible", on))
        form.addRow(self.visible_check)
        self.mode_combo = narrow_combo(self)
        for mode, title in _MODE_TITLES.items():
            self.mode_combo.addItem(title, mode)
        self.mode_combo.currentIndexChanged.connect(
            lambda i: self._apply("set_overlay_mode", self.mode_combo.itemData(i))
        )
        form.addRow("Mode", self.mode_combo)
        self.outline_check = QCheckBox("Outline only (F)", self)
        self.outline_check.toggled.connect(lambda on: self._apply("set_overlay_style", not on))
        form.addRow(self.outline_check)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.valueChanged.connect(lambda v: self._apply("set_opacity", v / 100.0))
        form.addRow("Opacity", self.opacity_slider)
        self.difference_combo = narrow_combo(self)
        self.difference_combo.currentIndexChanged.connect(
            lambda i: self._apply("set_difference_label", self.difference_combo.itemData(i))
        )
        form.addRow("Difference of", self.difference_combo)
        legend = "   ".join(
            f'<span style="color: rgb{DIFFERENCE_COLORS[c]}">\u25a0</span> {name}'
            for c, name in DIFFERENCE_CLASS_NAMES.items()
        )
        self.difference_legend = QLabel(legend, self)
        self.difference_legend.setWordWrap(True)
        form.addRow(self.difference_legend)
        self.neurological_check = QCheckBox("Neurological (patient left on left)")
        self.neurological_check.setToolTip(
            "Off: radiological convention, the patient's right on the screen's left (default)."
        )
        self.neurological_check.toggled.connect(
            lambda on: self._apply("set_convention", "neurological" if on else "radiological")
        )
        form.addRow(self.neurological_check)

        labels_box = QGroupBox("Labels", self)
        labels_layout = QVBoxLayout(labels_box)
        self.label_table = QTableWidget(0, 2, self)
        self.label_table.setHorizontalHeaderLabels(["Label", "Opacity %"])
        self.label_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.label_table.horizontalHeader().setSectionResizeMode(
            1, QHeaderView.ResizeMode.ResizeToContents
        )
        self.label_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.label_table.verticalHeader().setVisible(False)
        self.label_table.itemChanged.connect(self._on_label_item_changed)
        labels_layout.addWidget(self.label_table)

        window_box = QGroupBox("Window presets (number keys)", self)
        window_layout = QVBoxLayout(window_box)
        self.preset_list = QListWidget(self)
        self.preset_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.preset_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self._fill_presets(WINDOW_PRESETS, None)
        self.preset_list.itemActivated.connect(self._on_preset_activated)
        self.preset_list.itemClicked.connect(self._on_preset_activated)
        window_layout.addWidget(self.preset_list)
        self.window_label = QLabel(self)
        window_layout.addWidget(self.window_label)

        layout = QVBoxLayout(self)
        layout.addWidget(overlay_box)
        layout.addWidget(labels_box)  # as tall as its rows: no empty table under three labels
        layout.addWidget(window_box)
        layout.addStretch(1)
        if viewer is not None:
            self.bind(viewer)

    # --- binding ----------------------------------------------------------------------------
    def bind(self, viewer: OrthoViewer | CompareViewer) -> None:
        """Control ``viewer`` and show its current settings and labels."""
        if self._source is not None:
            for signal, slot in self._connections():
                signal.disconnect(slot)
        self._viewer = viewer
        self._source = viewer.left if isinstance(viewer, CompareViewer) else viewer
        for signal, slot in self._connections():
            signal.connect(slot)
        self._sync_from_viewer()
        self._rebuild_labels()
        self._on_presets_changed()

    def _connections(self):
        source = self._source
        return (
            (source.labels_changed, self._rebuild_labels),
            (source.presets_changed, self._on_presets_changed),
            (source.overlay_visibility_changed, self._on_viewer_visibility_changed),
            (source.overlay_style_changed, self._sync_from_viewer),
            (source.window_changed, self._on_viewer_window_changed),
        )

    def _apply(self, method: str, *args) -> None:
        if self._viewer is not None:
            getattr(self._viewer, method)(*args)

    def _sync_from_viewer(self) -> None:
        source = self._source
        if source is None:
            return
        for widget, value in (
            (self.visible_check, source.overlay_visible),
            (self.outline_check, not source.overlay_filled),
            (self.neurological_check, source.convention == "neurological"),
        ):
            widget.blockSignals(True)
            widget.setChecked(value)
            widget.blockSignals(False)
        self.mode_combo.blockSignals(True)
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(source.overlay_mode))
        self.mode_combo.blockSignals(False)
        self.opacity_slider.blockSignals(True)
        self.opacity_slider.setValue(round(source.opacity * 100))
        self.opacity_slider.blockSignals(False)
        self.difference_legend.setVisible(source.overlay_mode == "difference")
        self._on_viewer_window_changed(*source.window)

    def _on_viewer_visibility_changed(self, visible: bool) -> None:
        self.visible_check.blockSignals(True)
        self.visible_check.setChecked(visible)
        self.visible_check.blockSignals(False)

    def _on_viewer_window_changed(self, center: float, width: float) -> None:
        self.window_label.setText(f"Window: {format_window(center, width)}")

    def _on_presets_changed(self) -> None:
        source = self._source
        if source is not None:
            has_image = source.image is not None
            self._fill_presets(source.presets, source.default_window_setting if has_image else None)

    def _fill_presets(
        self, presets: tuple[WindowPreset, ...], default: tuple[float, float] | None
    ) -> None:
        """List key 0 (the image's default window) and the image's presets, one per row."""
        self.preset_list.clear()
        shown = f"  {format_window(*default, space='')}" if default is not None else ""
        item = QListWidgetItem(f"0  Image default{shown}")
        item.setToolTip("The file's own window (DICOM), else the 0.1-99.9 percentiles")
        item.setData(Qt.ItemDataRole.UserRole, "0")
        self.preset_list.addItem(item)
        for preset in presets:
            item = QListWidgetItem(preset.label)
            item.setData(Qt.ItemDataRole.UserRole, preset.key)
            self.preset_list.addItem(item)
        # Tall enough for every row: a list of seven must not scroll inside a scrolling dock.
        rows = self.preset_list.count()
        row_height = self.preset_list.sizeHintForRow(0) if rows else 18
        frame = 2 * self.preset_list.frameWidth()
        self.preset_list.setFixedHeight(rows * max(row_height, 16) + frame + 4)

    def _on_preset_activated(self, item: QListWidgetItem) -> None:
        self._apply("apply_preset", item.data(Qt.ItemDataRole.UserRole))

    # --- labels -----------------------------------------------------------------------------
    def _rebuild_labels(self) -> None:
        source = self._source
        names = source.label_names if source is not None else []
        colors = source.label_colors if source is not None else []
        self.label_table.blockSignals(True)
        self.label_table.setRowCount(0)
        self.difference_combo.blockSignals(True)
        self.difference_combo.clear()
        self.difference_combo.addItem("All labels", None)
        for label in range(1, len(names)):
            row = self.label_table.rowCount()
            self.label_table.insertRow(row)
            item = QTableWidgetItem(_swatch(colors[label]), f"{label}  {names[label]}")
            item.setData(Qt.ItemDataRole.UserRole, label)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            visible = source.is_label_visible(label)
            item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
            self.label_table.setItem(row, 0, item)
            spin = QSpinBox(self.label_table)
            spin.setRange(0, 100)
            spin.setValue(round(source.label_opacity(label) * 100))
            spin.valueChanged.connect(
                lambda v, lab=label: self._apply("set_label_opacity", lab, v / 100.0)
            )
            self.label_table.setCellWidget(row, 1, spin)
            self.difference_combo.addItem(names[label], label)
        self.difference_combo.blockSignals(False)
        self.label_table.blockSignals(False)
        # Every label row visible (up to eight; more scroll): the table is not squeezed to two.
        self.label_table.resizeRowsToContents()
        header = self.label_table.horizontalHeader().sizeHint().height()
        shown = min(max(self.label_table.rowCount(), 1), 8)
        rows = sum(
            self.label_table.rowHeight(r) for r in range(min(shown, self.label_table.rowCount()))
        )
        rows = rows or 26
        # A few pixels of slack: row heights settle once the spin boxes are shown.
        self.label_table.setFixedHeight(header + rows + 2 * self.label_table.frameWidth() + 8)

    def _on_label_item_changed(self, item: QTableWidgetItem) -> None:
        label = item.data(Qt.ItemDataRole.UserRole)
        if label is not None:
            self._apply("set_label_visible", int(label), item.checkState() == Qt.CheckState.Checked)

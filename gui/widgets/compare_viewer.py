"""Two segmentation results of one image, side by side or one over the other.

Modes:

- ``"side_by_side"``: two :class:`OrthoViewer` s whose crosshair, slices, zoom/pan and window
  stay synchronised;
- ``"swipe"``: one viewer; the left result is drawn left of a vertical divider, the right
  result right of it (the slider moves the divider);
- ``"toggle"``: one viewer showing one result at a time; T (or the button) switches.

Overlay settings (mode, style, opacity, label visibility, convention) are forwarded to both
viewers, so an :class:`OverlayPanel` can be bound to a CompareViewer like to an OrthoViewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QPainter, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from core.display import LabelVolume, WindowPreset, default_window, image_presets
from core.io import Image
from gui.widgets.ortho_viewer import OrthoViewer, save_pixmap

__all__ = ["COMPARE_MODES", "CompareViewer"]

#: Accepted by :meth:`CompareViewer.set_mode`.
COMPARE_MODES: tuple[str, ...] = ("side_by_side", "swipe", "toggle")

_MODE_TITLES = {"side_by_side": "Side by side", "swipe": "Swipe", "toggle": "Toggle (T)"}
_TITLE_STYLE = "QLabel { color: #e6e6e6; background: #202020; padding: 2px 6px; }"


class CompareViewer(QWidget):
    """Two results over one image in synchronised views.

    Signals
    -------
    cursor_moved(object)
        :class:`core.display.CursorInfo` under the mouse in either viewer (prediction fields
        are those of the viewer the mouse is in).
    window_changed(float, float)
        New window ``(center, width)``.
    mode_changed(str)
        The compare mode changed.
    """

    cursor_moved = Signal(object)
    window_changed = Signal(float, float)
    mode_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._mode = "side_by_side"
        self._masks: list[LabelVolume | np.ndarray | None] = [None, None]
        self._titles = ["", ""]
        self._shown = 0  # toggle mode: which result the left viewer shows
        self._syncing = False
        # An image (and window) set while hidden, and the ground truth to show with it.
        self._pending: tuple[Image, tuple[float, float] | None] | None = None
        self._truth: np.ndarray | LabelVolume | None = None

        self.left = OrthoViewer(self)
        self.right = OrthoViewer(self)
        self.viewers = (self.left, self.right)

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        self.mode_combo = QComboBox(self)
        for mode in COMPARE_MODES:
            self.mode_combo.addItem(_MODE_TITLES[mode], mode)
        self.mode_combo.currentIndexChanged.connect(
            lambda i: self.set_mode(self.mode_combo.itemData(i))
        )
        self.swipe_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.swipe_slider.setRange(0, 100)
        self.swipe_slider.setValue(50)
        self.swipe_slider.setToolTip("Divider position: left result | right result")
        self.swipe_slider.valueChanged.connect(lambda _: self._apply_masks())
        self.toggle_button = QPushButton("Switch result (T)", self)
        self.toggle_button.clicked.connect(self.toggle_result)
        bar.addWidget(QLabel("Compare:", self))
        bar.addWidget(self.mode_combo)
        bar.addWidget(self.swipe_slider, 1)
        bar.addWidget(self.toggle_button)
        bar.addStretch(0)  # keeps the combo box compact while the slider is hidden

        titles = QHBoxLayout()
        titles.setContentsMargins(0, 0, 0, 0)
        titles.setSpacing(2)
        self.title_labels = (QLabel(self), QLabel(self))
        views = QHBoxLayout()
        views.setContentsMargins(0, 0, 0, 0)
        views.setSpacing(4)
        for label, viewer in zip(self.title_labels, self.viewers, strict=True):
            label.setStyleSheet(_TITLE_STYLE)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            titles.addWidget(label)
            views.addWidget(viewer)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addLayout(titles)
        layout.addLayout(views, 1)

        for this, other in ((self.left, self.right), (self.right, self.left)):
            this.cursor_voxel_changed.connect(
                lambda ijk, o=other: self._sync(lambda: o.set_cursor_voxel(ijk))
            )
            this.window_changed.connect(
                lambda c, w, o=other: self._sync(lambda: o.set_window(c, w))
            )
            this.overlay_visibility_changed.connect(
                lambda v, o=other: self._sync(lambda: o.set_overlay_visible(v))
            )
            this.cursor_moved.connect(self.cursor_moved)
        self.left.window_changed.connect(self.window_changed)
        # Zoom and pan: pyqtgraph links the ranges of corresponding views both ways.
        for slot, view in self.right.views.items():
            view.view_box.setXLink(self.left.views[slot].view_box)
            view.view_box.setYLink(self.left.views[slot].view_box)
        self._update_controls()

    def _sync(self, action) -> None:
        """Run ``action`` on the other viewer without echoing back (avoids signal loops)."""
        if self._syncing:
            return
        self._syncing = True
        try:
            action()
        finally:
            self._syncing = False

    # --- content ----------------------------------------------------------------------------
    def set_image(
        self,
        image: Image,
        *,
        window: tuple[float, float] | None = None,
        presets: tuple[WindowPreset, ...] | None = None,
    ) -> None:
        """Show ``image`` in both viewers (drops previous results).

        ``window`` and ``presets`` are the image's default window and number-key presets when
        the caller has them (see :meth:`OrthoViewer.set_image`); otherwise each is computed once
        here for both viewers.
        While the compare viewer is hidden (the workbench keeps it behind the main viewer until
        Compare), its six views are built when it is first shown or given results: opening an
        image then builds three views on the GUI thread, not nine.
        """
        self._masks = [None, None]
        self._truth = None
        self._pending = (image, window, presets)
        if self.isVisible():
            self._build_pending()

    def _build_pending(self) -> None:
        """Put the image set while hidden (and its ground truth) into both viewers."""
        if self._pending is None:
            return
        image, window, presets = self._pending
        self._pending = None
        if window is None:
            window = default_window(image.array, dicom_window=image.window)
        if presets is None:
            presets = image_presets(image.array, modality=image.modality, natural=image.is_natural)
        for viewer in self.viewers:
            viewer.set_image(image, window=window, presets=presets)
        if self._truth is not None:
            self.set_ground_truth(self._truth)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        self._build_pending()
        super().showEvent(event)

    def clear(self) -> None:
        """Empty both viewers."""
        self._masks = [None, None]
        self._pending = self._truth = None
        for viewer in self.viewers:
            viewer.clear()

    def set_labels(self, names: Sequence[str], colors: Sequence[tuple[int, int, int]]) -> None:
        """Label names and RGB colours for both results."""
        for viewer in self.viewers:
            viewer.set_labels(names, colors)

    def set_ground_truth(self, mask: np.ndarray | LabelVolume | None) -> None:
        """Ground truth shared by both results (for the difference mode)."""
        self._truth = mask
        if self._pending is not None:
            return  # shown with the image, once the viewers are built
        if mask is not None and self.left.image is not None:
            mask = self.left.conform_mask(mask, "ground truth")  # once for both viewers
        for viewer in self.viewers:
            viewer.set_ground_truth(mask)

    def set_results(
        self,
        left_mask: np.ndarray | LabelVolume | None,
        left_title: str,
        right_mask: np.ndarray | LabelVolume | None,
        right_title: str,
    ) -> None:
        """The two label volumes to compare (shape ``image.shape3``) and their titles.

        Example titles: ``"FP32 + argmax"`` and ``"W4 FlexRound + RMA"``. Label volumes
        prepared on a worker (:func:`core.display.prepare_labels`) are shown without a pass
        over their voxels.
        """
        self._build_pending()
        # Convert once here: toggle and swipe re-send these masks on every switch.
        conform = self.left.image is not None
        self._masks = [
            self.left.conform_mask(mask, what) if conform and mask is not None else mask
            for mask, what in ((left_mask, left_title), (right_mask, right_title))
        ]
        self._titles = [left_title, right_title]
        self._shown = 0
        self._apply_masks()

    def set_mode(self, mode: str) -> None:
        """``"side_by_side"``, ``"swipe"`` or ``"toggle"``."""
        if mode not in COMPARE_MODES:
            raise ValueError(f"unknown compare mode {mode!r}; expected one of {COMPARE_MODES}")
        if mode == self._mode:
            return
        self._mode = mode
        self.mode_combo.setCurrentIndex(COMPARE_MODES.index(mode))
        self._apply_masks()
        self.mode_changed.emit(mode)

    @property
    def mode(self) -> str:
        """The compare mode."""
        return self._mode

    def set_swipe_position(self, fraction: float) -> None:
        """Swipe divider as a fraction of the view width, in [0, 1]."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"swipe position must lie in [0, 1], got {fraction}")
        self.swipe_slider.setValue(round(fraction * 100))

    def toggle_result(self) -> None:
        """Toggle mode: show the other result."""
        self._shown = 1 - self._shown
        self._apply_masks()

    @property
    def shown_result(self) -> int:
        """Toggle mode: 0 when the left result is shown, 1 for the right."""
        return self._shown

    def _apply_masks(self) -> None:
        left_mask, right_mask = self._masks
        left_title, right_title = self._titles
        if self.left.image is None:
            self._update_controls()
            return
        if self._mode == "side_by_side":
            self.left.set_swipe(None, None)
            self.left.set_prediction(left_mask)
            self.right.set_prediction(right_mask)
            self.title_labels[0].setText(left_title)
            self.title_labels[1].setText(right_title)
        elif self._mode == "swipe":
            self.left.set_prediction(left_mask)
            self.left.set_swipe(right_mask, self.swipe_slider.value() / 100.0)
            self.title_labels[0].setText(f"{left_title}   \u25c0 | \u25b6   {right_title}")
        else:
            self.left.set_swipe(None, None)
            self.left.set_prediction(self._masks[self._shown])
            self.title_labels[0].setText(
                f"Showing: {self._titles[self._shown]}   (T: {self._titles[1 - self._shown]})"
            )
        self._update_controls()

    def _update_controls(self) -> None:
        side = self._mode == "side_by_side"
        self.right.setVisible(side)
        self.title_labels[1].setVisible(side)
        self.swipe_slider.setVisible(self._mode == "swipe")
        self.toggle_button.setVisible(self._mode == "toggle")

    # --- settings forwarded to both viewers -------------------------------------------------
    def set_overlay_mode(self, mode: str) -> None:
        """See :meth:`OrthoViewer.set_overlay_mode`."""
        for viewer in self.viewers:
            viewer.set_overlay_mode(mode)

    def set_overlay_style(self, filled: bool) -> None:
        """See :meth:`OrthoViewer.set_overlay_style`."""
        for viewer in self.viewers:
            viewer.set_overlay_style(filled)

    def set_opacity(self, opacity: float) -> None:
        """See :meth:`OrthoViewer.set_opacity`."""
        for viewer in self.viewers:
            viewer.set_opacity(opacity)

    def set_label_opacity(self, label: int, opacity: float) -> None:
        """See :meth:`OrthoViewer.set_label_opacity`."""
        for viewer in self.viewers:
            viewer.set_label_opacity(label, opacity)

    def set_label_visible(self, label: int, visible: bool) -> None:
        """See :meth:`OrthoViewer.set_label_visible`."""
        for viewer in self.viewers:
            viewer.set_label_visible(label, visible)

    def set_overlay_visible(self, visible: bool) -> None:
        """See :meth:`OrthoViewer.set_overlay_visible`."""
        for viewer in self.viewers:
            viewer.set_overlay_visible(visible)

    def set_difference_label(self, label: int | None) -> None:
        """See :meth:`OrthoViewer.set_difference_label`."""
        for viewer in self.viewers:
            viewer.set_difference_label(label)

    def set_convention(self, convention: str) -> None:
        """See :meth:`OrthoViewer.set_convention`."""
        for viewer in self.viewers:
            viewer.set_convention(convention)

    def set_window(self, center: float, width: float) -> None:
        """See :meth:`OrthoViewer.set_window` (the other viewer follows)."""
        self.left.set_window(center, width)

    def apply_preset(self, key: str) -> bool:
        """See :meth:`OrthoViewer.apply_preset`."""
        return self.left.apply_preset(key)

    def set_cursor_voxel(self, ijk: Sequence[int]) -> None:
        """Move both crosshairs to voxel ``ijk``."""
        self.left.set_cursor_voxel(ijk)

    def maximize_view(self, view: str | None) -> None:
        """Maximise the same view in both viewers."""
        for viewer in self.viewers:
            viewer.maximize_view(view)

    # --- keys and screenshots ---------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_T and self._mode == "toggle":
            self.toggle_result()
            event.accept()
        else:
            super().keyPressEvent(event)

    def grab_views(self) -> QPixmap:
        """The visible viewers (with titles) side by side in one pixmap."""
        shown = [v for v in self.viewers if v.isVisible() or v is self.left]
        pixmaps = [v.grab_views() for v in shown]
        width = sum(p.width() for p in pixmaps) + 4 * (len(pixmaps) - 1)
        height = max(p.height() for p in pixmaps)
        result = QPixmap(width, height)
        result.fill(Qt.GlobalColor.black)
        painter = QPainter(result)
        x = 0
        for pixmap in pixmaps:
            painter.drawPixmap(x, 0, pixmap)
            x += pixmap.width() + 4
        painter.end()
        return result

    def save_screenshot(self, path: str | Path) -> None:
        """Save :meth:`grab_views` to ``path``; raises ValueError naming it on failure."""
        self._build_pending()
        save_pixmap(self.grab_views() if self.left.image is not None else None, path)

"""One 2-D slice of a volume: image, RGBA overlay, crosshair, orientation letters, slice index.

The view is deliberately dumb about geometry: it is handed a ``(slices, rows, cols[, 3])``
array (a numpy view cut by :func:`core.display.plane_volume`, so scrolling copies nothing
but the slice pyqtgraph converts), the millimetre size of a pixel, the letters for its edges
and a callable that renders the overlay of a slice. The owner (``OrthoViewer``) links views.

Mouse: wheel = slice, Ctrl+wheel = zoom, left click/drag = move the crosshair (with a correction
tool on: paint, see ``stroke``), right drag or Ctrl+left drag = window/level, middle or
Shift+left drag = pan, double-click = maximise.
Keys: Up/Down/Left/Right and PgUp/PgDn = slice (Shift: 10 slices), Home = reset zoom; other
keys are passed on to the parent widget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QResizeEvent, QTransform
from PySide6.QtWidgets import (
    QGraphicsItem,
    QLabel,
    QSizePolicy,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["SLICE_KEYS", "OverlaySource", "SliceView"]

# Arrays are indexed [row, col] everywhere in segbench; pyqtgraph defaults to [x, y].
pg.setConfigOptions(imageAxisOrder="row-major")

#: Renders the RGBA overlay ``(rows, cols, 4)`` uint8 of a slice index, or None for none.
OverlaySource = Callable[[int], "np.ndarray | None"]

# Letters and titles sit on a dark translucent plate: readable on black air and on white bone
# or a bright photograph alike (yellow or light grey on white alone was not).
_LETTER_STYLE = (
    "QLabel { color: #ffcc33; font-weight: bold; font-size: 13px;"
    " background: rgba(0, 0, 0, 170); border-radius: 3px; padding: 0px 3px; }"
)
_CORNER_STYLE = (
    "QLabel { color: #f0f0f0; font-size: 12px; background: rgba(0, 0, 0, 170); padding: 1px 4px; }"
)

#: Keys that move through slices (Shift: ten at a time).
SLICE_KEYS = (
    Qt.Key.Key_Up,
    Qt.Key.Key_Right,
    Qt.Key.Key_PageUp,
    Qt.Key.Key_Down,
    Qt.Key.Key_Left,
    Qt.Key.Key_PageDown,
)
_CROSSHAIR_PEN = pg.mkPen(color=(80, 200, 255, 170), width=1)
_SWIPE_PEN = pg.mkPen(color=(255, 255, 255, 220), width=2)


class _SliceViewBox(pg.ViewBox):
    """A ViewBox whose mouse gestures mean slice/crosshair/window instead of pan/zoom."""

    def __init__(self, owner: SliceView) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._owner = owner

    def wheelEvent(self, ev, axis=None) -> None:  # noqa: N802 (Qt override)
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta()
        if delta:
            self._owner.step_slice(1 if delta > 0 else -1)
        ev.accept()

    def _paints(self, ev) -> bool:
        """A plain left button while a correction tool is on: the event edits the mask."""
        plain = not ev.modifiers() & (
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
        )
        return self._owner.painting and ev.button() == Qt.MouseButton.LeftButton and plain

    def mouseClickEvent(self, ev) -> None:  # noqa: N802
        self._owner.setFocus(Qt.FocusReason.MouseFocusReason)
        if self._paints(ev) and not ev.double():
            ev.accept()
            point = self.mapToView(ev.pos())
            self._owner._stroke("press", point)
            self._owner._stroke("release", point)
            return
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.accept()
            return
        ev.accept()
        if ev.double():
            self._owner.maximize_requested.emit()
            return
        self._owner._pick(self.mapToView(ev.pos()))

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802
        self._owner.setFocus(Qt.FocusReason.MouseFocusReason)
        button = ev.button()
        modifiers = ev.modifiers()
        left = button == Qt.MouseButton.LeftButton
        if self._paints(ev):
            ev.accept()
            if ev.isStart():
                self._owner._stroke("press", self.mapToView(ev.buttonDownPos()))
            self._owner._stroke("move", self.mapToView(ev.pos()))
            if ev.isFinish():
                self._owner._stroke("release", self.mapToView(ev.pos()))
        elif button == Qt.MouseButton.RightButton or (
            left and modifiers & Qt.KeyboardModifier.ControlModifier
        ):
            ev.accept()
            delta = ev.screenPos() - ev.lastScreenPos()
            self._owner.window_dragged.emit(float(delta.x()), float(delta.y()))
        elif left and modifiers & Qt.KeyboardModifier.ShiftModifier:
            ev.accept()
            shift = self.mapToView(ev.pos()) - self.mapToView(ev.lastPos())
            self.translateBy(x=-shift.x(), y=-shift.y())
        elif left:
            ev.accept()
            self._owner._pick(self.mapToView(ev.pos()))
        else:  # middle button: pyqtgraph's own pan
            super().mouseDragEvent(ev, axis)


class SliceView(QWidget):
    """Display of one plane of a volume with its overlay and crosshair.

    Signals
    -------
    slice_changed(int)
        The shown slice index changed (by wheel, keys or :meth:`set_slice`).
    position_picked(float, float)
        Left click or drag at ``(row, col)`` pixel coordinates (fractional).
    hovered(int, int)
        The mouse is over pixel ``(row, col)``.
    window_dragged(float, float)
        Window/level drag by ``(dx, dy)`` screen pixels.
    maximize_requested()
        Double-click or the maximise button.
    stroke(str, int, int)
        With :attr:`painting` on, a plain left press, drag or release at pixel ``(row, col)``
        (the phase is ``"press"``, ``"move"`` or ``"release"``): a correction tool's stroke.
    """

    slice_changed = Signal(int)
    position_picked = Signal(float, float)
    hovered = Signal(int, int)
    window_dragged = Signal(float, float)
    maximize_requested = Signal()
    stroke = Signal(str, int, int)

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(120, 120)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self._title = title
        self._planes: np.ndarray | None = None
        self._slice = 0
        self._levels: tuple[float, float] = (0.0, 1.0)
        self._overlay_source: OverlaySource | None = None
        self._pixel_mm = (1.0, 1.0)  # (row height, column width)
        #: A correction tool is on: plain left clicks and drags edit instead of moving the cursor.
        self.painting = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.graphics = pg.GraphicsView(self, background="k")
        # Keys are handled here, not by QGraphicsView (which would scroll on arrows/PgUp).
        self.graphics.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        layout.addWidget(self.graphics)
        self.view_box = _SliceViewBox(self)
        self.graphics.setCentralItem(self.view_box)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        # Moving a crosshair repaints the whole view: from a cached pixmap at screen
        # resolution instead of scaling each 512x512 slice image again (tens of ms for the six
        # views of the compare viewer).
        for item in (self.image_item, self.overlay_item):
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        # Overlay changes (mask, style, opacity, ...) often come several to a slot: they
        # mark the overlay stale and one render follows in the next event-loop turn.
        self._overlay_stale = False
        self._overlay_timer = QTimer(self)
        self._overlay_timer.setSingleShot(True)
        self._overlay_timer.setInterval(0)
        self._overlay_timer.timeout.connect(self.render_overlay)
        self.view_box.addItem(self.image_item)
        self.view_box.addItem(self.overlay_item)
        self.h_line = pg.InfiniteLine(angle=0, movable=False, pen=_CROSSHAIR_PEN)
        self.v_line = pg.InfiniteLine(angle=90, movable=False, pen=_CROSSHAIR_PEN)
        self.swipe_line = pg.InfiniteLine(angle=90, movable=False, pen=_SWIPE_PEN)
        for line in (self.h_line, self.v_line, self.swipe_line):
            line.setZValue(20)
            self.view_box.addItem(line, ignoreBounds=True)
        self.swipe_line.setVisible(False)
        self.graphics.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)

        self.letter_labels = {edge: QLabel(self) for edge in ("left", "right", "top", "bottom")}
        for label in self.letter_labels.values():
            label.setStyleSheet(_LETTER_STYLE)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.slice_label = QLabel(self)
        self.slice_label.setStyleSheet(_CORNER_STYLE)
        self.slice_label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.maximize_button = QToolButton(self)
        self.maximize_button.setIcon(
            self.style().standardIcon(QStyle.StandardPixmap.SP_TitleBarMaxButton)
        )
        self.maximize_button.setToolTip("Maximise this view (or double-click it)")
        self.maximize_button.setAutoRaise(True)
        self.maximize_button.setFixedSize(22, 22)
        self.maximize_button.setStyleSheet("QToolButton { background: transparent; }")
        self.maximize_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.maximize_button.clicked.connect(self.maximize_requested)
        self._set_image_visible(False)

    # --- content ----------------------------------------------------------------------------
    def set_planes(
        self,
        planes: np.ndarray,
        *,
        pixel_mm: tuple[float, float],
        letters: tuple[str, str, str, str],
        title: str,
        slice_index: int,
    ) -> None:
        """Show a new volume.

        Parameters
        ----------
        planes : numpy.ndarray
            ``(slices, rows, cols)`` or ``(slices, rows, cols, 3)`` screen images.
        pixel_mm : tuple of float
            Height and width of one pixel in mm: sets the displayed aspect ratio.
        letters : tuple of str
            Orientation letters for the (left, right, top, bottom) edges.
        title : str
            View name for the slice label ("Axial").
        slice_index : int
            Slice to show first.
        """
        if planes.ndim not in (3, 4) or min(planes.shape[:3]) < 1:
            raise ValueError(f"slice view needs (slices, rows, cols[, 3]), got {planes.shape}")
        self._planes = planes
        self._title = title
        self._pixel_mm = (float(pixel_mm[0]), float(pixel_mm[1]))
        # Scene units are millimetres: one pixel spans (column width, row height) mm, which
        # with the ViewBox's locked 1:1 aspect gives the true anatomical proportions.
        scale = QTransform.fromScale(self._pixel_mm[1], self._pixel_mm[0])
        self.image_item.setTransform(scale)
        self.overlay_item.setTransform(scale)
        for edge, letter in zip(("left", "right", "top", "bottom"), letters, strict=True):
            self.letter_labels[edge].setText(letter)
            self.letter_labels[edge].adjustSize()
        self._slice = -1
        self._set_image_visible(True)
        self.set_slice(slice_index)
        self.reset_zoom()
        self._place_labels()

    def clear_planes(self) -> None:
        """Forget the volume and show an empty black view."""
        self._planes = None
        self._overlay_source = None
        self.image_item.clear()
        self.overlay_item.clear()
        self._set_image_visible(False)

    def _set_image_visible(self, visible: bool) -> None:
        for item in (self.image_item, self.overlay_item, self.h_line, self.v_line):
            item.setVisible(visible)
        for label in (*self.letter_labels.values(), self.slice_label):
            label.setVisible(visible)
        if not visible:
            self.swipe_line.setVisible(False)

    @property
    def n_slices(self) -> int:
        """Number of slices (0 without a volume)."""
        return 0 if self._planes is None else int(self._planes.shape[0])

    @property
    def slice_index(self) -> int:
        """The slice shown."""
        return self._slice

    @property
    def plane_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of a slice, (0, 0) without a volume."""
        return (0, 0) if self._planes is None else tuple(self._planes.shape[1:3])

    def set_slice(self, index: int) -> None:
        """Show slice ``index`` (clamped to the volume) and emit ``slice_changed`` if it moved."""
        if self._planes is None:
            return
        index = int(np.clip(index, 0, self.n_slices - 1))
        if index == self._slice:
            return
        self._slice = index
        self.image_item.setImage(self._planes[index], autoLevels=False, levels=self._levels)
        self._overlay_stale = True
        self.render_overlay()  # scrolling: the overlay follows in the same paint
        # Counted from 0, like the IJK readout and nibabel/numpy indices.
        self.slice_label.setText(f"{self._title} {index} of 0–{self.n_slices - 1}")
        self.slice_label.adjustSize()
        self.slice_changed.emit(index)

    def step_slice(self, steps: int) -> None:
        """Move ``steps`` slices (negative: backwards)."""
        self.set_slice(self._slice + steps)

    def set_levels(self, low: float, high: float) -> None:
        """Map ``low`` to black and ``high`` to white."""
        self._levels = (float(low), float(high))
        if self._planes is not None:
            self.image_item.setLevels(self._levels)

    @property
    def levels(self) -> tuple[float, float]:
        """Current display levels ``(low, high)``."""
        return self._levels

    def set_overlay_source(self, source: OverlaySource | None) -> None:
        """Install the callable that renders each slice's overlay, and redraw."""
        self._overlay_source = source
        self.refresh_overlay()

    def refresh_overlay(self) -> None:
        """Mark the overlay stale (after a mask or style change); it is rendered once, in the
        next event-loop turn, however many changes come before (or now by
        :meth:`render_overlay`)."""
        self._overlay_stale = True
        self._overlay_timer.start()

    def render_overlay(self) -> None:
        """Render the current slice's overlay now if it is stale."""
        if not self._overlay_stale:
            return
        self._overlay_stale = False
        self._overlay_timer.stop()
        rgba = None
        if self._overlay_source is not None and self._planes is not None:
            rgba = self._overlay_source(self._slice)
        if rgba is None:
            self.overlay_item.setVisible(False)
            return
        self.overlay_item.setImage(rgba, autoLevels=False, levels=None)
        self.overlay_item.setVisible(True)

    def overlay_rgba(self) -> np.ndarray | None:
        """The RGBA overlay now shown, or None (for tests and screenshots)."""
        self.render_overlay()
        if not self.overlay_item.isVisible():
            return None
        return self.overlay_item.image

    # --- crosshair, swipe line, zoom --------------------------------------------------------
    def set_crosshair(self, row: float, col: float) -> None:
        """Centre the crosshair on pixel ``(row, col)``."""
        self.h_line.setPos((row + 0.5) * self._pixel_mm[0])
        self.v_line.setPos((col + 0.5) * self._pixel_mm[1])

    def crosshair(self) -> tuple[float, float]:
        """The crosshair's pixel ``(row, col)``."""
        return (
            self.h_line.value() / self._pixel_mm[0] - 0.5,
            self.v_line.value() / self._pixel_mm[1] - 0.5,
        )

    def set_crosshair_visible(self, visible: bool) -> None:
        """Show or hide the crosshair lines."""
        self.h_line.setVisible(visible and self._planes is not None)
        self.v_line.setVisible(visible and self._planes is not None)

    def set_swipe_column(self, col: float | None) -> None:
        """Draw the swipe divider before column ``col``, or hide it with None."""
        if col is None or self._planes is None:
            self.swipe_line.setVisible(False)
            return
        self.swipe_line.setPos(col * self._pixel_mm[1])
        self.swipe_line.setVisible(True)

    def reset_zoom(self) -> None:
        """Fit the whole slice in the view."""
        if self._planes is not None:
            self.view_box.autoRange(padding=0.0)

    # --- input ------------------------------------------------------------------------------
    def _view_to_pixel(self, point: QPointF) -> tuple[float, float]:
        return point.y() / self._pixel_mm[0] - 0.5, point.x() / self._pixel_mm[1] - 0.5

    def _pick(self, view_point: QPointF) -> None:
        if self._planes is None:
            return
        row, col = self._view_to_pixel(view_point)
        rows, cols = self.plane_shape
        self.position_picked.emit(
            float(np.clip(round(row), 0, rows - 1)), float(np.clip(round(col), 0, cols - 1))
        )

    def _stroke(self, phase: str, view_point: QPointF) -> None:
        if self._planes is None:
            return
        row, col = self._view_to_pixel(view_point)
        rows, cols = self.plane_shape
        # A drag may leave the slice: the brush's centre stays on its edge.
        self.stroke.emit(
            phase, int(np.clip(round(row), 0, rows - 1)), int(np.clip(round(col), 0, cols - 1))
        )

    def _on_scene_mouse_moved(self, scene_pos: QPointF) -> None:
        if self._planes is None:
            return
        row, col = self._view_to_pixel(self.view_box.mapSceneToView(scene_pos))
        row, col = round(row), round(col)
        rows, cols = self.plane_shape
        if 0 <= row < rows and 0 <= col < cols:
            self.hovered.emit(row, col)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        step = 10 if event.modifiers() & Qt.KeyboardModifier.ShiftModifier else 1
        forward = (Qt.Key.Key_Up, Qt.Key.Key_Right, Qt.Key.Key_PageUp)
        backward = (Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_PageDown)
        if key in forward and self._planes is not None:
            self.step_slice(step)
        elif key in backward and self._planes is not None:
            self.step_slice(-step)
        elif key == Qt.Key.Key_Home:
            self.reset_zoom()
        else:
            event.ignore()  # number keys, O, ...: the owning viewer handles them
            return
        event.accept()

    # --- placement of the corner labels -----------------------------------------------------
    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._place_labels()

    def _place_labels(self) -> None:
        width, height = self.width(), self.height()
        margin = 4
        left, right = self.letter_labels["left"], self.letter_labels["right"]
        top, bottom = self.letter_labels["top"], self.letter_labels["bottom"]
        left.move(margin, (height - left.height()) // 2)
        right.move(width - right.width() - margin, (height - right.height()) // 2)
        top.move((width - top.width()) // 2, margin)
        bottom.move((width - bottom.width()) // 2, height - bottom.height() - margin)
        self.slice_label.move(margin, margin)
        self.maximize_button.move(width - self.maximize_button.width() - margin, margin)
        for widget in (*self.letter_labels.values(), self.slice_label, self.maximize_button):
            widget.raise_()

"""Axial, coronal and sagittal views of one image with a linked crosshair and label overlays.

The viewer's single source of truth for position is the cursor voxel ``(i, j, k)``: each
view shows the slice through it along its own slice axis and draws the crosshair at its
projection; scrolling a view moves the cursor along that view's axis. Geometry comes from
:mod:`core.display.planes` (radiological convention by default) and all overlay colours from
:mod:`core.display`, so this module only wires numpy results into :class:`SliceView` s.

Keys (while a view has focus): wheel / arrows / PgUp / PgDn = slice, number keys = window
presets (0 = the image's default window), O = overlay on/off, F = filled/outline,
Home = reset zoom, M = maximise/restore the focused view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QPixmap
from PySide6.QtWidgets import QGridLayout, QLabel, QSizePolicy, QStackedLayout, QWidget

from core.atomic_files import atomic_write
from core.display import (
    WINDOW_PRESETS,
    CursorInfo,
    LabelVolume,
    PlaneAxes,
    WindowPreset,
    composite_outline,
    cursor_info,
    default_window,
    difference_classes,
    difference_lut,
    format_window,
    image_presets,
    label_lut,
    natural_plane_axes,
    plane_axes,
    plane_to_voxel,
    plane_volume,
    prepare_labels,
    preset_for_key,
    render_label_overlay,
    voxel_to_plane,
    window_to_levels,
)
from core.io import Image
from gui.widgets.slice_view import SLICE_KEYS, SliceView

__all__ = ["OVERLAY_MODES", "OrthoViewer"]

#: Accepted by :meth:`OrthoViewer.set_overlay_mode`.
OVERLAY_MODES: tuple[str, ...] = ("prediction", "ground_truth", "both", "difference")

_SLOTS = ("axial", "coronal", "sagittal")
# Grid cell of each view (ITK-SNAP's arrangement); the fourth cell holds the readout.
_GRID = {"axial": (0, 0), "sagittal": (0, 1), "coronal": (1, 0)}

EMPTY_TEXT = "No image loaded.\nOpen an image (File > Open, Ctrl+O) or drop a file here."

_INFO_STYLE = (
    "QLabel { color: #d8d8d8; background: #101010; font-family: monospace; font-size: 12px;"
    " padding: 6px; }"
)


#: Keys and mouse of the views; the window presets are listed once, in the Overlay panel.
HELP_TEXT = (
    "Slices and IJK count from 0.\n"
    "0-9: window presets (listed in the Overlay panel)\n"
    "Wheel, arrows, PgUp/PgDn: slice   Ctrl+wheel: zoom\n"
    "Right drag or Ctrl+drag: window/level   Middle or Shift+drag: pan\n"
    "O: overlay on/off   F: filled/outline   Home: reset zoom\n"
    "Double-click or M: maximise view"
)


class OrthoViewer(QWidget):
    """Three linked orthogonal views (or one view for 2-D images) with overlays.

    Signals
    -------
    cursor_moved(object)
        A :class:`core.display.CursorInfo` for the voxel under the mouse or the crosshair.
    cursor_voxel_changed(object)
        The crosshair voxel ``(i, j, k)`` changed (click, drag, scroll or
        :meth:`set_cursor_voxel`).
    window_changed(float, float)
        New window ``(center, width)``.
    slice_changed(str, int)
        A view (``"axial"``, ``"coronal"``, ``"sagittal"``) now shows slice ``index``.
    overlay_visibility_changed(bool)
        The overlay was switched on or off (O key or :meth:`set_overlay_visible`).
    labels_changed()
        Names or colours were replaced (panels rebuild their label lists).
    presets_changed()
        A new image brought its own window presets (:attr:`presets`).
    """

    cursor_moved = Signal(object)
    cursor_voxel_changed = Signal(object)
    window_changed = Signal(float, float)
    slice_changed = Signal(str, int)
    overlay_visibility_changed = Signal(bool)
    labels_changed = Signal()
    overlay_style_changed = Signal()
    stroke = Signal(str, str, int, int)  # view, phase, row, col: a correction tool's stroke
    presets_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._image: Image | None = None
        self._axes: dict[str, PlaneAxes] = {}
        self._active: list[str] = []
        self._image_planes: dict[str, np.ndarray] = {}
        self._prediction: np.ndarray | None = None
        self._ground_truth: np.ndarray | None = None
        self._secondary: np.ndarray | None = None
        self._swipe_fraction: float | None = None
        self._names: list[str] = []
        self._truth_names: dict[int, str] = {}
        self._colors: list[tuple[int, int, int]] = []
        self._mode = "prediction"
        self._filled = True
        self._opacity = 0.5
        self._label_opacity: dict[int, float] = {}
        self._hidden: set[int] = set()
        self._overlay_visible = True
        self._difference_label: int | None = None
        self._max_label = 0
        self._lut = label_lut([])
        self._window = (0.5, 1.0)
        self._default_window = (0.5, 1.0)
        self._presets: tuple[WindowPreset, ...] = WINDOW_PRESETS
        self._key_view = "axial"  # the view keys act on when the viewer itself has focus
        self._convention = "radiological"
        self._cursor = (0, 0, 0)
        self._maximized: str | None = None

        self._stack = QStackedLayout(self)
        self._empty_label = QLabel(EMPTY_TEXT, self)
        self._empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty_label.setStyleSheet("QLabel { color: #9a9a9a; background: #000; }")
        self._stack.addWidget(self._empty_label)
        self.views_widget = QWidget(self)
        self.views_widget.setStyleSheet("background: #000;")
        grid = QGridLayout(self.views_widget)
        self._grid = grid
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        self.views: dict[str, SliceView] = {}
        for slot in _SLOTS:
            view = SliceView(slot.capitalize(), self.views_widget)
            view.slice_changed.connect(lambda index, s=slot: self._on_view_slice_changed(s, index))
            view.position_picked.connect(lambda r, c, s=slot: self._on_view_picked(s, r, c))
            view.hovered.connect(lambda r, c, s=slot: self._on_view_hovered(s, r, c))
            view.window_dragged.connect(self._on_view_window_dragged)
            view.maximize_requested.connect(lambda s=slot: self._toggle_maximized(s))
            view.stroke.connect(lambda phase, r, c, s=slot: self.stroke.emit(s, phase, r, c))
            self.views[slot] = view
            grid.addWidget(view, *_GRID[slot])
        self.info_label = QLabel(self.views_widget)
        self.info_label.setStyleSheet(_INFO_STYLE)
        self.info_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.info_label.setWordWrap(True)
        grid.addWidget(self.info_label, 1, 1)
        # Equal cells whatever the slice shapes or the readout's text length.
        self.info_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        for index in range(2):
            grid.setColumnStretch(index, 1)
            grid.setRowStretch(index, 1)
        # What lies under the mouse, in the corner of the view it is in (a status bar shows
        # the same through cursor_moved; this keeps it visible when a view is maximised).
        self.hover_label = QLabel(self.views_widget)
        self.hover_label.setStyleSheet(
            "QLabel { color: #e6e6e6; background: rgba(0, 0, 0, 150); font-size: 11px;"
            " padding: 1px 4px; }"
        )
        self.hover_label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hover_label.setWordWrap(True)
        self.hover_label.hide()
        self._stack.addWidget(self.views_widget)
        self.clear()

    # --- image ------------------------------------------------------------------------------
    @property
    def image(self) -> Image | None:
        """The image shown, or None."""
        return self._image

    def clear(self) -> None:
        """Drop the image and masks and show the empty-state text."""
        self._image = None
        self._prediction = self._ground_truth = self._secondary = None
        self._image_planes.clear()
        self._active = []
        self.hover_label.hide()
        for view in self.views.values():
            view.clear_planes()
        self._stack.setCurrentWidget(self._empty_label)

    def set_image(
        self,
        image: Image,
        *,
        window: tuple[float, float] | None = None,
        presets: tuple[WindowPreset, ...] | None = None,
    ) -> None:
        """Show ``image`` with its default window; masks of a previous image are dropped.

        Parameters
        ----------
        image : core.io.Image
            3-D (three views), 2-D or RGB natural image (one view).
        window : tuple of float, optional
            The image's default window ``(center, width)`` when the caller has it already
            (:func:`core.display.default_window` reads the whole volume: the workbench computes
            it once on its worker for every view of the image). Computed here otherwise.
        presets : tuple of WindowPreset, optional
            The number-key presets that fit the image (:func:`core.display.image_presets`,
            CT presets in HU for CT, percentiles and full range otherwise); computed here when
            not given.
        """
        if not isinstance(image, Image):
            raise ValueError(f"viewer expects a core.io.Image, got {type(image).__name__}")
        self._image = image
        self._prediction = self._ground_truth = self._secondary = None
        self._max_label = 0
        if window is None:
            window = default_window(image.array, dicom_window=image.window)
        self._default_window = (float(window[0]), float(window[1]))
        self._window = self._default_window
        if presets is None:
            presets = image_presets(image.array, modality=image.modality, natural=image.is_natural)
        self._presets = tuple(presets)
        self.presets_changed.emit()
        self._cursor = tuple(n // 2 for n in image.shape3)
        self._maximized = None
        self._stack.setCurrentWidget(self.views_widget)
        self._build_planes()
        self._update_info()
        self.window_changed.emit(*self._window)
        self.cursor_voxel_changed.emit(self._cursor)

    def _build_planes(self) -> None:
        image = self._image
        assert image is not None
        if image.is_natural:
            self._axes = {"axial": natural_plane_axes()}
            self._active = ["axial"]
        else:
            self._axes = {s: plane_axes(image.affine, s, self._convention) for s in _SLOTS}
            if image.ndim_spatial == 2:
                flat_axis = 2 if image.shape3[2] == 1 else int(np.argmin(image.shape3))
                self._active = [s for s in _SLOTS if self._axes[s].slice_axis == flat_axis]
            else:
                self._active = list(_SLOTS)
        low, high = window_to_levels(*self._window)
        self._image_planes = {}
        for slot, view in self.views.items():
            if slot not in self._active:
                view.clear_planes()
                view.setVisible(False)
                continue
            axes = self._axes[slot]
            planes = plane_volume(image.array, axes)
            self._image_planes[slot] = planes
            title = "Image" if axes.view == "natural" else slot.capitalize()
            view.set_levels(low, high)
            view.set_planes(
                planes,
                pixel_mm=(image.spacing[axes.row_axis], image.spacing[axes.col_axis]),
                letters=axes.letters,
                title=title,
                slice_index=self._cursor[axes.slice_axis],
            )
            view.set_overlay_source(lambda index, s=slot: self._render_overlay(s, index))
        self.info_label.setVisible(len(self._active) > 1)
        self._apply_maximized()
        self._place_crosshairs()

    @property
    def active_views(self) -> list[str]:
        """Names of the views in use (all three for volumes, ``["axial"]`` slot for 2-D)."""
        return list(self._active)

    def plane_axes(self, view: str) -> PlaneAxes:
        """The geometry of one active view."""
        return self._axes[view]

    # --- labels and masks -------------------------------------------------------------------
    def set_labels(self, names: Sequence[str], colors: Sequence[tuple[int, int, int]]) -> None:
        """Set label names and RGB colours (index 0 = background), e.g. from a ModelSpec."""
        if len(names) != len(colors):
            raise ValueError(f"got {len(names)} label names but {len(colors)} colours")
        self._names = list(names)
        self._colors = [tuple(int(c) for c in rgb) for rgb in colors]
        self._rebuild_lut()
        self.labels_changed.emit()

    @property
    def label_names(self) -> list[str]:
        """Label names by value."""
        return list(self._names)

    @property
    def label_colors(self) -> list[tuple[int, int, int]]:
        """Label RGB colours by value."""
        return list(self._colors)

    def conform_mask(self, mask: np.ndarray | LabelVolume, what: str = "mask") -> LabelVolume:
        """Validate a label volume against the image and store it the way slicing is cheap.

        A :class:`core.display.LabelVolume` that fits the image (made by
        :func:`core.display.prepare_labels` on a worker) is taken as it is: a shape and
        memory-order check, no pass over the voxels. A plain array goes through
        ``prepare_labels`` here, on the calling thread (several passes over the volume: fine for
        small images and tests, too slow for a CT on the GUI thread).

        Parameters
        ----------
        mask : numpy.ndarray or core.display.LabelVolume
            Integer (or boolean) labels of shape ``image.shape3``; ``(I, J)`` is accepted for
            a single-slice image.
        what : str
            Name used in error messages.

        Raises
        ------
        ValueError
            No image, wrong shape, non-integer dtype or negative labels.
        """
        if self._image is None:
            raise ValueError(f"cannot show a {what} before an image is set")
        if isinstance(mask, LabelVolume):
            if mask.fits(self._image):
                return mask
            mask = mask.array
        return prepare_labels(mask, self._image, what=what)

    def _check_mask(self, mask: np.ndarray | LabelVolume | None, what: str) -> np.ndarray | None:
        if mask is None:
            return None
        labels = self.conform_mask(mask, what)
        self._max_label = max(self._max_label, labels.max_label)
        return labels.array

    def set_prediction(self, mask: np.ndarray | LabelVolume | None) -> None:
        """Show a predicted label volume (shape ``image.shape3``), or remove it with None.

        Pass a :class:`core.display.LabelVolume` to skip every pass over the voxels; a plain
        array is converted by :meth:`conform_mask` (a uint8/uint16 copy in the image's memory
        order when it differs in either, so that scrolling stays cheap).
        """
        self._prediction = self._check_mask(mask, "prediction")
        self._rebuild_lut()

    def set_ground_truth(self, mask: np.ndarray | LabelVolume | None) -> None:
        """Show a ground-truth label volume (shape ``image.shape3``), or remove it with None."""
        self._ground_truth = self._check_mask(mask, "ground truth")
        self._rebuild_lut()

    def set_painting(self, painting: bool) -> None:
        """Turn a correction tool on or off: plain left drags then emit ``stroke``."""
        for view in self.views.values():
            view.painting = painting

    def refresh_masks(self) -> None:
        """Redraw the overlays after a mask shown here was changed in place (an edit)."""
        self._refresh_overlays()

    def set_ground_truth_names(self, names: dict[int, str] | None) -> None:
        """The ground truth's own label names (from its file), used to name its labels in the
        readout instead of the model's; None or empty: the model's names."""
        self._truth_names = dict(names or {})

    def prediction(self) -> np.ndarray | None:
        """The prediction shown (as stored: uint8/uint16 in the image's order), or None."""
        return self._prediction

    def ground_truth(self) -> np.ndarray | None:
        """The ground truth shown (as stored), or None."""
        return self._ground_truth

    def set_swipe(self, second: np.ndarray | LabelVolume | None, fraction: float | None) -> None:
        """Show ``second`` instead of the prediction right of a vertical divider.

        Parameters
        ----------
        second : numpy.ndarray, core.display.LabelVolume or None
            Another prediction (shape ``image.shape3``); None ends the swipe.
        fraction : float or None
            Divider position as a fraction of each view's width, in [0, 1].
        """
        self._secondary = self._check_mask(second, "second prediction")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"swipe position must lie in [0, 1], got {fraction}")
        self._swipe_fraction = None if self._secondary is None else fraction
        self._rebuild_lut()

    # --- overlay style ----------------------------------------------------------------------
    def set_overlay_mode(self, mode: str) -> None:
        """One of ``"prediction"``, ``"ground_truth"``, ``"both"``, ``"difference"``.

        ``"both"`` draws the prediction in the chosen style with the ground truth outlined on
        top; ``"difference"`` colours true positives, false positives, false negatives (and
        wrong labels) of the prediction against the ground truth.
        """
        if mode not in OVERLAY_MODES:
            raise ValueError(f"unknown overlay mode {mode!r}; expected one of {OVERLAY_MODES}")
        self._mode = mode
        self._refresh_overlays()
        self.overlay_style_changed.emit()

    @property
    def overlay_mode(self) -> str:
        """The overlay mode."""
        return self._mode

    def set_difference_label(self, label: int | None) -> None:
        """Restrict the difference overlay to one label, or None for every label."""
        self._difference_label = label
        self._refresh_overlays()

    def set_overlay_style(self, filled: bool) -> None:
        """Filled regions (True) or 4-neighbour outlines (False)."""
        self._filled = bool(filled)
        self._refresh_overlays()
        self.overlay_style_changed.emit()

    @property
    def overlay_filled(self) -> bool:
        """True when overlays are filled, False for outlines."""
        return self._filled

    def set_opacity(self, opacity: float) -> None:
        """Global overlay opacity in [0, 1]."""
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"overlay opacity must lie in [0, 1], got {opacity}")
        self._opacity = float(opacity)
        self._rebuild_lut()

    @property
    def opacity(self) -> float:
        """Global overlay opacity."""
        return self._opacity

    def set_label_opacity(self, label: int, opacity: float) -> None:
        """Opacity of one label in [0, 1], multiplied by the global opacity."""
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"label {label} opacity must lie in [0, 1], got {opacity}")
        self._label_opacity[int(label)] = float(opacity)
        self._rebuild_lut()

    def label_opacity(self, label: int) -> float:
        """Opacity of one label (before the global opacity)."""
        return self._label_opacity.get(int(label), 1.0)

    def set_label_visible(self, label: int, visible: bool) -> None:
        """Show or hide one label in the overlay."""
        if visible:
            self._hidden.discard(int(label))
        else:
            self._hidden.add(int(label))
        self._rebuild_lut()

    def is_label_visible(self, label: int) -> bool:
        """Whether a label is drawn."""
        return int(label) not in self._hidden

    def set_overlay_visible(self, visible: bool) -> None:
        """Switch the whole overlay on or off (the O key)."""
        if visible == self._overlay_visible:
            return
        self._overlay_visible = bool(visible)
        self._refresh_overlays()
        self.overlay_visibility_changed.emit(self._overlay_visible)

    @property
    def overlay_visible(self) -> bool:
        """Whether overlays are drawn."""
        return self._overlay_visible

    def _rebuild_lut(self) -> None:
        self._lut = label_lut(
            self._colors,
            n_labels=self._max_label + 1,
            opacity=self._opacity,
            label_opacity=self._label_opacity,
            hidden=self._hidden,
        )
        self._refresh_overlays()

    def _refresh_overlays(self) -> None:
        for slot in self._active:
            self.views[slot].refresh_overlay()
            self.views[slot].set_swipe_column(self._swipe_column(slot))

    def _swipe_column(self, slot: str) -> int | None:
        if self._secondary is None or self._swipe_fraction is None or not self._overlay_visible:
            return None
        return round(self._swipe_fraction * self.views[slot].plane_shape[1])

    def _mask_slice(self, mask: np.ndarray | None, slot: str, index: int) -> np.ndarray | None:
        if mask is None:
            return None
        return plane_volume(mask, self._axes[slot])[index]

    def _render_masks(
        self, prediction: np.ndarray | None, truth: np.ndarray | None
    ) -> np.ndarray | None:
        if self._mode == "prediction":
            return None if prediction is None else self._render(prediction, self._filled)
        if self._mode == "ground_truth":
            return None if truth is None else self._render(truth, self._filled)
        if self._mode == "both":
            if prediction is None and truth is None:
                return None
            if prediction is None:
                return self._render(truth, False)
            rgba = self._render(prediction, self._filled)
            if truth is not None:
                composite_outline(rgba, self._render(truth, False))
            return rgba
        if prediction is None or truth is None:
            return None
        classes = difference_classes(prediction, truth, label=self._difference_label)
        return render_label_overlay(classes, difference_lut(opacity=self._opacity), filled=True)

    def _render(self, labels: np.ndarray, filled: bool) -> np.ndarray:
        return render_label_overlay(labels, self._lut, filled=filled)

    def _render_overlay(self, slot: str, index: int) -> np.ndarray | None:
        """The RGBA overlay of one slice of one view (called by the SliceView on scroll)."""
        if not self._overlay_visible or self._image is None:
            return None
        truth = self._mask_slice(self._ground_truth, slot, index)
        rgba = self._render_masks(self._mask_slice(self._prediction, slot, index), truth)
        split = self._swipe_column(slot)
        if split is None:
            return rgba
        second = self._render_masks(self._mask_slice(self._secondary, slot, index), truth)
        rows, cols = self.views[slot].plane_shape
        if rgba is None:
            rgba = np.zeros((rows, cols, 4), dtype=np.uint8)
        if second is None:
            rgba[:, split:] = 0
        else:
            rgba[:, split:] = second[:, split:]
        return rgba

    # --- window/level -----------------------------------------------------------------------
    def set_window(self, center: float, width: float) -> None:
        """Set the window ``(center, width)``; emits ``window_changed`` when it changes."""
        low, high = window_to_levels(center, width)
        if (float(center), float(width)) == self._window:
            return
        self._window = (float(center), float(width))
        for slot in self._active:
            self.views[slot].set_levels(low, high)
        self._update_info()
        self.window_changed.emit(*self._window)

    @property
    def window(self) -> tuple[float, float]:
        """The window ``(center, width)``."""
        return self._window

    @property
    def presets(self) -> tuple[WindowPreset, ...]:
        """The number-key window presets of the image shown (key 0, the default, not listed)."""
        return self._presets

    @property
    def default_window_setting(self) -> tuple[float, float]:
        """The image's default window ``(center, width)``: what key 0 applies."""
        return self._default_window

    def apply_preset(self, key: str) -> bool:
        """Apply the window preset bound to number ``key`` (``"0"``: default window).

        Returns
        -------
        bool
            False when no preset is bound to ``key``.
        """
        if key == "0":
            self.set_window(*self._default_window)
            return True
        preset = preset_for_key(key, self._presets)
        if preset is None:
            return False
        self.set_window(preset.center, preset.width)
        return True

    def _on_view_window_dragged(self, dx: float, dy: float) -> None:
        center, width = self._window
        # One screen pixel moves the window by 1/256 of its width, so a drag across a view
        # covers a useful range on any modality; right widens, down raises the level.
        step = max(width, 1e-6) / 256.0
        self.set_window(center + dy * step, max(width + dx * step, 1e-6))

    # --- convention -------------------------------------------------------------------------
    def set_convention(self, convention: str) -> None:
        """``"radiological"`` (patient right on screen left, default) or ``"neurological"``."""
        if convention not in ("radiological", "neurological"):
            raise ValueError(
                f"unknown convention {convention!r}; expected 'radiological' or 'neurological'"
            )
        self._convention = convention
        if self._image is not None:
            self._build_planes()

    @property
    def convention(self) -> str:
        """The display convention."""
        return self._convention

    # --- cursor -----------------------------------------------------------------------------
    @property
    def cursor_voxel(self) -> tuple[int, int, int]:
        """The crosshair voxel ``(i, j, k)``."""
        return self._cursor

    def set_cursor_voxel(self, ijk: Sequence[int]) -> None:
        """Move the crosshair to voxel ``ijk`` (clamped); every view follows."""
        if self._image is None:
            return
        shape3 = self._image.shape3
        cursor = tuple(int(np.clip(int(v), 0, n - 1)) for v, n in zip(ijk, shape3, strict=True))
        if cursor == self._cursor:
            return
        self._cursor = cursor
        for slot in self._active:
            self.views[slot].set_slice(cursor[self._axes[slot].slice_axis])
        self._place_crosshairs()
        self._update_info()
        self.cursor_voxel_changed.emit(self._cursor)

    def slice_index(self, view: str) -> int:
        """Slice index shown by ``view``."""
        return self.views[view].slice_index

    def set_slice(self, view: str, index: int) -> None:
        """Show slice ``index`` in ``view`` (moves the cursor along that view's axis)."""
        self.views[view].set_slice(index)

    def _on_view_slice_changed(self, slot: str, index: int) -> None:
        if self._image is not None and slot in self._active:
            cursor = list(self._cursor)
            cursor[self._axes[slot].slice_axis] = index
            if tuple(cursor) != self._cursor:
                self._cursor = tuple(cursor)
                self._place_crosshairs()
                self._update_info()
                self.cursor_voxel_changed.emit(self._cursor)
        self.slice_changed.emit(slot, index)

    def _on_view_picked(self, slot: str, row: float, col: float) -> None:
        if self._image is None:
            return
        self._key_view = slot
        view = self.views[slot]
        ijk = plane_to_voxel(self._axes[slot], self._image.shape3, view.slice_index, row, col)
        self.set_cursor_voxel(ijk)
        self.cursor_moved.emit(self._cursor_info(self._cursor, slot))

    def _on_view_hovered(self, slot: str, row: int, col: int) -> None:
        if self._image is None:
            return
        view = self.views[slot]
        ijk = plane_to_voxel(self._axes[slot], self._image.shape3, view.slice_index, row, col)
        info = self._cursor_info(ijk, slot)
        self._show_hover_text(view, info)
        self.cursor_moved.emit(info)

    def _show_hover_text(self, view: SliceView, info: CursorInfo) -> None:
        self.hover_label.setMaximumWidth(max(view.width() - 8, 60))
        self.hover_label.setText(info.text())
        self.hover_label.adjustSize()
        corner = view.mapTo(self.views_widget, view.rect().bottomLeft())
        self.hover_label.move(corner.x() + 4, corner.y() - self.hover_label.height() - 22)
        self.hover_label.show()
        self.hover_label.raise_()

    def cursor_info_at(self, ijk: Sequence[int], view: str = "") -> CursorInfo:
        """The readout for voxel ``ijk`` (what ``cursor_moved`` carries)."""
        return self._cursor_info(ijk, view)

    def _cursor_info(self, ijk: Sequence[int], view: str) -> CursorInfo:
        assert self._image is not None
        return cursor_info(
            self._image,
            tuple(int(v) for v in ijk),
            ground_truth=self._ground_truth,
            prediction=self._prediction,
            names=self._names,
            view=view,
            ground_truth_names=self._truth_names,
        )

    def _place_crosshairs(self) -> None:
        if self._image is None:
            return
        for slot in self._active:
            _, row, col = voxel_to_plane(self._axes[slot], self._image.shape3, self._cursor)
            self.views[slot].set_crosshair(row, col)
            self.views[slot].set_crosshair_visible(len(self._active) > 1)

    def _update_info(self) -> None:
        if self._image is None or len(self._active) < 2:
            return
        center, width = self._window
        info = self._cursor_info(self._cursor, "")
        self.info_label.setText(
            f"Crosshair  {info.text().replace('   ', chr(10) + '           ')}\n"
            f"Window     {format_window(center, width)}\n"
            f"Orientation {self._image.orientation}  ({self._convention})\n\n" + HELP_TEXT
        )

    # --- maximise ---------------------------------------------------------------------------
    def maximize_view(self, view: str | None) -> None:
        """Show only ``view`` (None: all views again)."""
        if view is not None and view not in self._active:
            raise ValueError(f"cannot maximise {view!r}; active views are {self._active}")
        self._maximized = view
        self._apply_maximized()

    @property
    def maximized_view(self) -> str | None:
        """The maximised view, or None."""
        return self._maximized

    def _toggle_maximized(self, slot: str) -> None:
        if len(self._active) < 2:
            return
        self.maximize_view(None if self._maximized == slot else slot)

    def _apply_maximized(self) -> None:
        rows_used, cols_used = set(), set()
        for slot in _SLOTS:
            shown = slot in self._active and self._maximized in (None, slot)
            self.views[slot].setVisible(shown)
            if shown:
                rows_used.add(_GRID[slot][0])
                cols_used.add(_GRID[slot][1])
        info_shown = len(self._active) > 1 and self._maximized is None
        self.info_label.setVisible(info_shown)
        if info_shown:
            rows_used.add(1)
            cols_used.add(1)
        # A grid row or column with no visible cell must not keep its share of the space, or a
        # single (maximised or 2-D) view would fill only one quadrant.
        for index in range(2):
            self._grid.setRowStretch(index, 1 if index in rows_used else 0)
            self._grid.setColumnStretch(index, 1 if index in cols_used else 0)

    def reset_zoom(self) -> None:
        """Fit every view's slice."""
        for slot in self._active:
            self.views[slot].reset_zoom()

    # --- keys -------------------------------------------------------------------------------
    def focus_active_view(self) -> None:
        """Give the keyboard to the view keys act on (the last one used, else the first), so
        slice, preset and overlay keys work without a click first."""
        if not self._active:
            return
        slot = self._key_view if self._key_view in self._active else self._active[0]
        self.views[slot].setFocus(Qt.FocusReason.OtherFocusReason)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        text = event.text()
        key = event.key()
        focused = next((s for s in self._active if self.views[s].hasFocus()), None)
        if focused is not None:
            self._key_view = focused
        if text.isdigit() and self._image is not None and self.apply_preset(text):
            event.accept()
        elif focused is None and self._active and key in SLICE_KEYS:
            # The viewer itself has the focus (not one view): the slice keys go to the view
            # used last.
            slot = self._key_view if self._key_view in self._active else self._active[0]
            self.views[slot].keyPressEvent(event)
        elif key == Qt.Key.Key_O:
            self.set_overlay_visible(not self._overlay_visible)
            event.accept()
        elif key == Qt.Key.Key_F:
            self.set_overlay_style(not self._filled)
            event.accept()
        elif key == Qt.Key.Key_M:
            focused = next((s for s in self._active if self.views[s].hasFocus()), None)
            if focused is not None:
                self._toggle_maximized(focused)
            event.accept()
        else:
            super().keyPressEvent(event)

    # --- screenshots ------------------------------------------------------------------------
    def grab_views(self) -> QPixmap:
        """Render the visible views (and readout) to a pixmap."""
        for slot in self._active:
            self.views[slot].render_overlay()  # a change in this very slot is not drawn yet
        return self.views_widget.grab()

    def save_screenshot(self, path: str | Path) -> None:
        """Save :meth:`grab_views` to ``path`` (format from the suffix, e.g. ``.png``).

        Raises
        ------
        ValueError
            When nothing is shown or the file cannot be written.
        """
        save_pixmap(self.grab_views() if self._image is not None else None, path)


def save_pixmap(pixmap: QPixmap | None, path: str | Path) -> None:
    """Write a screenshot, raising ValueError naming the file when that fails."""
    if pixmap is None:
        raise ValueError(f"cannot save a screenshot to {path}: no image is shown")

    def write(temp: Path) -> None:
        if not pixmap.save(str(temp)):
            raise ValueError(
                f"could not write the screenshot {path}: unknown image suffix or unwritable folder"
            )

    # Through a temporary file like every other output: a FIFO or device there is refused and a
    # failed save never leaves half a picture.
    atomic_write(Path(path), write, suffix=Path(path).suffix)

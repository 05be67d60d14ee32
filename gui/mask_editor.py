"""Corrections on the viewer: brush, erase, fill and delete-component strokes, each one Undo step.

The first stroke on a result makes its "corrected" row: a copy of the result's mask under the key
``"<variant> + corrected"``; every stroke edits that copy in place (the views share it) and
refreshes the row's readouts, whose Dice and volume are measured against the model's mask, so
the table shows how much the reviewer changed. The voxel work is :mod:`core.review.edits`; this
module only turns the viewer's pointer strokes into those calls and puts each finished stroke on
the window's QUndoStack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand

from core.display import LabelVolume, prepare_labels
from core.display.planes import plane_to_voxel
from core.review import Edit, brush, delete_component, fill_region
from core.review.mask_result import joint_counts, result_from_joint, update_joint
from gui.session import ResultEntry

if TYPE_CHECKING:
    from gui.workbench_window import WorkbenchWindow

__all__ = ["CORRECTED", "TOOLS", "MaskEditor"]

#: The decision name of corrected rows.
CORRECTED = "corrected"
#: Tools, "navigate" first (the pointer moves the crosshair; no editing).
TOOLS = ("navigate", "brush", "erase", "fill", "delete")
_TOOL_TITLES = {
    "brush": "Paint",
    "erase": "Erase",
    "fill": "Fill",
    "delete": "Delete component",
}


class MaskEditor(QObject):
    """Applies correction strokes from ``window.viewer`` to the current result's corrected copy.

    Signals
    -------
    corrected(str)
        The corrected row ``key`` changed (a stroke ended, or was undone or redone).
    refused(str)
        A stroke could not apply, in words (a fill of an open region, no result to correct).
    """

    corrected = Signal(str)
    refused = Signal(str)

    def __init__(self, window: WorkbenchWindow) -> None:
        super().__init__(window)
        self._window = window
        self.tool = "navigate"
        self.radius_mm = 3.0
        self.label = 1
        self._sources: dict[str, np.ndarray] = {}  # corrected key -> the model's mask
        # corrected key -> joint counts (corrected label, model label), kept up to date by edits
        self._joints: dict[str, np.ndarray] = {}
        self._stroke: tuple[ResultEntry, str, list[Edit]] | None = None
        self._last_point: tuple[int, int] | None = None
        window.viewer.stroke.connect(self._on_stroke)
        window.session.image_changed.connect(lambda _image: self._forget())

    def _forget(self) -> None:
        self._sources.clear()
        self._joints.clear()

    # --- settings ---------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        """Choose a tool from :data:`TOOLS`; "navigate" gives the pointer back to the crosshair."""
        if tool not in TOOLS:
            raise ValueError(f"unknown correction tool {tool!r}")
        self.tool = tool
        self._window.viewer.set_painting(tool != "navigate")

    # --- corrected rows ---------------------------------------------------------------------
    def model_mask(self, key: str) -> np.ndarray | None:
        """The model's mask a corrected row started from, or None for other rows."""
        return self._sources.get(key)

    def start_correction(self, entry: ResultEntry, mask: np.ndarray | None = None) -> ResultEntry:
        """The corrected row of ``entry``, made now as a copy of its mask (or of ``mask``).

        Parameters
        ----------
        entry : ResultEntry
            The model's result.
        mask : numpy.ndarray, optional
            A saved correction to start from instead of the model's mask (resuming a review).
        """
        key = f"{entry.variant} + {CORRECTED}"
        existing = self._window.session.results.get(key)
        if existing is not None and key in self._sources and mask is None:
            return existing
        image = self._window.session.image
        start = entry.labels.array if mask is None else mask
        labels = prepare_labels(np.array(start, copy=True), image, what="corrected mask")
        model = entry.labels.array
        self._sources[key] = model
        n_classes = max(
            len(self._window.viewer.label_names),
            int(labels.array.max(initial=0)) + 1,
            int(model.max(initial=0)) + 1,
        )
        self._joints[key] = joint_counts(labels.array, model, n_classes)  # one pass, then edits
        return self._update_row(entry.variant, key, labels.array)

    def _update_row(self, variant: str, key: str, array: np.ndarray) -> ResultEntry:
        window = self._window
        image = window.session.image
        joint = self._joints[key]
        result = result_from_joint(
            joint,
            mask=array,
            spacing=image.spacing,
            class_names=window.viewer.label_names,
            model_name=variant,
            decision=CORRECTED,
            compared=True,
            natural=image.is_natural,
        )
        present = np.nonzero(joint.sum(axis=1))[0]
        labels = LabelVolume(array, int(present.max(initial=0)))
        entry = window.session.add_result(variant, result, labels)
        if window.current_key == key:
            window.viewer.set_prediction(labels)
        return entry

    def _count_edit(self, key: str, edit: Edit, *, undo: bool) -> None:
        """Move an edit's voxels in the joint counts of ``key`` (a pass-free readout update)."""
        joint = self._joints.get(key)
        if joint is None:
            return
        needed = int(max(edit.before.max(initial=0), edit.after.max(initial=0))) + 1
        if needed > joint.shape[0]:  # a label past the table: widen it
            wider = np.zeros((needed, needed), joint.dtype)
            wider[: joint.shape[0], : joint.shape[1]] = joint
            self._joints[key] = joint = wider
        update_joint(joint, edit, self._sources[key], undo=undo)

    def _changed(self, key: str, array: np.ndarray) -> None:
        """Readouts and views after the corrected mask ``key`` changed in place."""
        entry = self._window.session.results.get(key)
        if entry is not None and entry.labels.array is array:
            self._update_row(entry.variant, key, array)
        self._window.viewer.refresh_masks()
        self.corrected.emit(key)

    def _target(self) -> ResultEntry | None:
        window = self._window
        entry = window.session.results.get(window.current_key or "")
        if entry is None:
            self.refused.emit("Select a result row (or run a segmentation) to correct its mask.")
            return None
        if entry.result.decision == CORRECTED and entry.key in self._sources:
            return entry
        corrected = self.start_correction(entry)
        window.show_result(corrected.key)
        return corrected

    # --- strokes ----------------------------------------------------------------------------
    def _on_stroke(self, view: str, phase: str, row: int, col: int) -> None:
        if self.tool == "navigate":
            return
        if phase == "press":
            entry = self._target()
            if entry is None:
                return
            self._stroke = (entry, view, [])
            self._last_point = None
            self._apply(row, col)
        elif self._stroke is not None and phase == "move":
            if self.tool in ("brush", "erase"):
                self._apply(row, col)
        elif self._stroke is not None and phase == "release":
            self._finish()

    def _apply(self, row: int, col: int) -> None:
        entry, view, edits = self._stroke
        viewer = self._window.viewer
        mask = entry.labels.array
        axes = viewer.plane_axes(view)
        index = viewer.slice_index(view)
        spacing = self._window.session.image.spacing
        try:
            if self.tool in ("brush", "erase"):
                pixel_mm = (spacing[axes.row_axis], spacing[axes.col_axis])
                for point in self._path_to(row, col, pixel_mm):
                    edits.append(
                        brush(
                            mask,
                            axes,
                            index,
                            point,
                            radius_mm=self.radius_mm,
                            pixel_mm=pixel_mm,
                            label=self.label,
                            erase=self.tool == "erase",
                        )
                    )
            elif self.tool == "fill":
                edits.append(fill_region(mask, axes, index, (row, col), label=self.label))
            elif self.tool == "delete":
                ijk = plane_to_voxel(axes, mask.shape, index, row, col)
                edits.append(delete_component(mask, tuple(int(v) for v in ijk)))
        except ValueError as error:
            self.refused.emit(str(error))
        viewer.refresh_masks()

    def _path_to(self, row: int, col: int, pixel_mm: tuple[float, float]) -> list[tuple[int, int]]:
        """Dab centres from the last one to ``(row, col)``, close enough to leave no gap."""
        last = self._last_point
        self._last_point = (row, col)
        if last is None or last == (row, col):
            return [(row, col)]
        distance_mm = np.hypot((row - last[0]) * pixel_mm[0], (col - last[1]) * pixel_mm[1])
        steps = max(1, int(np.ceil(distance_mm / max(self.radius_mm / 2, min(pixel_mm) / 2))))
        return [
            (round(last[0] + (row - last[0]) * t), round(last[1] + (col - last[1]) * t))
            for t in np.linspace(0, 1, steps + 1)[1:]
        ]

    def _finish(self) -> None:
        entry, _view, edits = self._stroke
        self._stroke = None
        mask = entry.labels.array
        edit = Edit.merged(edits, mask)
        if edit.count == 0:
            return
        title = f"{_TOOL_TITLES[self.tool]} {edit.count} voxels"
        self._window.undo_stack.push(_StrokeCommand(self, entry.key, mask, edit, title))


class _StrokeCommand(QUndoCommand):
    """One finished stroke: already applied when pushed; undo and redo replay its voxels."""

    def __init__(self, editor: MaskEditor, key: str, mask: np.ndarray, edit: Edit, text: str):
        super().__init__(text)
        self._editor = editor
        self._key = key
        self._mask = mask
        self._edit = edit
        self._done = True  # the stroke changed the mask as it was drawn

    def redo(self) -> None:
        if not self._done:
            self._edit.apply(self._mask)
        self._done = False
        self._editor._count_edit(self._key, self._edit, undo=False)
        self._editor._changed(self._key, self._mask)

    def undo(self) -> None:
        self._edit.revert(self._mask)
        self._editor._count_edit(self._key, self._edit, undo=True)
        self._editor._changed(self._key, self._mask)

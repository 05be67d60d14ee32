"""The readout under the mouse: voxel index, world position, intensity and label names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.io.image import Image

__all__ = ["CursorInfo", "cursor_info"]


@dataclass(frozen=True)
class CursorInfo:
    """What lies under the cursor, for a status bar.

    Parameters
    ----------
    ijk : tuple of int
        Voxel index in the image's own voxel order.
    world : tuple of float
        RAS+ world position of the voxel centre in mm (``affine @ ijk``).
    intensity : float or tuple of float
        Image value there (a tuple of 3 for RGB).
    ground_truth_label, prediction_label : int or None
        Label values there, None when that mask is not loaded.
    ground_truth_name, prediction_name : str or None
        Their names from the label table (``"label N"`` past its end).
    view : str
        The view the cursor is in (``"axial"``, ...), or ``""``.
    """

    ijk: tuple[int, int, int]
    world: tuple[float, float, float]
    intensity: float | tuple[float, ...]
    ground_truth_label: int | None = None
    ground_truth_name: str | None = None
    prediction_label: int | None = None
    prediction_name: str | None = None
    view: str = ""

    def text(self) -> str:
        """One line for a status bar."""
        i, j, k = self.ijk
        x, y, z = self.world
        if isinstance(self.intensity, tuple):
            value = "(" + ", ".join(f"{v:g}" for v in self.intensity) + ")"
        else:
            value = f"{self.intensity:g}"
        parts = [f"IJK ({i}, {j}, {k})", f"RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm", f"value {value}"]
        if self.ground_truth_label is not None:
            parts.append(f"GT: {self.ground_truth_name}")
        if self.prediction_label is not None:
            parts.append(f"Pred: {self.prediction_name}")
        return "   ".join(parts)


def _label_name(label: int, names: Sequence[str]) -> str:
    if 0 <= label < len(names):
        return names[label]
    return "background" if label == 0 else f"label {label}"


def cursor_info(
    image: Image,
    ijk: tuple[int, int, int],
    *,
    ground_truth: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    names: Sequence[str] = (),
    view: str = "",
    ground_truth_names: Mapping[int, str] | None = None,
) -> CursorInfo:
    """Collect the readout for one voxel.

    Parameters
    ----------
    image : core.io.Image
    ijk : tuple of int
        Voxel index; must lie inside ``image.shape3``.
    ground_truth, prediction : numpy.ndarray or None
        Label volumes of shape ``image.shape3``.
    names : sequence of str
        Label names indexed by label value (the model's).
    view : str
        Passed through to :attr:`CursorInfo.view`.
    ground_truth_names : mapping of int to str, optional
        The ground truth's own names by label value, when its file has them: they name the
        ground-truth label instead of ``names`` (the same value may mean another structure).

    Returns
    -------
    CursorInfo
    """
    index = tuple(int(v) for v in ijk)
    if len(index) != 3 or not all(0 <= v < n for v, n in zip(index, image.shape3, strict=True)):
        raise ValueError(f"voxel index {ijk} lies outside the image of shape {image.shape3}")
    world = tuple(float(v) for v in image.voxel_to_world(index))
    value = image.array[index]
    intensity: float | tuple[float, ...]
    if np.ndim(value):
        intensity = tuple(float(v) for v in value)
    else:
        intensity = float(value)
    gt_label = None if ground_truth is None else int(ground_truth[index])
    pred_label = None if prediction is None else int(prediction[index])
    return CursorInfo(
        ijk=index,
        world=world,
        intensity=intensity,
        ground_truth_label=gt_label,
        ground_truth_name=None
        if gt_label is None
        else (ground_truth_names or {}).get(gt_label) or _label_name(gt_label, names),
        prediction_label=pred_label,
        prediction_name=None if pred_label is None else _label_name(pred_label, names),
        view=view,
    )

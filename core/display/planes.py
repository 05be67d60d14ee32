"""The three orthogonal display planes of a volume, their orientation letters, and index maps.

Each plane is shown as a 2-D array whose rows run top to bottom and columns left to right on
screen. Which voxel axis feeds the rows and columns, and whether it is flipped, follows from
the affine's closest RAS+ axes (:func:`core.io.geometry.axis_codes`, the same letters as
``Image.orientation``), so that:

- axial: anterior at the top; coronal and sagittal: superior at the top;
- radiological convention: the patient's right on the screen's left (axial, coronal);
  neurological: the patient's left on the screen's left;
- sagittal: anterior on the screen's left in both conventions.

The slice axis is never flipped: a plane's slice index is the voxel index along that axis,
so the slice number shown matches the IJK readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.io.geometry import axis_codes

__all__ = [
    "VIEW_NAMES",
    "PlaneAxes",
    "natural_plane_axes",
    "plane_axes",
    "plane_to_voxel",
    "plane_volume",
    "voxel_to_plane",
]

VIEW_NAMES: tuple[str, ...] = ("axial", "coronal", "sagittal")

_POSITIVE_LETTERS = "RAS"
_NEGATIVE_LETTERS = "LPI"

# Per view: (slice RAS axis, (row RAS axis, direction rows grow towards),
# (column RAS axis, direction columns grow towards in the radiological convention)).
_VIEW_LAYOUT: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (1, -1), (0, -1)),
    "coronal": (1, (2, -1), (0, -1)),
    "sagittal": (0, (2, -1), (1, -1)),
}


@dataclass(frozen=True)
class PlaneAxes:
    """How one display plane is cut from a voxel array.

    Parameters
    ----------
    view : str
        ``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"natural"`` (2-D photographs).
    slice_axis, row_axis, col_axis : int
        Voxel axes (0 = i, 1 = j, 2 = k) feeding the slice index, screen rows (top to bottom)
        and screen columns (left to right).
    row_flip, col_flip : bool
        True when screen row/column 0 is the last voxel along that axis.
    letters : tuple of str
        Orientation letters at the (left, right, top, bottom) edges; empty strings for
        natural images.
    """

    view: str
    slice_axis: int
    row_axis: int
    col_axis: int
    row_flip: bool
    col_flip: bool
    letters: tuple[str, str, str, str]

    def __post_init__(self) -> None:
        if sorted((self.slice_axis, self.row_axis, self.col_axis)) != [0, 1, 2]:
            raise ValueError(
                f"plane axes must be a permutation of 0, 1, 2, got "
                f"{(self.slice_axis, self.row_axis, self.col_axis)}"
            )


def _letter(ras_axis: int, sign: int) -> str:
    return (_POSITIVE_LETTERS if sign > 0 else _NEGATIVE_LETTERS)[ras_axis]


def plane_axes(affine: np.ndarray, view: str, convention: str = "radiological") -> PlaneAxes:
    """Work out how to cut and orient one view of a volume with the given affine.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 voxel-to-RAS+ matrix.
    view : {'axial', 'coronal', 'sagittal'}
        The plane.
    convention : {'radiological', 'neurological'}
        Whether the patient's right is on the screen's left (radiological) or right.

    Returns
    -------
    PlaneAxes
    """
    if view not in _VIEW_LAYOUT:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEW_NAMES)}")
    if convention not in ("radiological", "neurological"):
        raise ValueError(
            f"unknown display convention {convention!r}; expected 'radiological' or 'neurological'"
        )
    codes = axis_codes(affine)
    if None in codes:
        raise ValueError("affine is degenerate: a voxel axis has no world direction")
    # For each RAS axis: (voxel axis that runs along it, +1 if the voxel index grows towards
    # R/A/S, -1 if towards L/P/I).
    voxel_along = {}
    for voxel_axis, code in enumerate(codes):
        if code in _POSITIVE_LETTERS:
            voxel_along[_POSITIVE_LETTERS.index(code)] = (voxel_axis, 1)
        else:
            voxel_along[_NEGATIVE_LETTERS.index(code)] = (voxel_axis, -1)
    slice_ras, (row_ras, row_sign), (col_ras, col_sign) = _VIEW_LAYOUT[view]
    if convention == "neurological" and col_ras == 0:
        col_sign = -col_sign
    row_axis, row_voxel_sign = voxel_along[row_ras]
    col_axis, col_voxel_sign = voxel_along[col_ras]
    letters = (
        _letter(col_ras, -col_sign),
        _letter(col_ras, col_sign),
        _letter(row_ras, -row_sign),
        _letter(row_ras, row_sign),
    )
    return PlaneAxes(
        view=view,
        slice_axis=voxel_along[slice_ras][0],
        row_axis=row_axis,
        col_axis=col_axis,
        row_flip=row_voxel_sign != row_sign,
        col_flip=col_voxel_sign != col_sign,
        letters=letters,
    )


def natural_plane_axes() -> PlaneAxes:
    """The single plane of a natural 2-D image: rows = i, columns = j, no flips, no letters."""
    return PlaneAxes("natural", 2, 0, 1, False, False, ("", "", "", ""))


def plane_volume(array: np.ndarray, axes: PlaneAxes) -> np.ndarray:
    """Rearrange a voxel array so that ``result[s]`` is the screen image of slice ``s``.

    Parameters
    ----------
    array : numpy.ndarray
        ``(I, J, K)`` or ``(I, J, K, C)`` voxels.
    axes : PlaneAxes

    Returns
    -------
    numpy.ndarray
        ``(slices, rows, cols[, C])``, a view of ``array`` (no copy): scrolling only slices it.
    """
    if array.ndim not in (3, 4):
        raise ValueError(f"volume must be (I, J, K) or (I, J, K, C), got shape {array.shape}")
    order = (axes.slice_axis, axes.row_axis, axes.col_axis) + tuple(range(3, array.ndim))
    view = array.transpose(order)
    if axes.row_flip:
        view = view[:, ::-1]
    if axes.col_flip:
        view = view[:, :, ::-1]
    return view


def voxel_to_plane(
    axes: PlaneAxes, shape3: tuple[int, int, int], ijk: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Map voxel indices to ``(slice, row, col)`` of a plane (fractional indices allowed)."""
    row = ijk[axes.row_axis]
    col = ijk[axes.col_axis]
    if axes.row_flip:
        row = shape3[axes.row_axis] - 1 - row
    if axes.col_flip:
        col = shape3[axes.col_axis] - 1 - col
    return ijk[axes.slice_axis], row, col


def plane_to_voxel(
    axes: PlaneAxes, shape3: tuple[int, int, int], slice_index: float, row: float, col: float
) -> tuple[float, float, float]:
    """Map ``(slice, row, col)`` of a plane back to voxel indices ``(i, j, k)``."""
    if axes.row_flip:
        row = shape3[axes.row_axis] - 1 - row
    if axes.col_flip:
        col = shape3[axes.col_axis] - 1 - col
    ijk = [0.0, 0.0, 0.0]
    ijk[axes.slice_axis] = slice_index
    ijk[axes.row_axis] = row
    ijk[axes.col_axis] = col
    return tuple(ijk)

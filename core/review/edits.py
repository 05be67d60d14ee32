"""Corrections of a label map: brush, erase, fill and delete-component, each an undoable edit.

Every operation works on the plane a view shows (``core.display.planes``: a slice of the
volume with the view's row and column axes and flips) and maps the pixels it touches back to
voxels with :func:`core.display.planes.plane_to_voxel`, the same mapping the cursor readout
uses, so an edit lands on the voxels under the pointer whatever the orientation. The brush is
round in millimetres (``pixel_mm`` gives a pixel's height and width), as the view shows it.

An operation changes the mask in place and returns an :class:`Edit` (the flat voxel indices
it changed with their values before and after), which can be reverted and applied again:
that is one Undo step. Edits of one brush drag are merged with :meth:`Edit.merged`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.display.planes import PlaneAxes, plane_to_voxel

__all__ = ["Edit", "brush", "delete_component", "disk_offsets", "fill_region"]


@dataclass(frozen=True)
class Edit:
    """Voxels an operation changed: flat indices (C order), values before and after."""

    flat: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @property
    def count(self) -> int:
        """How many voxels changed."""
        return int(self.flat.size)

    def apply(self, mask: np.ndarray) -> None:
        """Set the changed voxels to their new values (redo)."""
        _flat_set(mask, self.flat, self.after)

    def revert(self, mask: np.ndarray) -> None:
        """Put the changed voxels back (undo)."""
        _flat_set(mask, self.flat, self.before)

    @staticmethod
    def merged(edits: list[Edit], mask: np.ndarray) -> Edit:
        """One edit for a sequence applied in order: first values before, ``mask``'s after."""
        if not edits:
            return _empty_edit(mask.dtype)
        flat = np.concatenate([edit.flat for edit in edits])
        before = np.concatenate([edit.before for edit in edits])
        unique, first = np.unique(flat, return_index=True)
        after = _flat_get(mask, unique)
        changed = before[first] != after
        return Edit(unique[changed], before[first][changed], after[changed])


def _empty_edit(dtype: np.dtype) -> Edit:
    return Edit(np.zeros(0, np.int64), np.zeros(0, dtype), np.zeros(0, dtype))


def _flat_get(mask: np.ndarray, flat: np.ndarray) -> np.ndarray:
    return mask[np.unravel_index(flat, mask.shape)]


def _flat_set(mask: np.ndarray, flat: np.ndarray, values: np.ndarray) -> None:
    # Through the multi-index, so a Fortran-ordered mask (nibabel's) is addressed correctly.
    mask[np.unravel_index(flat, mask.shape)] = values


def _set_voxels(mask: np.ndarray, ijk: tuple[np.ndarray, ...], value: int) -> Edit:
    """Set the voxels ``ijk`` to ``value``; the edit lists those that changed."""
    flat = np.unique(np.ravel_multi_index(ijk, mask.shape))
    before = _flat_get(mask, flat)
    changed = before != value
    flat, before = flat[changed], before[changed]
    after = np.full(flat.shape, value, dtype=mask.dtype)
    _flat_set(mask, flat, after)
    return Edit(flat, before, after)


def _plane_shape(axes: PlaneAxes, shape3: tuple[int, int, int]) -> tuple[int, int]:
    return shape3[axes.row_axis], shape3[axes.col_axis]


def _plane_voxels(
    axes: PlaneAxes, shape3: tuple[int, int, int], slice_index: int, rows, cols
) -> tuple[np.ndarray, ...]:
    """Voxel indices of plane pixels ``(rows, cols)`` of a slice (arrays of equal length)."""
    ijk = plane_to_voxel(axes, shape3, slice_index, np.asarray(rows), np.asarray(cols))
    return tuple(np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in ijk)))


def disk_offsets(radius_mm: float, pixel_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the pixels whose centres lie within ``radius_mm`` of a centre.

    The centre pixel is always included, so the smallest brush paints one pixel.
    """
    height, width = (float(v) for v in pixel_mm)
    reach_r, reach_c = int(radius_mm // height), int(radius_mm // width)
    dr, dc = np.mgrid[-reach_r : reach_r + 1, -reach_c : reach_c + 1]
    inside = (dr * height) ** 2 + (dc * width) ** 2 <= float(radius_mm) ** 2
    return dr[inside], dc[inside]


def brush(
    mask: np.ndarray,
    axes: PlaneAxes,
    slice_index: int,
    center: tuple[int, int],
    *,
    radius_mm: float,
    pixel_mm: tuple[float, float],
    label: int,
    erase: bool = False,
) -> Edit:
    """Paint (or erase) a round dab on one slice of a view.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(I, J, K)`` label map, changed in place.
    axes : core.display.planes.PlaneAxes
        The view's plane geometry.
    slice_index : int
        The slice shown by the view.
    center : tuple of int
        ``(row, col)`` plane pixel under the pointer.
    radius_mm : float
        Brush radius in millimetres (pixels for a photograph).
    pixel_mm : tuple of float
        Height and width of a plane pixel in mm.
    label : int
        The label painted; with ``erase`` the label removed (its voxels under the brush
        become background, other labels stay).
    erase : bool
        Erase instead of paint.

    Returns
    -------
    Edit
    """
    rows_n, cols_n = _plane_shape(axes, mask.shape)
    dr, dc = disk_offsets(radius_mm, pixel_mm)
    rows, cols = dr + int(center[0]), dc + int(center[1])
    keep = (rows >= 0) & (rows < rows_n) & (cols >= 0) & (cols < cols_n)
    ijk = _plane_voxels(axes, mask.shape, slice_index, rows[keep], cols[keep])
    if erase:
        hit = mask[ijk] == label
        ijk = tuple(v[hit] for v in ijk)
        return _set_voxels(mask, ijk, 0)
    return _set_voxels(mask, ijk, label)


def _plane_of(mask: np.ndarray, axes: PlaneAxes, slice_index: int) -> np.ndarray:
    rows_n, cols_n = _plane_shape(axes, mask.shape)
    rows, cols = np.mgrid[0:rows_n, 0:cols_n]
    ijk = _plane_voxels(axes, mask.shape, slice_index, rows.ravel(), cols.ravel())
    return mask[ijk].reshape(rows_n, cols_n)


def fill_region(
    mask: np.ndarray, axes: PlaneAxes, slice_index: int, center: tuple[int, int], *, label: int
) -> Edit:
    """Fill the closed region around a pixel of one slice with ``label``.

    The region is the 4-connected set of pixels of the clicked pixel's value; it must be
    enclosed (not touch the slice's edge), as a hole inside an outline is.

    Raises
    ------
    ValueError
        The region reaches the edge of the slice (it is not closed), or already has ``label``.
    """
    plane = _plane_of(mask, axes, slice_index)
    row, col = int(center[0]), int(center[1])
    value = plane[row, col]
    if value == label:
        raise ValueError("the clicked region already has this label")
    components, _ = ndimage.label(plane == value)
    region = components == components[row, col]
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        raise ValueError(
            "the region is not closed: it reaches the edge of the slice (draw an outline first)"
        )
    rows, cols = np.nonzero(region)
    return _set_voxels(mask, _plane_voxels(axes, mask.shape, slice_index, rows, cols), label)


def delete_component(mask: np.ndarray, ijk: tuple[int, int, int]) -> Edit:
    """Set the 3-D connected component (6-connected) of labelled voxels at ``ijk`` to 0.

    Raises
    ------
    ValueError
        The voxel is background.
    """
    index = tuple(int(v) for v in ijk)
    value = mask[index]
    if value == 0:
        raise ValueError("no labelled voxel here: click inside the component to delete")
    components, _ = ndimage.label(mask == value)
    voxels = np.nonzero(components == components[index])
    return _set_voxels(mask, voxels, 0)

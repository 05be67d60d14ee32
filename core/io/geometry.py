"""Pure geometry helpers for voxel arrays and their RAS+ affines (no Qt, no file access).

Conventions
-----------
* An affine maps voxel indices ``(i, j, k, 1)`` to RAS+ world millimetres (nibabel).
* ITK, SimpleITK, NRRD, MetaImage and DICOM describe geometry in LPS+; the two frames differ by
  negating world x and y, which is :data:`LPS_TO_RAS` (its own inverse).
* :func:`reorient_to_ras` returns a *view* whose voxel axes point Right, Anterior, Superior (as
  close as the grid allows for oblique images), which the viewer slices directly; the returned
  :class:`VoxelReorientation` maps voxel indices between the file's order and the RAS view.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel import orientations

__all__ = [
    "LPS_TO_RAS",
    "VoxelReorientation",
    "affine_from_itk",
    "axis_codes",
    "itk_from_affine",
    "max_corner_distance",
    "reorient_to_ras",
]

#: Converts a world point or affine between LPS+ and RAS+ (the same matrix both ways).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axis_codes(affine: npt.ArrayLike) -> tuple[str, str, str]:
    """Return the world direction each voxel axis points to, e.g. ``("L", "A", "S")``.

    Parameters
    ----------
    affine : array_like
        4x4 voxel-to-RAS+ affine.

    Returns
    -------
    tuple of str
        One letter per voxel axis i, j, k (nibabel's ``aff2axcodes``).
    """
    return tuple(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


@dataclass(frozen=True)
class VoxelReorientation:
    """How voxel indices of the original array relate to those of the RAS-reoriented view.

    Attributes
    ----------
    ornt : numpy.ndarray
        nibabel orientation array ``(3, 2)``: row ``n`` says that original axis ``n`` becomes
        view axis ``ornt[n, 0]``, flipped when ``ornt[n, 1] == -1``.
    view_to_original : numpy.ndarray
        4x4 matrix mapping view voxel indices to original voxel indices.
    original_to_view : numpy.ndarray
        Its inverse.
    """

    ornt: np.ndarray
    view_to_original: np.ndarray
    original_to_view: np.ndarray

    def to_view(self, ijk: npt.ArrayLike) -> np.ndarray:
        """Map original voxel indices (shape ``(3,)`` or ``(N, 3)``) to view indices."""
        return _apply(self.original_to_view, ijk)

    def to_original(self, ijk: npt.ArrayLike) -> np.ndarray:
        """Map view voxel indices (shape ``(3,)`` or ``(N, 3)``) to original indices."""
        return _apply(self.view_to_original, ijk)


def _apply(matrix: np.ndarray, points: npt.ArrayLike) -> np.ndarray:
    coords = np.asarray(points, dtype=np.float64)
    if coords.shape[-1] != 3:
        raise ValueError(f"coordinates need a last axis of 3, got shape {coords.shape}")
    return coords @ matrix[:3, :3].T + matrix[:3, 3]


def reorient_to_ras(
    array: np.ndarray, affine: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, VoxelReorientation]:
    """Flip and transpose the first three axes so that voxel axes point to R, A and S.

    Parameters
    ----------
    array : numpy.ndarray
        Shape ``(I, J, K)`` or ``(I, J, K, C)``; trailing axes are left alone.
    affine : array_like
        4x4 voxel-to-RAS+ affine of ``array``.

    Returns
    -------
    view : numpy.ndarray
        A view of ``array`` (no copy) in RAS voxel order.
    view_affine : numpy.ndarray
        Affine of ``view``; it maps every voxel to the same world point as before.
    transform : VoxelReorientation
        Index mapping between ``array`` and ``view`` in both directions.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if array.ndim < 3:
        raise ValueError(f"reorient_to_ras needs at least 3 axes, got shape {array.shape}")
    ornt = orientations.io_orientation(affine)
    view = orientations.apply_orientation(array, ornt)
    view_to_original = orientations.inv_ornt_aff(ornt, array.shape[:3])
    transform = VoxelReorientation(
        ornt=ornt,
        view_to_original=view_to_original,
        original_to_view=np.linalg.inv(view_to_original),
    )
    return view, affine @ view_to_original, transform


def affine_from_itk(
    direction: npt.ArrayLike, spacing: npt.ArrayLike, origin: npt.ArrayLike
) -> np.ndarray:
    """Build a voxel-to-RAS+ affine from ITK geometry (which is LPS+).

    Parameters
    ----------
    direction : array_like
        9 values, row-major 3x3 direction cosines as ``sitk.Image.GetDirection()`` returns them.
    spacing, origin : array_like
        3 values each, ITK index order (x, y, z) = voxel axes (i, j, k).

    Returns
    -------
    numpy.ndarray
        4x4 float64 affine.
    """
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(
        spacing, dtype=np.float64
    )
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps


def itk_from_affine(
    affine: npt.ArrayLike,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Split a voxel-to-RAS+ affine into ITK ``(direction, spacing, origin)`` in LPS+.

    Raises
    ------
    ValueError
        If the affine is sheared: ITK's direction must be orthonormal, so it cannot store it.
    """
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing == 0):
        raise ValueError("affine has a zero-length voxel axis")
    direction = columns / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise ValueError(
            "affine is sheared; NRRD/MHA (ITK) cannot store it without resampling, save as NIfTI"
        )
    return (
        tuple(float(v) for v in direction.ravel()),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in lps[:3, 3]),
    )


def max_corner_distance(
    affine_a: npt.ArrayLike, affine_b: npt.ArrayLike, shape: tuple[int, ...]
) -> float:
    """Largest world distance (mm) that any corner voxel of a grid moves between two affines.

    Both affines map the same grid of ``shape[:3]``; the distance is an affine function of the
    voxel index, so its maximum over the grid is reached at a corner.
    """
    a = np.asarray(affine_a, dtype=np.float64)
    b = np.asarray(affine_b, dtype=np.float64)
    extent = [max(int(n) - 1, 0) for n in shape[:3]]
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, extent[0]) for j in (0, extent[1]) for k in (0, extent[2])]
    )
    return float(np.max(np.linalg.norm((corners @ (a - b).T)[:, :3], axis=1)))

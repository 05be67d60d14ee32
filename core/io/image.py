"""The in-memory image every part of segbench shares: voxels plus their world geometry.

Axis convention
---------------
``array`` keeps the file's voxel order ``(i, j, k)`` exactly as nibabel returns it (no
reorientation on load), with an optional trailing channel axis of length 3 for RGB.
``affine`` maps voxel indices ``(i, j, k, 1)`` to RAS+ world millimetres (nibabel's convention:
world x grows towards the patient's Right, y towards Anterior, z towards Superior; ITK and DICOM
use LPS+, which negates x and y).

Natural 2-D images (PNG, JPEG, TIFF, BMP) are stored as ``(H, W, 1)`` or ``(H, W, 1, 3)``:
i = row (top to bottom), j = column (left to right), k = 0, with a unit-spacing affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

__all__ = ["Image", "normalised_modality"]


def normalised_modality(text: str) -> str:
    """A modality the way DICOM writes it: upper case (``"MR"``, ``"CT"``), ``""`` if unknown.

    MetaImage files say ``MET_MOD_MR`` or ``MET_MOD_UNKNOWN``, some writers ``"ct"``; every
    reader's value goes through here, so each modality has one spelling in the app.
    """
    value = str(text or "").strip().upper().removeprefix("MET_MOD_")
    return "" if value in ("UNKNOWN", "NONE") else value


@dataclass
class Image:
    """A voxel array with its geometry and display metadata.

    Parameters
    ----------
    array : numpy.ndarray
        Voxels in voxel order: shape ``(I, J, K)`` or ``(I, J, K, 3)`` for RGB.
    affine : numpy.ndarray
        4x4 float64 matrix from voxel ``(i, j, k)`` to RAS+ world millimetres.
    spacing : tuple of float, optional
        Voxel size in mm along i, j, k. Derived from the affine's column norms when omitted.
    orientation : str, optional
        Axis codes such as ``"LAS"`` (``nibabel.aff2axcodes``). Derived from the affine when
        omitted or empty.
    modality : str
        DICOM-style modality (``"CT"``, ``"MR"``, ...) or ``""`` when unknown.
    window : tuple of float or None
        Default display window ``(center, width)`` from the file, if any.
    rescale : tuple of float or None
        ``(slope, intercept)`` already applied to ``array`` (DICOM rescale, NIfTI scl), if any.
    path : pathlib.Path or None
        The file or folder the image was read from.
    warnings : list of str
        Problems found while reading that did not stop it, in words.
    is_natural : bool
        True for photographs / natural 2-D images (PNG, JPEG, TIFF, BMP).
    extra_channels : list of Image
        Further input channels of a multi-channel case on the same grid (an nnU-Net case's
        ``case_0001``, ``case_0002``, ... beside ``case_0000``, which is this image and the one
        shown).
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float] | None = None
    orientation: str = ""
    modality: str = ""
    window: tuple[float, float] | None = None
    rescale: tuple[float, float] | None = None
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    is_natural: bool = False
    extra_channels: list[Image] = field(default_factory=list)

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Image affine must be 4x4, got shape {affine.shape}")
        self.affine = affine
        array = self.array
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
            self.array = array
        if array.ndim == 3:
            pass
        elif array.ndim == 4 and array.shape[3] == 3:
            pass
        else:
            raise ValueError(
                f"Image array must have shape (I, J, K) or (I, J, K, 3), got {array.shape}"
            )
        if self.spacing is None:
            self.spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        else:
            self.spacing = tuple(float(s) for s in self.spacing)
            if len(self.spacing) != 3:
                raise ValueError(f"Image spacing must have 3 values, got {self.spacing}")
        if not self.orientation:
            self.orientation = "".join(nib.aff2axcodes(affine))
        self.modality = normalised_modality(self.modality)
        if self.path is not None and not isinstance(self.path, Path):
            self.path = Path(self.path)
        for channel in self.extra_channels:
            if channel.array.shape != array.shape:
                raise ValueError(
                    f"{channel.path}: channel shape {channel.array.shape} differs from "
                    f"{self.path}'s {array.shape}"
                )

    @property
    def shape3(self) -> tuple[int, int, int]:
        """Spatial shape ``(I, J, K)`` (the channel axis left out)."""
        return tuple(int(n) for n in self.array.shape[:3])

    @property
    def size(self) -> tuple[int, ...]:
        """Columns x rows x slices, the one order every size is stated in.

        Voxel axis i runs along a slice's columns for medical images (nibabel's and DICOM's
        convention); a natural image is stored rows first, so its pair is swapped. A single
        picture has no slice count: ``(columns, rows)``.
        """
        i, j, k = self.shape3
        if self.is_natural:
            return (j, i) if k == 1 else (j, i, k)
        return (i, j, k)

    def size_text(self) -> str:
        """``"160 x 160 x 48 voxels"`` or ``"640 x 480 pixels"`` (columns x rows x slices)."""
        unit = "pixels" if self.is_natural else "voxels"
        return f"{' x '.join(map(str, self.size))} {unit}"

    @property
    def is_rgb(self) -> bool:
        """True when the array has a trailing colour axis of length 3."""
        return self.array.ndim == 4 and self.array.shape[3] == 3

    @property
    def ndim_spatial(self) -> int:
        """2 for a single slice (natural images, one DICOM file), otherwise 3."""
        return 2 if self.is_natural or self.array.shape[2] == 1 else 3

    def voxel_to_world(self, ijk: npt.ArrayLike) -> np.ndarray:
        """Map voxel coordinates to RAS+ world millimetres.

        Parameters
        ----------
        ijk : array_like
            Shape ``(3,)`` or ``(N, 3)``; fractional indices are allowed.

        Returns
        -------
        numpy.ndarray
            World coordinates with the same shape as ``ijk``.
        """
        points = np.asarray(ijk, dtype=np.float64)
        if points.shape[-1] != 3:
            raise ValueError(f"voxel coordinates need a last axis of 3, got {points.shape}")
        return points @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: npt.ArrayLike) -> np.ndarray:
        """Map RAS+ world millimetres to (fractional) voxel coordinates.

        Parameters
        ----------
        xyz : array_like
            Shape ``(3,)`` or ``(N, 3)``.

        Returns
        -------
        numpy.ndarray
            Fractional voxel indices with the same shape as ``xyz``; round them yourself.
        """
        points = np.asarray(xyz, dtype=np.float64)
        if points.shape[-1] != 3:
            raise ValueError(f"world coordinates need a last axis of 3, got {points.shape}")
        inverse = np.linalg.inv(self.affine)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

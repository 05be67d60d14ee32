"""Label volumes prepared for display: compact dtype, the image's memory order, known top label.

Showing a label map needs three passes over the volume (validate, narrow the dtype, reorder to
the image's memory order) and the largest label (to size the colour table). On a 512x512x300 CT
each pass takes a few hundred milliseconds, so the GUI runs :func:`prepare_labels` on its worker
and hands the :class:`LabelVolume` to every view that shows the map: the views then only check
its shape and order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.io.image import Image

__all__ = ["LabelVolume", "prepare_labels"]


def _fortran(image: Image) -> bool:
    """Whether the image's voxels are stored Fortran-ordered (nibabel) rather than C-ordered."""
    return bool(np.asarray(image.array).flags.f_contiguous)


@dataclass(frozen=True)
class LabelVolume:
    """A label map ready for the viewer.

    Parameters
    ----------
    array : numpy.ndarray
        ``(I, J, K)`` uint8 (uint16 past 255 labels; wider only past 65535) in the memory order
        of the image it belongs to (Fortran for nibabel images, C otherwise).
    max_label : int
        The largest label value present (0 for an empty map).
    """

    array: np.ndarray
    max_label: int

    @property
    def nbytes(self) -> int:
        """Bytes held by the array."""
        return int(self.array.nbytes)

    def fits(self, image: Image) -> bool:
        """True when the array has ``image``'s shape and memory order (no scan, no copy)."""
        if self.array.shape != image.shape3:
            return False
        if _fortran(image):
            return bool(self.array.flags.f_contiguous)
        return bool(self.array.flags.c_contiguous)


def prepare_labels(mask: np.ndarray, image: Image, *, what: str = "mask") -> LabelVolume:
    """Validate a label map against an image and store it the way slicing is cheap.

    Labels become uint8 (uint16 past 255) in the image's memory order: an argmax straight from
    torch is C-ordered int64 while nibabel images are F-ordered, and slicing across the grain
    touches a cache line per voxel on every scroll. A map that already conforms is kept without a
    copy, so callers that show the same map repeatedly convert it once.

    Parameters
    ----------
    mask : numpy.ndarray
        Integer (or boolean) labels of shape ``image.shape3``; ``(I, J)`` is accepted for a
        single-slice image.
    image : core.io.Image
        The image the labels belong to.
    what : str
        Name used in error messages ("prediction", "ground truth").

    Returns
    -------
    LabelVolume

    Raises
    ------
    ValueError
        Wrong shape, non-integer dtype or negative labels.
    """
    mask = np.asarray(mask)
    shape3 = image.shape3
    if mask.ndim == 2 and shape3[2] == 1:
        mask = mask[:, :, np.newaxis]
    if mask.shape != shape3:
        raise ValueError(f"{what} shape {mask.shape} differs from the image shape {shape3}")
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{what} must hold integer labels, got dtype {mask.dtype}")
    # Unsigned maps cannot hold negative labels: skip that pass over the volume.
    if mask.size and mask.dtype.kind == "i" and mask.min() < 0:
        raise ValueError(f"{what} holds negative labels")
    top = int(mask.max()) if mask.size else 0
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else mask.dtype
    mask = mask.astype(dtype, copy=False)  # narrow first: the reordering copy moves less
    if _fortran(image) and not mask.flags.f_contiguous:
        mask = np.asfortranarray(mask)
    elif not _fortran(image) and not mask.flags.c_contiguous:
        mask = np.ascontiguousarray(mask)
    return LabelVolume(mask, top)

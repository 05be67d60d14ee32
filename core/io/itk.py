"""NRRD/NHDR and MetaImage (MHA/MHD) reading through SimpleITK, converted from LPS+ to RAS+.

SimpleITK returns arrays in (z, y, x) order; transposing to (x, y, z) makes voxel axis i the ITK
index 0 and lets the affine be ``LPS_TO_RAS @ [direction * spacing | origin]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from core.io.errors import ImageReadError, VolumeChoiceRequired
from core.io.geometry import affine_from_itk
from core.io.image import Image

__all__ = ["read_itk"]


def read_itk(path: Path, *, volume: int | None = None) -> Image:
    """Read a 2-D, 3-D or 4-D NRRD/MetaImage file in its index order (i = ITK x).

    Parameters
    ----------
    path : pathlib.Path
        ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.
    volume : int, optional
        For 4-D files or multi-component (non-RGB) pixels: which volume/component to keep.

    Raises
    ------
    ImageReadError
        Unreadable file, unsupported dimension, missing or bad volume choice.
    """
    try:
        itk_image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        message = " ".join(str(exc).split())[-200:]
        raise ImageReadError(f"{path}: SimpleITK cannot read it ({message})") from exc
    dimension = itk_image.GetDimension()
    components = itk_image.GetNumberOfComponentsPerPixel()
    warnings: list[str] = []
    if dimension == 4:
        count = itk_image.GetSize()[3]
        index = _choose(path, volume, count, "volumes")
        extractor_size = list(itk_image.GetSize()[:3]) + [0]
        itk_image = sitk.Extract(itk_image, extractor_size, [0, 0, 0, index])
        dimension = 3
    elif dimension not in (2, 3):
        raise ImageReadError(f"{path}: {dimension}-D images are not supported")

    array = sitk.GetArrayFromImage(itk_image)  # (z, y, x[, c]) or (y, x[, c])
    is_rgb = components == 3 and array.dtype == np.uint8
    if components > 1 and not is_rgb:
        index = _choose(path, volume, components, "components")
        array = array[..., index]
    spatial = array.ndim - (1 if is_rgb else 0)
    if spatial == 2:
        array = array[np.newaxis]  # one slice: k = 0
    axes = (2, 1, 0, 3) if is_rgb else (2, 1, 0)
    array = array.transpose(axes)

    direction = np.eye(3)
    spacing = np.ones(3)
    origin = np.zeros(3)
    n = itk_image.GetDimension()
    direction[:n, :n] = np.asarray(itk_image.GetDirection()).reshape(n, n)
    spacing[:n] = itk_image.GetSpacing()
    origin[:n] = itk_image.GetOrigin()
    return Image(
        array=array,
        affine=affine_from_itk(direction, spacing, origin),
        modality=_modality(itk_image),
        path=path,
        warnings=warnings,
    )


def _choose(path: Path, volume: int | None, count: int, what: str) -> int:
    if count == 1:
        return 0
    if volume is None:
        raise VolumeChoiceRequired(path, count, f"image has {count} {what}")
    if not 0 <= volume < count:
        raise ImageReadError(f"{path}: volume {volume} out of range ({count} {what})")
    return volume


def _modality(itk_image: sitk.Image) -> str:
    for key in ("Modality", "modality"):
        if itk_image.HasMetaDataKey(key):
            value = itk_image.GetMetaData(key).strip()
            return value.removeprefix("MET_MOD_")
    return ""

"""``read_image``: one entry point that picks the reader from the file name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.io.dicom import DicomSeries, read_dicom
from core.io.errors import ImageReadError
from core.io.image import Image
from core.io.itk import read_itk
from core.io.natural import read_natural
from core.io.nifti import read_nifti
from core.library_output import captured_library_output

__all__ = ["IMAGE_SUFFIXES", "read_image", "suffix_of"]

#: File-name endings understood by :func:`read_image`, by reader.
IMAGE_SUFFIXES = {
    "nifti": (".nii", ".nii.gz"),
    "itk": (".nrrd", ".nhdr", ".mha", ".mhd"),
    "natural": (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"),
    "dicom": (".dcm", ".dicom", ".ima", ""),
}


def suffix_of(path: Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def read_image(
    path: str | os.PathLike[str],
    *,
    series: str | DicomSeries | None = None,
    volume: int | None = None,
) -> Image:
    """Read a medical or natural image with its geometry.

    Parameters
    ----------
    path : path-like
        NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``,
        ``.mhd``), PNG/JPEG/TIFF/BMP, a DICOM file (``.dcm`` or no extension), a folder of
        DICOM files, or a DICOMDIR (its folder is read).
    series : str or DicomSeries, optional
        SeriesInstanceUID to read from a DICOM folder (see ``list_dicom_series``).
    volume : int, optional
        Volume of a 4-D image, of a DICOM series with several volumes (echoes, phases, time
        points), or page of a multi-page TIFF; required when there are several.

    Returns
    -------
    Image
        Voxels in the file's voxel order with a voxel-to-RAS+ affine (see ``core.io.image``).

    Raises
    ------
    ImageReadError
        Missing file, unknown extension, unreadable content, missing series or volume choice,
        no finite voxel; the message names the file.
    MemoryLimitError
        The header asks for more memory than is available (with both figures).

    Notes
    -----
    Warnings and native messages the reading libraries emit are caught and added to the
    image's ``warnings``, as are counts of NaN and infinite voxels.
    """
    source = Path(path)
    with captured_library_output() as library:
        image = _read(source, series, volume)
    image.warnings.extend(library)
    image.warnings.extend(_voxel_warnings(image))
    return image


def _voxel_warnings(image: Image) -> list[str]:
    """NaN and infinite voxels in words; a file with no finite voxel at all is refused."""
    array = image.array
    if array.dtype.kind != "f" or array.size == 0:
        return []
    finite = int(np.count_nonzero(np.isfinite(array)))
    if finite == 0:
        raise ImageReadError(f"{image.path}: every voxel is NaN or infinite; nothing to show")
    if finite == array.size:
        return []
    nan = int(np.count_nonzero(np.isnan(array)))
    kinds = [f"{nan} NaN"] if nan else []
    kinds += [f"{array.size - finite - nan} infinite"] if array.size - finite - nan else []
    return [
        f"{' and '.join(kinds)} voxels (of {array.size}): they are shown as the lowest value "
        "and a model refuses them"
    ]


def _read(source: Path, series: str | DicomSeries | None, volume: int | None) -> Image:
    if not source.exists():
        raise ImageReadError(f"{source}: no such file or folder")
    if source.is_dir():
        return read_dicom(source, series=series, volume=volume)
    if source.name.upper() == "DICOMDIR":
        # A DICOMDIR is only an index; the folder scan finds the same files without trusting it.
        return read_dicom(source.parent, series=series, volume=volume)
    suffix = suffix_of(source)
    if series is not None:
        raise ImageReadError(f"{source}: series= only applies to a folder of DICOM files")
    if suffix in IMAGE_SUFFIXES["nifti"]:
        return read_nifti(source, volume=volume)
    if suffix in IMAGE_SUFFIXES["itk"]:
        return read_itk(source, volume=volume)
    if suffix in IMAGE_SUFFIXES["natural"]:
        return read_natural(source, volume=volume)
    if suffix in IMAGE_SUFFIXES["dicom"] or suffix.lstrip(".").isdigit():
        return read_dicom(source, volume=volume)
    known = ", ".join(s for group in IMAGE_SUFFIXES.values() for s in group if s)
    raise ImageReadError(f"{source}: unknown image type {suffix!r} (known: {known})")

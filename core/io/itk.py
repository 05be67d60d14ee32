"""NRRD/NHDR and MetaImage (MHA/MHD) reading through SimpleITK, converted from LPS+ to RAS+.

SimpleITK returns arrays in (z, y, x) order; transposing to (x, y, z) makes voxel axis i the ITK
index 0 and lets the affine be ``LPS_TO_RAS @ [direction * spacing | origin]``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from core.io.errors import ImageReadError, VolumeChoiceRequired, VolumeOutOfRange
from core.io.geometry import affine_from_itk
from core.io.image import Image
from core.memory import array_bytes, require_memory

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
    data_file = _check_data_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: not a readable image header ({_itk_reason(exc)})") from exc
    size = reader.GetSize()
    components = max(1, reader.GetNumberOfComponents())
    component_bytes = sitk.Image([1, 1], reader.GetPixelID(), components).GetSizeOfPixelComponent()
    voxels = array_bytes((*size, components), component_bytes)
    # SimpleITK's buffer plus the numpy copy made from it.
    require_memory(2 * voxels, f"{path}: reading its {'x'.join(map(str, size))} voxels")
    try:
        itk_image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: {_read_failure(exc, data_file, voxels)}") from exc
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


def _itk_reason(exc: RuntimeError) -> str:
    """ITK's own reason, without the C++ file and line it adds before it."""
    text = " ".join(str(exc).split())
    reason = text.rsplit("Reason:", 1)[-1] if "Reason:" in text else text.rsplit(":", 1)[-1]
    reason = reason.strip()
    if reason.startswith("No such file") or not reason:
        # ITK says this for any header it cannot parse, though the file is there.
        return "damaged or incomplete header"
    return reason[:200]


def _read_failure(exc: RuntimeError, data_file: tuple[Path, int] | None, needed: int) -> str:
    """A failed read of the voxels in words (ITK says "No such file" for a short file)."""
    if data_file is not None:
        data_file, offset = data_file
        try:
            have = data_file.stat().st_size - offset
        except OSError:
            return f"its data file {data_file} is missing"
        if have < needed:
            return (
                f"the voxel data is truncated ({have} bytes in {data_file.name}; the header "
                f"describes at least {needed})"
            )
    return f"cannot read the voxel data ({_itk_reason(exc)})"


#: Header keys naming the file that holds the voxels (MetaImage, NRRD detached headers).
_DATA_FILE_KEYS = ("elementdatafile", "data file", "datafile")


def _check_data_file(path: Path) -> tuple[Path, int] | None:
    """The raw data file a header points to and where its voxels start; refused if not regular.

    A ``.mhd``/``.nhdr`` may name any path as its data: a device such as ``/dev/zero`` would be
    read for as long as the header asks, a FIFO would block for ever. For an ``.mha`` with
    ``ElementDataFile = LOCAL`` (the voxels after the header) the file itself is returned with
    the header's length, so a short file can be reported as truncated. Compressed, attached
    NRRD and multi-file layouts give None.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(1 << 16)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read it ({error.strerror})") from None
    compressed = False
    named = None
    header_end = 0
    for line in head.split(b"\n"):
        header_end += len(line) + 1
        text = line.decode("latin-1")
        key, sep, value = text.partition("=") if "=" in text else text.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            continue
        if key in ("compresseddata", "encoding") and value.lower() in ("true", "gzip", "gz", "bz2"):
            compressed = True
        if key in _DATA_FILE_KEYS:
            named = value
            break
    if named is None or named.upper() == "LIST" or "%" in named or " " in named:
        return None
    if named.upper() == "LOCAL":
        return None if compressed else (path, header_end)
    data = path.parent / named
    try:
        mode = os.stat(data).st_mode
    except OSError:
        raise ImageReadError(f"{path}: its data file {named} does not exist") from None
    if not stat.S_ISREG(mode):
        raise ImageReadError(f"{path}: its data file {named} is not a regular file; refusing it")
    return None if compressed else (data, 0)


def _choose(path: Path, volume: int | None, count: int, what: str) -> int:
    if count == 1:
        return 0
    if volume is None:
        raise VolumeChoiceRequired(path, count, f"image has {count} {what}")
    if not 0 <= volume < count:
        raise VolumeOutOfRange(f"{path}: volume {volume} out of range ({count} {what})")
    return volume


def _modality(itk_image: sitk.Image) -> str:
    for key in ("Modality", "modality"):
        if itk_image.HasMetaDataKey(key):
            value = itk_image.GetMetaData(key).strip()
            return value.removeprefix("MET_MOD_")
    return ""

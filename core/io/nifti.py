"""NIfTI-1/NIfTI-2 reading through nibabel (sheared sforms included, which ITK refuses)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from core.io.errors import ImageReadError, VolumeChoiceRequired
from core.io.geometry import max_corner_distance
from core.io.image import Image

__all__ = ["load_nifti_header", "read_nifti"]

#: qform and sform closer than this (mm, at the volume corners) count as the same geometry.
_GEOMETRY_TOLERANCE_MM = 1e-3


def load_nifti_header(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open a NIfTI file lazily (header only; voxels stay on disk).

    Raises
    ------
    ImageReadError
        If nibabel cannot parse the file as NIfTI.
    """
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise ImageReadError(f"{path}: not a readable NIfTI file ({_one_line(exc)})") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageReadError(f"{path}: not a NIfTI file (nibabel sees {type(image).__name__})")
    return image


def read_nifti(path: Path, *, volume: int | None = None) -> Image:
    """Read a ``.nii`` / ``.nii.gz`` file in its on-disk voxel order.

    The array keeps the on-disk dtype unless the header's ``scl_slope``/``scl_inter`` are not
    the identity (nibabel's ``dataobj`` semantics), so an int16 CT stays int16. Uncompressed
    files are memory-mapped copy-on-write by nibabel, so nothing can write back to the source.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    volume : int, optional
        Which volume of a 4-D file to keep; required when there is more than one.

    Raises
    ------
    ImageReadError
        Unreadable or truncated file, unsupported dimensionality, missing or bad volume choice.
    """
    nifti = load_nifti_header(path)
    header = nifti.header
    shape = nifti.shape
    warnings: list[str] = []
    if len(shape) > 4 and any(n != 1 for n in shape[4:]):
        raise ImageReadError(f"{path}: {len(shape)}-D NIfTI {shape} is not supported")
    proxy = nifti.dataobj
    try:
        if len(shape) >= 4 and shape[3] > 1:
            if volume is None:
                raise VolumeChoiceRequired(path, shape[3], f"4-D image with {shape[3]} volumes")
            if not 0 <= volume < shape[3]:
                raise ImageReadError(
                    f"{path}: volume {volume} out of range (file has {shape[3]} volumes)"
                )
            array = np.asanyarray(proxy[:, :, :, volume, ...]).reshape(shape[:3])
        else:
            if volume not in (None, 0):
                raise ImageReadError(f"{path}: volume {volume} requested but the file has one")
            array = np.asanyarray(proxy).reshape(_as_3d(shape))
    except ImageReadError:
        raise
    except Exception as exc:  # truncated data raises EOFError, ValueError, OSError, zlib.error
        raise ImageReadError(f"{path}: cannot read voxel data ({_one_line(exc)})") from exc
    if isinstance(array, np.memmap):
        # A plain ndarray view of the copy-on-write map: same memory, no subclass surprises.
        array = array.view(np.ndarray)
    if not array.dtype.isnative:
        # torch and most C extensions reject byte-swapped arrays; one conversion here.
        array = array.astype(array.dtype.newbyteorder("="))
    slope, inter = proxy.slope, proxy.inter
    rescale = None
    if not (slope == 1 and inter == 0):
        rescale = (float(slope), float(inter))

    affine = nifti.affine
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform_code == 0 and qform_code == 0:
        warnings.append("no qform or sform: position unknown, using voxel sizes only")
    elif sform_code > 0 and qform_code > 0:
        distance = max_corner_distance(sform, qform, shape)
        if distance > _GEOMETRY_TOLERANCE_MM:
            warnings.append(f"qform and sform differ by up to {distance:.3g} mm; using the sform")
    return Image(
        array=array,
        affine=affine,
        modality="",
        rescale=rescale,
        path=path,
        warnings=warnings,
    )


def _as_3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    padded = tuple(shape[:3]) + (1,) * (3 - min(len(shape), 3))
    return padded  # 1-D/2-D files get singleton axes; trailing singleton axes are dropped


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."

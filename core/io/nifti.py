"""NIfTI-1/NIfTI-2 reading through nibabel (sheared sforms included, which ITK refuses)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from core.io.errors import ImageReadError, VolumeChoiceRequired, VolumeOutOfRange
from core.io.geometry import max_corner_distance
from core.io.image import Image
from core.memory import array_bytes, require_memory

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
    stored = header.get_data_dtype()
    _check_voxel_type(path, stored)
    # Scaled files come back as floats; count 8 bytes a voxel then, whatever is stored.
    itemsize = max(stored.itemsize, 8 if _scaled(proxy) else 1)
    volume_shape = _as_3d(shape)
    require_memory(
        array_bytes(volume_shape, itemsize),
        f"{path}: reading its {'x'.join(map(str, volume_shape))} {stored} voxels",
    )
    try:
        if len(shape) >= 4 and shape[3] > 1:
            if volume is None:
                raise VolumeChoiceRequired(path, shape[3], f"4-D image with {shape[3]} volumes")
            if not 0 <= volume < shape[3]:
                raise VolumeOutOfRange(
                    f"{path}: volume {volume} out of range (file has {shape[3]} volumes)"
                )
            array = np.asanyarray(proxy[:, :, :, volume, ...]).reshape(shape[:3])
        else:
            if volume not in (None, 0):
                raise VolumeOutOfRange(f"{path}: volume {volume} requested but the file has one")
            array = np.asanyarray(proxy).reshape(_as_3d(shape))
    except ImageReadError:
        raise
    except Exception as exc:  # truncated data raises EOFError, ValueError, OSError, zlib.error
        raise ImageReadError(f"{path}: cannot read voxel data ({_one_line(exc)})") from exc
    if stored.fields is not None:
        array, note = _colour_channels(array)
        warnings.append(note)
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


def _scaled(proxy: object) -> bool:
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    return not (slope == 1 and inter == 0)


def _check_voxel_type(path: Path, dtype: np.dtype) -> None:
    """Refuse voxel types that are not one intensity (or an RGB colour) per voxel."""
    if dtype.kind == "c":
        raise ImageReadError(
            f"{path}: voxels are complex numbers ({dtype}); save the magnitude or the phase as "
            "a real-valued image first"
        )
    if dtype.fields is not None and tuple(dtype.names or ()) not in (("R", "G", "B"), _RGBA):
        raise ImageReadError(f"{path}: voxels of compound type {dtype} are not supported")
    if dtype.fields is None and dtype.kind not in "biuf":
        raise ImageReadError(f"{path}: voxels of type {dtype} are not supported")


_RGBA = ("R", "G", "B", "A")


def _colour_channels(array: np.ndarray) -> tuple[np.ndarray, str]:
    """RGB24/RGBA32 voxels as an ``(I, J, K, 3)`` uint8 array, and a note saying so."""
    rgb = np.stack([array[name] for name in ("R", "G", "B")], axis=-1).astype(np.uint8)
    note = "RGB24 voxels read as colour"
    if array.dtype.names == _RGBA:
        note = "RGBA32 voxels read as colour (alpha ignored)"
    return rgb, note


def _as_3d(shape: tuple[int, ...]) -> tuple[int, int, int]:
    padded = tuple(shape[:3]) + (1,) * (3 - min(len(shape), 3))
    return padded  # 1-D/2-D files get singleton axes; trailing singleton axes are dropped


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."

"""Label masks on an image's grid: atomic writing with the image's geometry, checked reading.

A mask is an integer array with the image's spatial shape ``(I, J, K)``; it is never resampled.
Writing goes to a temporary file in the target folder followed by ``os.replace``, so a crash or
a full disk never leaves a half-written mask under the final name, and the reference image itself
can never be the target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
import skimage.io

from core.atomic_files import atomic_write, same_file
from core.io.dicom_seg import SEG_SUFFIX, is_dicom_seg, read_dicom_seg, write_dicom_seg
from core.io.errors import ImageReadError
from core.io.geometry import itk_from_affine, max_corner_distance
from core.io.image import Image
from core.io.natural import read_natural_pixels
from core.io.nifti import load_nifti_header
from core.io.reader import IMAGE_SUFFIXES, read_image, suffix_of
from core.library_output import captured_library_output

__all__ = [
    "MASK_SUFFIXES",
    "Mask",
    "check_mask_format",
    "ground_truth_names",
    "label_map_warning",
    "read_mask",
    "write_mask",
]

#: Endings write_mask accepts (single-file formats only, so one rename makes the write atomic).
#: ``.dcm`` writes a DICOM SEG of the image's DICOM series (:mod:`core.io.dicom_seg`).
MASK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".png", SEG_SUFFIX)

#: Affines closer than this (mm, at the grid corners) count as the same geometry.
AFFINE_TOLERANCE_MM = 1e-3


@dataclass
class Mask:
    """A label mask read from disk and checked against an image.

    Attributes
    ----------
    array : numpy.ndarray
        Integer labels, shape ``(I, J, K)`` equal to the reference image's ``shape3``.
    affine : numpy.ndarray
        The mask file's own voxel-to-RAS+ affine (for natural images, the identity).
    warnings : list of str
        Geometry differences from the reference, and values that do not look like labels
        (:func:`label_map_warning`), in words.
    path : pathlib.Path or None
        The file it was read from.
    names : dict of int to str
        Label names the file brings (:func:`ground_truth_names`); empty when it has none.
    """

    array: np.ndarray
    affine: np.ndarray
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    names: dict[int, str] = field(default_factory=dict)


#: More distinct values than this, changing between most neighbouring foreground voxels, is a
#: grey image or a probability map rather than labels (label maps change only at borders).
_LABEL_MAP_MAX_VALUES = 16
_LABEL_MAP_MAX_CHANGE = 0.3


def label_map_warning(labels: np.ndarray) -> str | None:
    """Say so, with the values found, when ``labels`` look like a picture, not a label map.

    A grey photograph or a 0-255 probability map opened as ground truth has many values that
    change from one voxel to the next; a label map (even TotalSegmentator's 117 classes) has
    regions of one value. Both conditions must hold, so a many-class label map passes.

    Returns
    -------
    str or None
        The warning, or None for a plausible label map.
    """
    counts = np.bincount(labels.ravel()) if labels.dtype.kind in "ub" else None
    values = np.flatnonzero(counts) if counts is not None else np.unique(labels)
    if len(values) <= _LABEL_MAP_MAX_VALUES:
        return None
    changes = []
    for axis in range(labels.ndim):
        if labels.shape[axis] > 1:
            first = np.take(labels, range(labels.shape[axis] - 1), axis=axis)
            second = np.take(labels, range(1, labels.shape[axis]), axis=axis)
            inside = (first > 0) | (second > 0)
            changes.append(float((first[inside] != second[inside]).mean()) if inside.any() else 0)
    if max(changes, default=0.0) <= _LABEL_MAP_MAX_CHANGE:
        return None
    shown = ", ".join(str(int(v)) for v in values[:4]) + ", ..., " + str(int(values[-1]))
    return (
        f"this does not look like a label map: {len(values)} distinct values ({shown}) that "
        f"change between {max(changes):.0%} of neighbouring voxels, like a grey image or a "
        "probability map; each value is scored as a label of its own"
    )


def ground_truth_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """The label names a ground-truth file brings with it, by label value.

    Read from a 3D Slicer segmentation (``Segment<N>_Name`` and ``Segment<N>_LabelValue`` in
    a ``.seg.nrrd`` header) or from an nnU-Net ``dataset.json`` (``"labels": {name: value}``)
    in the mask's folder or the one above it. Empty when the file names none.
    """
    source = Path(path)
    names: dict[int, str] = {}
    if suffix_of(source) in (".nrrd", ".nhdr", ".mha", ".mhd"):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(source))
        try:
            reader.ReadImageInformation()
            keys = set(reader.GetMetaDataKeys())
        except RuntimeError:
            keys = set()
        for key in sorted(keys):
            if key.startswith("Segment") and key.endswith("_Name"):
                stem = key[: -len("_Name")]
                if f"{stem}_LabelValue" in keys:
                    value = reader.GetMetaData(f"{stem}_LabelValue").strip()
                    if value.isdigit():
                        names[int(value)] = reader.GetMetaData(key).strip()
    if names:
        return names
    for folder in (source.parent, source.parent.parent):
        dataset = folder / "dataset.json"
        if dataset.is_file():
            try:
                labels = json.loads(dataset.read_text(encoding="utf-8")).get("labels", {})
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(labels, dict):
                for name, value in labels.items():
                    if isinstance(value, int) and not isinstance(value, bool):
                        names[value] = str(name)
            return names
    return names


def _label_dtype(labels: np.ndarray, where: str) -> np.dtype:
    if labels.size == 0:
        return np.dtype(np.uint8)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{where}: mask has NaN or infinite values")
    if labels.dtype.kind == "f" and np.any(labels != np.round(labels)):
        raise ValueError(f"{where}: mask has non-integer values")
    low, high = labels.min(), labels.max()
    if low < 0:
        raise ValueError(f"{where}: mask has negative labels (minimum {low})")
    if high > np.iinfo(np.uint16).max:
        raise ValueError(f"{where}: mask labels up to {high} do not fit uint16")
    return np.dtype(np.uint8) if high <= np.iinfo(np.uint8).max else np.dtype(np.uint16)


def write_mask(
    mask: npt.ArrayLike,
    path: str | os.PathLike[str],
    *,
    reference: Image,
    overwrite: bool = True,
    class_names: Sequence[str] | None = None,
    colors: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write a label mask with the reference image's geometry.

    Parameters
    ----------
    mask : array_like
        Non-negative integer labels (bool allowed) of shape ``reference.shape3`` (or ``(H, W)``
        for a natural image). Stored as uint8, or uint16 when a label exceeds 255.
    path : path-like
        Target ending in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` (medical), ``.png`` (2-D)
        or ``.dcm`` (DICOM SEG of a DICOM series).
    reference : Image
        The image the mask belongs to. For a NIfTI reference the header is copied (qform/sform
        codes, units, affine) with the data type and scaling reset for labels.
    overwrite : bool
        When False an existing file at ``path`` is an error. The reference image's own file is
        never overwritten, whatever this says.
    class_names, colors : sequence, optional
        Names and RGB colours by label, for a DICOM SEG's segments (``.dcm``; the image must
        come from a DICOM series). Without names, segments are called ``class N``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        Wrong shape, bad labels, unsupported ending, target is the reference image or exists
        while ``overwrite`` is False, geometry the format cannot store (sheared NRRD/MHA).
    """
    target = Path(path)
    suffix = suffix_of(target)
    if suffix not in MASK_SUFFIXES:
        raise ValueError(
            f"{target}: cannot write masks as {suffix!r}; use one of {', '.join(MASK_SUFFIXES)}"
        )
    if reference.path is not None:
        source = Path(reference.path)
        inside_source_folder = source.is_dir() and target.resolve().parent == source.resolve()
        if same_file(target, source) or (inside_source_folder and target.exists()):
            raise ValueError(f"{target}: refusing to overwrite the reference image's own file")
    if target.exists() and not overwrite:
        raise ValueError(f"{target}: file exists (pass overwrite=True to replace it)")
    if not target.parent.is_dir():
        raise ValueError(f"{target}: folder {target.parent} does not exist")

    labels = np.asarray(mask)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if reference.is_natural and labels.shape == reference.shape3[:2]:
        labels = labels[:, :, np.newaxis]
    if labels.shape != reference.shape3:
        raise ValueError(
            f"{target}: mask shape {labels.shape} does not match image shape {reference.shape3}"
        )
    labels = labels.astype(_label_dtype(labels, str(target)), copy=False)

    if suffix == SEG_SUFFIX:
        write_dicom_seg(
            labels, target, reference=reference, class_names=class_names or [], colors=colors
        )
    elif suffix == ".png":
        check_mask_format(target, reference)
        plane = labels[:, :, 0]
        atomic_write(target, suffix=suffix, write=lambda temp: _write_png(plane, temp))
    elif suffix in (".nii", ".nii.gz"):
        nifti = _nifti_like(labels, reference)
        atomic_write(target, suffix=suffix, write=lambda temp: nib.save(nifti, temp))
    else:
        itk_mask = _itk_like(labels, reference, target)
        atomic_write(
            target,
            suffix=suffix,
            write=lambda temp: sitk.WriteImage(itk_mask, str(temp), useCompression=True),
        )
    return target


def check_mask_format(path: str | os.PathLike[str], reference: Image) -> None:
    """Refuse a mask file format that cannot hold a mask of ``reference`` (PNG for a volume).

    Callers run it before any long work (the command line before inference), so a wrong
    ``--out`` costs a second, not a whole segmentation.

    Raises
    ------
    ValueError
        ``path`` ends in ``.png`` and ``reference`` has more than one slice.
    """
    slices = reference.shape3[2]
    if suffix_of(Path(path)) == ".png" and slices != 1:
        raise ValueError(
            f"{path}: PNG holds 2-D masks; this image has {slices} slices "
            "(write .nii.gz, .nrrd or .mha instead)"
        )


def _write_png(plane: np.ndarray, temp: Path) -> None:
    skimage.io.imsave(temp, plane, check_contrast=False)


def _nifti_like(labels: np.ndarray, reference: Image) -> nib.Nifti1Image:
    """A NIfTI image of ``labels`` with the reference's header where it has one."""
    header = None
    source = Path(reference.path) if reference.path is not None else None
    if source is not None and source.is_file() and suffix_of(source) in IMAGE_SUFFIXES["nifti"]:
        try:
            header = load_nifti_header(source).header
        except ImageReadError:
            header = None  # the reference file vanished or changed: fall back to a fresh header
    if header is None or not isinstance(header, nib.Nifti1Header):
        nifti = nib.Nifti1Image(labels, reference.affine)
        nifti.header.set_sform(reference.affine, code=1)  # scanner coordinates
        nifti.header.set_qform(reference.affine, code=1)
    else:
        header = header.copy()
        sform_code = int(header["sform_code"])
        qform_code = int(header["qform_code"])
        header.set_data_dtype(labels.dtype)
        header.set_slope_inter(None, None)  # labels are stored as-is, never scaled
        header["cal_min"], header["cal_max"] = 0, 0
        header["intent_code"] = 0
        header["descrip"] = b"segbench label mask"
        same = max_corner_distance(header.get_best_affine(), reference.affine, labels.shape)
        nifti = nib.Nifti1Image(labels, reference.affine, header=header)
        if same > 1e-6:
            # The in-memory image moved away from its file: its affine wins, codes are kept.
            nifti.header.set_sform(reference.affine, code=max(sform_code, 1))
            nifti.header.set_qform(reference.affine, code=max(qform_code, 1))
    nifti.set_data_dtype(labels.dtype)
    return nifti


def _itk_like(labels: np.ndarray, reference: Image, target: Path) -> sitk.Image:
    try:
        direction, spacing, origin = itk_from_affine(reference.affine)
    except ValueError as exc:
        raise ValueError(f"{target}: {exc}") from exc
    # ITK arrays are (z, y, x): transpose back from the (i, j, k) voxel order.
    itk_mask = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    itk_mask.SetDirection(direction)
    itk_mask.SetSpacing(spacing)
    itk_mask.SetOrigin(origin)
    return itk_mask


def read_mask(path: str | os.PathLike[str], *, reference: Image) -> Mask:
    """Read a label mask and check it against the image it belongs to (no resampling).

    Parameters
    ----------
    path : path-like
        Any format :func:`core.io.read_image` reads, or a DICOM SEG of the image's series
        (frames placed by the source instances they derive from); PNG/JPEG/TIFF/BMP masks of a
        natural image come back as ``(H, W, 1)``.
    reference : Image
        The image the mask should match.

    Returns
    -------
    Mask
        Integer labels; ``warnings`` says in words when the affine differs by more than
        :data:`AFFINE_TOLERANCE_MM` (for example "mask affine differs from image: max 2.5 mm").

    Raises
    ------
    ValueError
        Shape differs from the image (both shapes in the message), non-integer or negative
        labels; :class:`ImageReadError` when the file cannot be read.
    """
    source = Path(path)
    warnings: list[str] = []
    if suffix_of(source) in IMAGE_SUFFIXES["dicom"] and is_dicom_seg(source):
        return Mask(read_dicom_seg(source, reference=reference), reference.affine, [], source)
    if suffix_of(source) in IMAGE_SUFFIXES["natural"]:
        if not source.is_file():
            raise ImageReadError(f"{source}: no such file")
        with captured_library_output() as library:
            pixels, pixel_warnings = read_natural_pixels(source)
        pixel_warnings = [*pixel_warnings, *library]
        if pixels.ndim == 3:
            if not np.all(pixels == pixels[..., :1]):
                raise ValueError(f"{source}: colour image cannot be a label mask")
            pixels = pixels[..., 0]
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8)  # a 1-bit PNG mask means labels 0 and 1
        labels, affine = pixels[:, :, np.newaxis], np.eye(4)
        warnings.extend(pixel_warnings)
    else:
        image = read_image(source)
        if image.is_rgb:
            raise ValueError(f"{source}: colour image cannot be a label mask")
        labels, affine = image.array, image.affine
        warnings.extend(image.warnings)
    if labels.shape != reference.shape3:
        raise ValueError(
            f"{source}: mask shape {labels.shape} does not match image shape {reference.shape3}"
        )
    labels = labels.astype(_label_dtype(labels, str(source)), copy=False)
    if not reference.is_natural:
        distance = max_corner_distance(affine, reference.affine, labels.shape)
        if distance > AFFINE_TOLERANCE_MM:
            warnings.append(f"mask affine differs from image: max {distance:.3g} mm")
    not_labels = label_map_warning(labels)
    if not_labels is not None:
        warnings.append(not_labels)
    names = ground_truth_names(source)
    return Mask(array=labels, affine=affine, warnings=warnings, path=source, names=names)

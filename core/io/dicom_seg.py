"""DICOM Segmentation objects (DICOM SEG) of a DICOM series, written and read with highdicom.

A mask of an image read from a DICOM series is written as one SEG instance that references the
series' instances: one segment per foreground class, with its name and colour, BINARY (from the
label map) or FRACTIONAL (from class probabilities). Reading a SEG on an image maps each frame
to the source instance it was derived from, so frames land on the right slices whatever their
order in the file; a SEG whose source instances are not the image's series is refused.

The source series is found again from the image: among the series in the image's folder, the one
whose slice positions (ImagePositionPatient, taken to voxel indices with the image's affine)
fall on the image's slices ``k = 0 .. K-1``. Frame ``k`` of the SEG is the image's slice
``array[:, :, k]`` transposed (DICOM rows run along the image's j axis, see
:mod:`core.io.dicom`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import SegmentationStorage

from core import __version__
from core.atomic_files import atomic_write
from core.io.dicom import list_dicom_series
from core.io.geometry import LPS_TO_RAS
from core.io.image import Image

__all__ = ["SEG_SUFFIX", "is_dicom_seg", "read_dicom_seg", "source_series", "write_dicom_seg"]

#: The file ending of DICOM SEG outputs.
SEG_SUFFIX = ".dcm"
#: Slice positions within this fraction of a voxel of the image's slices match them.
_POSITION_TOLERANCE = 0.05
_TISSUE = ("85756007", "SCT", "Tissue")


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a DICOM file holding a Segmentation object."""
    source = Path(path)
    if not source.is_file():
        return False
    try:
        header = pydicom.dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
        return False
    return header.get("SOPClassUID") == SegmentationStorage or header.get("Modality") == "SEG"


def source_series(image: Image) -> list[pydicom.Dataset]:
    """The headers of the DICOM instances the image's slices came from, in slice order ``k``.

    Raises
    ------
    ValueError
        The image was not read from a DICOM series, or no series in its folder has one
        single-frame instance at each of its slices.
    """
    where = image.path if image.path is not None else "image"
    from core.io.reader import IMAGE_SUFFIXES, suffix_of

    from_dicom = image.path is not None and (
        Path(image.path).is_dir() or suffix_of(Path(image.path)) in IMAGE_SUFFIXES["dicom"]
    )
    if not from_dicom or image.is_natural:
        raise ValueError(f"{where}: DICOM SEG needs an image read from a DICOM series")
    folder = Path(image.path) if Path(image.path).is_dir() else Path(image.path).parent
    columns, rows, slices = image.shape3
    for series in list_dicom_series(folder):
        if (series.rows, series.columns) != (rows, columns) or series.n_slices != slices:
            continue
        ordered = _by_slice(series.files, image)
        if ordered is not None:
            return ordered
    raise ValueError(
        f"{where}: DICOM SEG needs the image's DICOM series, and no series in {folder} has "
        f"one single-frame slice at each of the image's {slices} positions"
    )


def _by_slice(files: Sequence[Path], image: Image) -> list[pydicom.Dataset] | None:
    slices = image.shape3[2]
    ordered: list[pydicom.Dataset | None] = [None] * slices
    for file in files:
        header = pydicom.dcmread(file, stop_before_pixels=True)
        position = header.get("ImagePositionPatient")
        if position is None or int(header.get("NumberOfFrames", 1) or 1) != 1:
            return None
        ras = LPS_TO_RAS[:3, :3] @ np.asarray([float(v) for v in position])
        ijk = image.world_to_voxel(ras)
        k = int(round(ijk[2]))
        off_grid = np.abs(ijk - np.round(ijk)).max() > _POSITION_TOLERANCE
        if off_grid or abs(ijk[0]) > _POSITION_TOLERANCE or abs(ijk[1]) > _POSITION_TOLERANCE:
            return None
        if not 0 <= k < slices or ordered[k] is not None:
            return None
        ordered[k] = header
    return ordered if all(header is not None for header in ordered) else None


#: Patient and study attributes highdicom copies into a SEG; sources lacking them (anonymised or
#: synthetic series) get them empty, as DICOM allows for these type 2 attributes.
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _completed(header: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of a source header with the type 2 patient/study attributes present."""
    copy = pydicom.Dataset(header)
    copy.file_meta = header.file_meta
    for keyword in _PATIENT_STUDY:
        if keyword not in copy:
            setattr(copy, keyword, "")
    return copy


def _frames(volume: np.ndarray) -> np.ndarray:
    """``(I, J, K[, S])`` voxels -> ``(K, rows=J, columns=I[, S])`` frames."""
    order = (2, 1, 0) + tuple(range(3, volume.ndim))
    return np.ascontiguousarray(volume.transpose(order))


def _lab(rgb: Sequence[int]):
    import highdicom as hd

    return hd.color.CIELabColor.from_rgb(*(int(v) for v in rgb[:3]))


def _descriptions(labels: Sequence[int], names: Sequence[str], colors, manual: bool) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    tissue = hd.sr.CodedConcept(*_TISSUE)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segbench", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    descriptions = []
    for number, label in enumerate(labels, start=1):
        name = names[label] if label < len(names) else f"class {label}"
        color = colors[label] if colors is not None and label < len(colors) else None
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=str(name)[:64],
                segmented_property_category=tissue,
                segmented_property_type=tissue,
                algorithm_type="SEMIAUTOMATIC" if manual else "AUTOMATIC",
                algorithm_identification=algorithm,
                display_color=None if color is None else _lab(color),
            )
        )
    return descriptions


def write_dicom_seg(
    mask: np.ndarray,
    path: str | os.PathLike[str],
    *,
    reference: Image,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]] | None = None,
    probabilities: np.ndarray | None = None,
    manual: bool = False,
) -> Path:
    """Write a mask of a DICOM series as a DICOM SEG file referencing that series (atomic).

    Parameters
    ----------
    mask : numpy.ndarray
        Label map ``reference.shape3``; label ``c`` becomes the segment of class ``c``.
    path : path-like
        The ``.dcm`` file to write.
    reference : core.io.Image
        The image, read from a DICOM series (see :func:`source_series`).
    class_names : sequence of str
        Names by label (background first): the segments' labels.
    colors : sequence of RGB, optional
        Colours by label: the segments' display colours.
    probabilities : numpy.ndarray, optional
        ``(C, I, J, K)`` class probabilities: written as a FRACTIONAL SEG (probability, 8 bits)
        instead of the binary label map.
    manual : bool
        The mask was corrected by a person (segment algorithm type SEMIAUTOMATIC).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        Not a DICOM image, shapes that differ, a label map without foreground classes.
    """
    import highdicom as hd

    target = Path(path)
    labels = np.asarray(mask)
    if labels.shape != reference.shape3:
        raise ValueError(
            f"{target}: mask shape {labels.shape} does not match image shape {reference.shape3}"
        )
    sources = source_series(reference)
    n_classes = max(len(class_names), int(labels.max(initial=0)) + 1)
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float32)
        if probs.shape[1:] != labels.shape:
            raise ValueError(f"{target}: probabilities {probs.shape} do not match the mask")
        n_classes = probs.shape[0]
        foreground = list(range(1, n_classes))
        pixels = _frames(np.moveaxis(np.clip(probs[1:], 0.0, 1.0), 0, -1))
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        foreground = list(range(1, n_classes))
        pixels = _frames(labels.astype(np.uint16 if n_classes > 255 else np.uint8))
        kind = hd.seg.SegmentationTypeValues.BINARY
    if not foreground:
        raise ValueError(f"{target}: the mask has no foreground class to write")
    try:
        seg = _segmentation(sources, pixels, kind, foreground, class_names, colors, manual)
    except ValueError as error:  # highdicom's checks of the source series, in its words
        raise ValueError(f"{target}: cannot make a DICOM SEG of this series: {error}") from None
    atomic_write(target, lambda temp: seg.save_as(temp), suffix=SEG_SUFFIX)
    return target


def _segmentation(sources, pixels, kind, foreground, class_names, colors, manual):
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=[_completed(header) for header in sources],
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=_descriptions(foreground, class_names, colors, manual),
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="segbench",
        manufacturer_model_name="segbench",
        software_versions=__version__,
        device_serial_number="0",
        series_description="segbench segmentation",
        omit_empty_frames=False,
    )


def read_dicom_seg(path: str | os.PathLike[str], *, reference: Image) -> np.ndarray:
    """Read a DICOM SEG as a label map on ``reference``'s grid.

    Segment ``n`` becomes label ``n`` (segbench writes class ``c`` as segment ``c``). A
    FRACTIONAL SEG gives each voxel the segment of highest value where that value is at least
    one half, else background.

    Returns
    -------
    numpy.ndarray
        uint8 (uint16 past 255 segments) labels, shape ``reference.shape3``.

    Raises
    ------
    ValueError
        The SEG derives from another series than the image (both series named), or cannot be
        read.
    """
    import highdicom as hd

    source = Path(path)
    try:
        seg = hd.seg.segread(source)
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad file, in words
        raise ValueError(f"{source}: cannot read the DICOM SEG ({error})") from None
    sources = source_series(reference)
    series_uid = sources[0].SeriesInstanceUID
    referenced = {series for _, series, _ in seg.get_source_image_uids()}
    if series_uid not in referenced:
        raise ValueError(
            f"{source}: this DICOM SEG was made on series {', '.join(sorted(referenced))}, "
            f"not on the image's series {series_uid}; open it with its own series"
        )
    numbers = [int(n) for n in seg.segment_numbers]
    sop_uids = [header.SOPInstanceUID for header in sources]
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sop_uids,
        segment_numbers=numbers,
        combine_segments=not fractional,
        assert_missing_frames_are_empty=True,
        skip_overlap_checks=True,
    )
    dtype = np.uint8 if max(numbers, default=0) <= 255 else np.uint16
    if fractional:
        best = frames.argmax(axis=-1)
        strong = np.take_along_axis(frames, best[..., None], axis=-1)[..., 0] >= 0.5
        frames = np.where(strong, np.asarray(numbers)[best], 0)
    labels = np.asarray(frames, dtype=dtype).transpose(2, 1, 0)  # (K, J, I) -> (I, J, K)
    return np.array(labels, order="F" if reference.array.flags.f_contiguous else "C")

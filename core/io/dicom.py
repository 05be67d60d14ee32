"""DICOM series listing and volume assembly with pydicom.

Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product of
the two ImageOrientationPatient cosines), never by file name, InstanceNumber or SliceLocation.
The array axes are (i = column, j = row, k = slice), matching what nibabel gives for DICOM
converted to NIfTI, and the affine is built in LPS+ from IOP/IPP/PixelSpacing and then turned to
RAS+ by negating world x and y.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from core.io.errors import ImageReadError
from core.io.geometry import LPS_TO_RAS
from core.io.image import Image

__all__ = ["DicomSeries", "list_dicom_series", "read_dicom"]

#: Slice positions closer than this (mm) along the normal are the same position.
_SAME_POSITION_MM = 1e-3
#: Spacing deviations at or below this many mm (or 1 % of the spacing) are rounding, not gaps.
_SPACING_TOLERANCE_MM = 1e-2


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder (headers only; no pixel data read).

    Attributes
    ----------
    uid : str
        SeriesInstanceUID, the value to pass as ``read_image(folder, series=uid)``.
    description : str
        SeriesDescription or ``""``.
    modality : str
        Modality (``"CT"``, ``"MR"``, ...) or ``""``.
    n_slices : int
        Number of image files in the series.
    rows, columns : int
        Slice size in pixels (of the first file).
    files : tuple of pathlib.Path
        The image files, in the order found (not yet sorted spatially).
    """

    uid: str
    description: str
    modality: str
    n_slices: int
    rows: int
    columns: int
    files: tuple[Path, ...]

    def label(self) -> str:
        """Short human description, e.g. ``'CT "Routine Brain": 4 slices 16x16'``."""
        return (
            f'{self.modality or "?"} "{self.description}": {self.n_slices} slices '
            f"{self.rows}x{self.columns} ({self.uid})"
        )


def _read_header(path: Path) -> pydicom.Dataset | None:
    """The header of an image file, or None for non-DICOM files and DICOMDIR indexes."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError):
        return None
    if "Rows" not in dataset or "Columns" not in dataset:
        return None  # DICOMDIR, structured reports, presentation states: no pixels
    return dataset


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """List the image series under a folder (searched recursively), largest first.

    Parameters
    ----------
    folder : path-like
        A folder holding DICOM files at any depth; other files are skipped.

    Returns
    -------
    list of DicomSeries
        Sorted by number of slices (descending), then description and UID; empty when the
        folder holds no DICOM images.

    Raises
    ------
    ImageReadError
        If ``folder`` is not an existing folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(f"{root}: not a folder")
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for directory, _subdirs, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = Path(directory) / name
            header = _read_header(path)
            if header is not None:
                uid = str(header.get("SeriesInstanceUID", "")) or f"(no series UID) {directory}"
                groups[uid].append((path, header))
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        series.append(
            DicomSeries(
                uid=uid,
                description=str(first.get("SeriesDescription", "")),
                modality=str(first.get("Modality", "")),
                n_slices=len(members),
                rows=int(first.Rows),
                columns=int(first.Columns),
                files=tuple(path for path, _ in members),
            )
        )
    series.sort(key=lambda s: (-s.n_slices, -s.rows * s.columns, s.description, s.uid))
    return series


def read_dicom(path: str | os.PathLike[str], *, series: str | DicomSeries | None = None) -> Image:
    """Read one DICOM file, or one series from a folder, as a volume.

    Parameters
    ----------
    path : path-like
        A DICOM file (read alone) or a folder (see :func:`list_dicom_series`).
    series : str or DicomSeries, optional
        SeriesInstanceUID to read from a folder. Without it the largest series is read and a
        warning names it and the others.

    Returns
    -------
    Image
        Voxels ``(columns, rows, slices)``; CT/PET values rescaled (``int16`` when the rescale
        is an integer shift that fits, else ``float32``); window, rescale, modality filled in.

    Raises
    ------
    ImageReadError
        Empty folder, unknown series, unreadable pixel data, inconsistent slices.
    """
    source = Path(path)
    warnings: list[str] = []
    if source.is_dir():
        found = list_dicom_series(source)
        if not found:
            raise ImageReadError(f"{source}: no DICOM images in this folder")
        if series is None:
            chosen = found[0]
            if len(found) > 1:
                others = "; ".join(s.label() for s in found[1:])
                warnings.append(
                    f"folder has {len(found)} series; read the largest, {chosen.label()}; "
                    f"others: {others}"
                )
        else:
            uid = series.uid if isinstance(series, DicomSeries) else str(series)
            matches = [s for s in found if s.uid == uid]
            if not matches:
                available = ", ".join(s.uid for s in found)
                raise ImageReadError(f"{source}: series {uid} not found; available: {available}")
            chosen = matches[0]
        files = list(chosen.files)
    elif source.is_file():
        if _read_header(source) is None:
            raise ImageReadError(f"{source}: not a DICOM image file")
        files = [source]
    else:
        raise ImageReadError(f"{source}: no such file or folder")
    datasets = []
    for file in files:
        try:
            datasets.append(pydicom.dcmread(file))
        except Exception as exc:
            raise ImageReadError(f"{file}: cannot read DICOM ({exc})") from exc
    return _assemble(source, datasets, files, warnings)


def _orientation_of(dataset: pydicom.Dataset) -> tuple[float, ...] | None:
    value = dataset.get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        return None
    return tuple(round(float(v), 4) for v in value)


def _assemble(
    source: Path,
    datasets: list[pydicom.Dataset],
    files: list[Path],
    warnings: list[str],
) -> Image:
    slices = list(zip(datasets, files, strict=True))
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        if len(datasets) > 1:
            raise ImageReadError(
                f"{source}: a series of several multi-frame files is not supported"
            )
        return _single_multiframe(source, datasets[0], warnings)

    orientations = Counter(_orientation_of(ds) for ds, _ in slices)
    if len(orientations) > 1:
        kept, count = orientations.most_common(1)[0]
        warnings.append(
            f"series mixes {len(orientations)} slice orientations; kept the {count} of "
            f"{len(slices)} slices with orientation {kept}"
        )
        slices = [item for item in slices if _orientation_of(item[0]) == kept]
    first = slices[0][0]
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds, _ in slices}
    if len(sizes) > 1:
        raise ImageReadError(f"{source}: slices have different sizes {sorted(sizes)}")

    iop = _orientation_of(first)
    positions = [ds.get("ImagePositionPatient") for ds, _ in slices]
    if iop is None or any(p is None or len(p) != 3 for p in positions):
        warnings.append(
            "no ImagePositionPatient/ImageOrientationPatient: patient geometry unknown, "
            "slices ordered by InstanceNumber with unit spacing"
        )
        slices.sort(key=lambda item: int(item[0].get("InstanceNumber", 0) or 0))
        row_cosine, column_cosine = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        origin = np.zeros(3)
        step = np.array([0, 0, _fallback_thickness(first)])
    else:
        row_cosine = np.array(iop[:3], dtype=np.float64)
        column_cosine = np.array(iop[3:], dtype=np.float64)
        normal = np.cross(row_cosine, column_cosine)
        ipp = np.array([[float(v) for v in p] for p in positions])
        order = np.argsort(ipp @ normal, kind="stable")
        slices = [slices[i] for i in order]
        ipp = ipp[order]
        origin = ipp[0]
        step = _slice_step(source, ipp, normal, first, warnings)

    pixel_spacing = first.get("PixelSpacing") or first.get("ImagerPixelSpacing")
    if pixel_spacing is None:
        warnings.append("no PixelSpacing: using 1 mm pixels")
        row_spacing, column_spacing = 1.0, 1.0
    else:
        row_spacing, column_spacing = float(pixel_spacing[0]), float(pixel_spacing[1])

    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing  # i = column index moves along the row cosine
    lps[:3, 1] = column_cosine * row_spacing  # j = row index moves along the column cosine
    lps[:3, 2] = step
    lps[:3, 3] = origin

    stack, rescale = _pixels(source, slices, warnings)
    # (slice, row, column[, rgb]) in memory -> (column, row, slice[, rgb]) as a view.
    axes = (2, 1, 0, 3) if stack.ndim == 4 else (2, 1, 0)
    if str(first.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        warnings.append("MONOCHROME1: low values are meant to display bright")
    return Image(
        array=stack.transpose(axes),
        affine=LPS_TO_RAS @ lps,
        modality=str(first.get("Modality", "")),
        window=_window(first),
        rescale=rescale,
        path=source,
        warnings=warnings,
    )


def _fallback_thickness(dataset: pydicom.Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = dataset.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _slice_step(
    source: Path,
    ipp: np.ndarray,
    normal: np.ndarray,
    first: pydicom.Dataset,
    warnings: list[str],
) -> np.ndarray:
    """The world step (LPS mm) from one slice to the next, with warnings on irregular spacing."""
    if len(ipp) == 1:
        return normal * _fallback_thickness(first)
    distances = np.diff(ipp @ normal)
    duplicates = int(np.sum(distances < _SAME_POSITION_MM))
    if duplicates:
        raise ImageReadError(
            f"{source}: {duplicates + 1} slices share a position (several volumes, echoes or "
            "phases in one series?); not supported"
        )
    spacing = float(np.median(distances))
    deviation = float(np.max(np.abs(distances - spacing)))
    if deviation > max(_SPACING_TOLERANCE_MM, 0.01 * spacing):
        widest = int(np.argmax(distances))
        warnings.append(
            f"non-uniform slice spacing: max deviation {deviation:.2f} mm from {spacing:.4g} mm "
            f"(largest gap {distances[widest]:.2f} mm between sorted slices {widest} and "
            f"{widest + 1}: missing slices?); the affine uses {spacing:.4g} mm"
        )
    # The median step keeps gantry tilt (an in-plane shift per slice) as a sheared affine.
    step = np.median(np.diff(ipp, axis=0), axis=0)
    tilt = np.degrees(np.arccos(min(1.0, abs(float(step @ normal)) / np.linalg.norm(step))))
    if tilt > 0.01:
        warnings.append(f"slices are sheared by {tilt:.2f} degrees (gantry tilt); affine keeps it")
    return step


def _pixels(
    source: Path, slices: list[tuple[pydicom.Dataset, Path]], warnings: list[str]
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Stack the slices (slice, row, column[, rgb]) and apply the modality rescale."""
    raw = []
    for dataset, file in slices:
        try:
            raw.append(dataset.pixel_array)
        except Exception as exc:  # missing decoders for compressed syntaxes, truncated data
            raise ImageReadError(f"{file}: cannot decode pixel data ({exc})") from exc
    stack = np.stack(raw)
    pairs = [
        (
            float(ds.get("RescaleSlope", 1) or 1),
            float(ds.get("RescaleIntercept", 0) or 0),
        )
        for ds, _ in slices
    ]
    if all(pair == (1.0, 0.0) for pair in pairs):
        return stack, None
    if len(set(pairs)) > 1:
        warnings.append("rescale slope/intercept vary between slices; applied per slice")
    slopes = np.array([p[0] for p in pairs], dtype=np.float64)
    intercepts = np.array([p[1] for p in pairs], dtype=np.float64)
    integer_shift = np.all(slopes == 1) and np.all(intercepts == np.round(intercepts))
    if integer_shift and np.issubdtype(stack.dtype, np.integer):
        shifted = stack.astype(np.int32) + intercepts.astype(np.int32)[:, None, None]
        info = np.iinfo(np.int16)
        if shifted.min() >= info.min and shifted.max() <= info.max:
            return shifted.astype(np.int16), pairs[0]
        return shifted.astype(np.float32), pairs[0]  # exact: |values| < 2**24
    scaled = stack.astype(np.float32) * slopes.astype(np.float32)[:, None, None]
    scaled += intercepts.astype(np.float32)[:, None, None]
    return scaled, pairs[0]


def _window(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    if isinstance(center, pydicom.multival.MultiValue):
        center = center[0]
    if isinstance(width, pydicom.multival.MultiValue):
        width = width[0]
    try:
        return float(center), float(width)
    except (TypeError, ValueError):
        return None


def _single_multiframe(source: Path, dataset: pydicom.Dataset, warnings: list[str]) -> Image:
    raise ImageReadError(f"{source}: multi-frame DICOM files are not supported yet")

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

from core.io.errors import (
    NO_DICOM_IMAGES,
    ImageReadError,
    VolumeChoiceRequired,
    VolumeOutOfRange,
)
from core.io.geometry import LPS_TO_RAS
from core.io.image import Image
from core.memory import array_bytes, require_memory

__all__ = ["DicomSeries", "list_dicom_series", "read_dicom", "series_titles"]

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
    volumes : int
        Volumes the series holds (echoes, phases, time points): the files divided by the
        distinct slice positions when every position repeats equally, else 1. Reading such a
        series needs ``volume=``.
    number : int or None
        SeriesNumber, the number scanners show beside a series.
    date : str
        When the series was made, ``"YYYY-MM-DD HH:MM:SS"`` (as far as the file says) from
        SeriesDate/SeriesTime, else the acquisition, content or study date; ``""`` if none.
    """

    uid: str
    description: str
    modality: str
    n_slices: int
    rows: int
    columns: int
    files: tuple[Path, ...]
    volumes: int = 1
    number: int | None = None
    date: str = ""

    def title(self) -> str:
        """What tells the series apart, in words, e.g.
        ``'#3 "T1 AX" MR, 24 slices, 256 x 256, 2024-01-31 10:22:05'``; sizes are columns x rows.
        """
        number = f"#{self.number} " if self.number is not None else ""
        several = f" in {self.volumes} volumes" if self.volumes > 1 else ""
        when = f", {self.date}" if self.date else ""
        return (
            f'{number}"{self.description or "no description"}" {self.modality or "?"}, '
            f"{self.n_slices} slices{several}, {self.columns} x {self.rows}{when}"
        )

    def label(self) -> str:
        """:meth:`title` with the SeriesInstanceUID, which tells any two series apart."""
        return f"{self.title()} ({self.uid})"


def series_titles(series: list[DicomSeries]) -> list[str]:
    """One title per series for a picker; series whose titles match get their UID added.

    Returns
    -------
    list of str
        In the order of ``series``, no two equal.
    """
    titles = [s.title() for s in series]
    counts = Counter(titles)
    return [s.label() if counts[t] > 1 else t for s, t in zip(series, titles, strict=True)]


def _series_date(header: pydicom.Dataset) -> str:
    """The series' date and time from its header, ``""`` when it states none."""
    for date_key, time_key in (
        ("SeriesDate", "SeriesTime"),
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("StudyDate", "StudyTime"),
    ):
        date = str(header.get(date_key, "") or "").strip()
        if len(date) == 8 and date.isdigit():
            clock = str(header.get(time_key, "") or "").strip().split(".")[0]
            text = f"{date[:4]}-{date[4:6]}-{date[6:]}"
            if len(clock) >= 4 and clock[:4].isdigit():
                text += f" {clock[:2]}:{clock[2:4]}" + (f":{clock[4:6]}" if len(clock) >= 6 else "")
            return text
    return ""


def _series_number(header: pydicom.Dataset) -> int | None:
    try:
        value = header.get("SeriesNumber")
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


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
                volumes=_volumes_in(header for _, header in members),
                number=_series_number(first),
                date=_series_date(first),
            )
        )
    series.sort(key=lambda s: (-s.n_slices, -s.rows * s.columns, s.description, s.uid))
    return series


def _volumes_in(headers) -> int:
    """Files per slice position when every position repeats equally (multi-volume), else 1.

    Single-frame files only (a multi-frame file counts as one); positions are compared to
    1/1000 mm, as when the series is read.
    """
    per_position: Counter = Counter()
    for header in headers:
        position = header.get("ImagePositionPatient")
        if position is None or len(position) != 3 or int(header.get("NumberOfFrames", 1) or 1) > 1:
            return 1
        per_position[tuple(round(float(v), 3) for v in position)] += 1
    counts = set(per_position.values())
    return counts.pop() if len(counts) == 1 else 1


def read_dicom(
    path: str | os.PathLike[str],
    *,
    series: str | DicomSeries | None = None,
    volume: int | None = None,
) -> Image:
    """Read one DICOM file, or one series from a folder, as a volume.

    Parameters
    ----------
    path : path-like
        A DICOM file (read alone) or a folder (see :func:`list_dicom_series`).
    series : str or DicomSeries, optional
        SeriesInstanceUID to read from a folder. Without it the largest series is read and a
        warning names it and the others.
    volume : int, optional
        Which volume of a series that holds several at every slice position (echoes, phases,
        time points, b-values); required when there are several. Volumes are numbered in the
        order of the first attribute that tells them apart at every position (EchoNumbers,
        TemporalPositionIdentifier, TriggerTime, AcquisitionNumber, DiffusionBValue,
        AcquisitionTime, InstanceNumber), else of the frames in their files.

    Returns
    -------
    Image
        Voxels ``(columns, rows, slices)``; CT/PET values rescaled (``int16`` when the rescale
        is an integer shift that fits, else ``float32``); window, rescale, modality filled in.

    Raises
    ------
    ImageReadError
        Empty folder, unknown series, unreadable pixel data, inconsistent slices, a missing or
        out-of-range volume choice, or slice positions repeated unevenly (duplicates).
    """
    source = Path(path)
    warnings: list[str] = []
    if source.is_dir():
        found = list_dicom_series(source)
        if not found:
            raise ImageReadError(f"{source}: {NO_DICOM_IMAGES}")
        if series is None:
            chosen = found[0]
            if len(found) > 1:
                # One line per series: a folder of twenty series made a 900-character line.
                others = "".join(f"\n  - {s.label()}" for s in found[1:])
                warnings.append(
                    f"folder has {len(found)} series; read the largest, {chosen.label()}; "
                    f"the others (choose one with its series UID):{others}"
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
    return _assemble(source, datasets, files, warnings, volume)


@dataclass
class _Frame:
    """One 2-D plane: a single-frame file, or one frame of a multi-frame file."""

    dataset: pydicom.Dataset
    file: Path
    frame: int | None  # index into a multi-frame file's pixel array; None for single frames
    position: np.ndarray | None  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient, rounded for grouping
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing)
    rescale: tuple[float, float]  # (slope, intercept), (1, 0) when absent
    cosines: tuple[float, ...] | None = None  # the same six values unrounded, for geometry


def _raw_orientation(value: object) -> tuple[float, ...] | None:
    if value is None or len(value) != 6:
        return None
    return tuple(float(v) for v in value)


def _rounded_orientation(value: object) -> tuple[float, ...] | None:
    raw = _raw_orientation(value)
    if raw is None:
        return None
    # Rounding groups slices whose cosines differ only by printing precision; +0.0 folds -0.0.
    # Only grouping uses it: the affine uses the raw cosines, or an oblique series whose
    # cosines carry many decimals would look sheared.
    return tuple(round(v, 4) + 0.0 for v in raw)


def _spacing_of(value: object) -> tuple[float, float] | None:
    if value is None or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def _rescale_of(item: pydicom.Dataset, fallback: tuple[float, float]) -> tuple[float, float]:
    slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    if slope in (None, "") and intercept in (None, ""):
        return fallback
    return float(slope if slope not in (None, "") else 1), float(intercept or 0)


def _functional_item(dataset: pydicom.Dataset, frame: int, sequence: str) -> pydicom.Dataset:
    """An enhanced multi-frame attribute group: per-frame value, else the shared one."""
    places = (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0))
    for group, index in places:
        groups = dataset.get(group)
        if groups is not None and len(groups) > index and sequence in groups[index]:
            items = getattr(groups[index], sequence)
            if len(items):
                return items[0]
    return pydicom.Dataset()


def _frames_of(dataset: pydicom.Dataset, file: Path) -> list[_Frame]:
    """Split a file into planes with their own geometry and rescale."""
    base_rescale = _rescale_of(dataset, (1.0, 0.0))
    if "DoseGridScaling" in dataset:  # RT dose: dose in Gy = stored value * DoseGridScaling
        base_rescale = (base_rescale[0] * float(dataset.DoseGridScaling), base_rescale[1])
    base_spacing = _spacing_of(dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing"))
    base_cosines = _raw_orientation(dataset.get("ImageOrientationPatient"))
    base_orientation = _rounded_orientation(dataset.get("ImageOrientationPatient"))
    position = dataset.get("ImagePositionPatient")
    base_position = (
        None if position is None or len(position) != 3 else np.array(position, dtype=np.float64)
    )
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if count == 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        return [
            _Frame(
                dataset,
                file,
                None,
                base_position,
                base_orientation,
                base_spacing,
                base_rescale,
                base_cosines,
            )
        ]

    offsets = dataset.get("GridFrameOffsetVector")
    normal = None
    if base_cosines is not None:
        normal = np.cross(base_cosines[:3], base_cosines[3:])
        normal /= np.linalg.norm(normal)
    frames = []
    for index in range(count):
        plane = _functional_item(dataset, index, "PlanePositionSequence")
        orientation_item = _functional_item(dataset, index, "PlaneOrientationSequence")
        measures = _functional_item(dataset, index, "PixelMeasuresSequence")
        transform = _functional_item(dataset, index, "PixelValueTransformationSequence")
        orientation = (
            _rounded_orientation(orientation_item.get("ImageOrientationPatient"))
            or base_orientation
        )
        cosines = _raw_orientation(orientation_item.get("ImageOrientationPatient")) or base_cosines
        frame_position = plane.get("ImagePositionPatient")
        if frame_position is not None and len(frame_position) == 3:
            where = np.array(frame_position, dtype=np.float64)
        elif offsets is not None and base_position is not None and normal is not None:
            # RT dose grids: offsets along the normal, relative to the first frame's position.
            where = base_position + normal * (float(offsets[index]) - float(offsets[0]))
        else:
            where = None
        frames.append(
            _Frame(
                dataset,
                file,
                index,
                where,
                orientation,
                _spacing_of(measures.get("PixelSpacing")) or base_spacing,
                _rescale_of(transform, base_rescale),
                cosines,
            )
        )
    return frames


def _assemble(
    source: Path,
    datasets: list[pydicom.Dataset],
    files: list[Path],
    warnings: list[str],
    volume: int | None,
) -> Image:
    frames = [
        frame for ds, file in zip(datasets, files, strict=True) for frame in _frames_of(ds, file)
    ]
    orientations = Counter(frame.orientation for frame in frames)
    if len(orientations) > 1:
        kept, count = orientations.most_common(1)[0]
        warnings.append(
            f"series mixes {len(orientations)} slice orientations; kept the {count} of "
            f"{len(frames)} slices with orientation {kept}"
        )
        frames = [frame for frame in frames if frame.orientation == kept]
    first = frames[0]
    sizes = {(int(f.dataset.Rows), int(f.dataset.Columns)) for f in frames}
    if len(sizes) > 1:
        raise ImageReadError(f"{source}: slices have different sizes {sorted(sizes)}")

    if first.orientation is None or any(f.position is None for f in frames):
        if volume not in (None, 0):
            raise VolumeOutOfRange(
                f"{source}: volume {volume} requested but without slice positions the series "
                "cannot be split into volumes"
            )
        warnings.append(
            "no ImagePositionPatient/ImageOrientationPatient: patient geometry unknown, "
            "slices kept in InstanceNumber/frame order with unit spacing"
        )
        frames.sort(key=lambda f: (int(f.dataset.get("InstanceNumber", 0) or 0), f.frame or 0))
        row_cosine, column_cosine = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        origin = np.zeros(3)
        step = np.array([0, 0, _fallback_thickness(first.dataset)])
    else:
        cosines = first.cosines or first.orientation
        row_cosine = np.array(cosines[:3], dtype=np.float64)
        column_cosine = np.array(cosines[3:], dtype=np.float64)
        normal = np.cross(row_cosine, column_cosine)
        normal /= np.linalg.norm(normal)
        ipp = np.array([f.position for f in frames])
        order = np.argsort(ipp @ normal, kind="stable")
        frames = [frames[i] for i in order]
        frames = _one_volume(source, frames, ipp[order] @ normal, volume, warnings)
        ipp = np.array([f.position for f in frames])
        origin = ipp[0]
        step = _slice_step(source, ipp, normal, first.dataset, warnings)

    if first.pixel_spacing is None:
        warnings.append("no PixelSpacing: using 1 mm pixels")
        row_spacing, column_spacing = 1.0, 1.0
    else:
        row_spacing, column_spacing = first.pixel_spacing

    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing  # i = column index moves along the row cosine
    lps[:3, 1] = column_cosine * row_spacing  # j = row index moves along the column cosine
    lps[:3, 2] = step
    lps[:3, 3] = origin

    stack, rescale = _pixels(frames, warnings)
    # (slice, row, column[, rgb]) in memory -> (column, row, slice[, rgb]) as a view.
    axes = (2, 1, 0, 3) if stack.ndim == 4 else (2, 1, 0)
    if str(first.dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        warnings.append("MONOCHROME1: low values are meant to display bright")
    return Image(
        array=stack.transpose(axes),
        affine=LPS_TO_RAS @ lps,
        modality=str(first.dataset.get("Modality", "")),
        window=_window(first.dataset),
        rescale=rescale,
        path=source,
        warnings=warnings,
    )


#: Attributes that tell the volumes of a multi-volume series apart, in order of preference.
_VOLUME_KEYS = (
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "TriggerTime",
    "AcquisitionNumber",
    "DiffusionBValue",
    "AcquisitionTime",
    "InstanceNumber",
)


def _volume_value(frame: _Frame, keyword: str) -> object:
    """A frame's value of ``keyword`` (float when numeric), or None.

    None for every frame of a multi-frame file: its per-file attributes cannot tell its frames
    apart, so such volumes fall back to frame order.
    """
    if frame.frame is not None:
        return None
    value = frame.dataset.get(keyword)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _one_volume(
    source: Path,
    frames: list[_Frame],
    along_normal: np.ndarray,
    volume: int | None,
    warnings: list[str],
) -> list[_Frame]:
    """The frames of one volume of a series that may hold several at each slice position.

    ``frames`` are sorted along the normal and ``along_normal`` holds their positions on it.
    A series with the same number n of frames at every position holds n volumes; anything else
    with a repeated position is refused (duplicate slices are not a volume).
    """
    starts = np.flatnonzero(np.diff(along_normal, prepend=-np.inf) >= _SAME_POSITION_MM)
    sizes = np.diff(np.append(starts, len(frames)))
    if sizes.max() == 1:
        if volume not in (None, 0):
            raise VolumeOutOfRange(f"{source}: volume {volume} requested but the series has one")
        return frames
    n_volumes = int(sizes[0])
    if np.any(sizes != n_volumes):
        raise ImageReadError(
            f"{source}: {int(sizes.max())} slices share a position while other positions have "
            f"{int(sizes.min())} (duplicate slices, or an incomplete multi-volume series); "
            "not supported"
        )
    groups = [frames[start : start + n_volumes] for start in starts]
    keyword, ranked = _volume_order(groups)
    described = _describe_volumes(groups, keyword) + f"; {len(groups)} slices each"
    if volume is None:
        raise VolumeChoiceRequired(
            source, n_volumes, f"4-D image with {n_volumes} volumes", described
        )
    if not 0 <= volume < n_volumes:
        raise VolumeOutOfRange(
            f"{source}: volume {volume} out of range (series has {n_volumes} volumes)"
        )
    warnings.append(f"series holds {n_volumes} volumes ({described}); showing volume {volume}")
    return [group[ranked[g][volume]] for g, group in enumerate(groups)]


def _describe_volumes(groups: list[list[_Frame]], keyword: str | None) -> str:
    """``"by EchoNumbers: 1, 2"``; only the keyword when positions differ in their values."""
    if keyword is None:
        return "in file order"
    value_sets = {tuple(sorted(_volume_value(f, keyword) for f in group)) for group in groups}
    if len(value_sets) > 1:
        return f"by {keyword}"
    values = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value_sets.pop())
    return f"by {keyword}: {values}"


def _volume_order(groups: list[list[_Frame]]) -> tuple[str | None, list[list[int]]]:
    """The attribute that separates the frames at every position, and each group's order by it.

    Returns the keyword (None when none separates them: then the frames keep their file and
    frame order) and, per position, the frame indices sorted by volume.
    """
    for keyword in _VOLUME_KEYS:
        orders = []
        for group in groups:
            values = [_volume_value(frame, keyword) for frame in group]
            kinds = {type(v) for v in values}
            if None in values or len(set(values)) < len(values) or len(kinds) > 1:
                break
            orders.append(sorted(range(len(group)), key=values.__getitem__))
        else:
            return keyword, orders
    fallback = [
        sorted(range(len(g)), key=lambda i, g=g: (str(g[i].file), g[i].frame or 0)) for g in groups
    ]
    return None, fallback


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
    distances = np.diff(ipp @ normal)  # positive: _one_volume left one frame per position
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
    frames: list[_Frame], warnings: list[str]
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Stack the planes (slice, row, column[, rgb]) and apply the modality rescale."""
    _check_pixel_memory(frames)
    decoded: dict[int, np.ndarray] = {}  # one decode per file, even with many frames
    planes = []
    for frame in frames:
        key = id(frame.dataset)
        if key not in decoded:
            try:
                decoded[key] = frame.dataset.pixel_array
            except Exception as exc:  # missing decoders for compressed syntaxes, truncated data
                text = " ".join(str(exc).split())[:200]
                raise ImageReadError(f"{frame.file}: cannot decode pixel data ({text})") from exc
        pixels = decoded[key]
        single = int(frame.dataset.get("NumberOfFrames", 1) or 1) == 1  # no frame axis then
        planes.append(pixels if frame.frame is None or single else pixels[frame.frame])
    stack = np.stack(planes)
    pairs = [frame.rescale for frame in frames]
    if all(pair == (1.0, 0.0) for pair in pairs):
        return stack, None
    if len(set(pairs)) > 1:
        warnings.append("rescale slope/intercept vary between slices; applied per slice")
    per_slice = (-1,) + (1,) * (stack.ndim - 1)
    slopes = np.array([p[0] for p in pairs], dtype=np.float64).reshape(per_slice)
    intercepts = np.array([p[1] for p in pairs], dtype=np.float64).reshape(per_slice)
    integer_shift = np.all(slopes == 1) and np.all(intercepts == np.round(intercepts))
    if integer_shift and np.issubdtype(stack.dtype, np.integer):
        shifted = stack.astype(np.int32) + intercepts.astype(np.int32)
        info = np.iinfo(np.int16)
        if shifted.min() >= info.min and shifted.max() <= info.max:
            return shifted.astype(np.int16), pairs[0]
        return shifted.astype(np.float32), pairs[0]  # exact: |values| < 2**24
    scaled = stack.astype(np.float32) * slopes.astype(np.float32)
    scaled += intercepts.astype(np.float32)
    return scaled, pairs[0]


def _header_int(dataset: pydicom.Dataset, keyword: str, default: int) -> int:
    try:
        return max(int(dataset.get(keyword, default) or default), 0)
    except (TypeError, ValueError):
        return default


def _check_pixel_memory(frames: list[_Frame]) -> None:
    """Refuse a series whose headers ask for more pixels than the memory can hold.

    Counts each file's decoded pixel data (rows x columns x frames x samples x bytes) plus the
    stacked volume and its rescaled float32 copy, all before anything is decoded.
    """
    datasets = {id(frame.dataset): frame.dataset for frame in frames}
    decoded = 0
    for dataset in datasets.values():
        bits = _header_int(dataset, "BitsAllocated", 16)
        decoded += array_bytes(
            (
                _header_int(dataset, "Rows", 0),
                _header_int(dataset, "Columns", 0),
                _header_int(dataset, "NumberOfFrames", 1) or 1,
                _header_int(dataset, "SamplesPerPixel", 1) or 1,
            ),
            max(1, (bits + 7) // 8),
        )
    first = frames[0].dataset
    plane = array_bytes(
        (
            _header_int(first, "Rows", 0),
            _header_int(first, "Columns", 0),
            _header_int(first, "SamplesPerPixel", 1) or 1,
        ),
        4,
    )
    source = frames[0].file if len(datasets) == 1 else frames[0].file.parent
    require_memory(
        decoded + 2 * plane * len(frames),
        f"{source}: reading the pixel data of {len(frames)} slice(s) of "
        f"{_header_int(first, 'Rows', 0)}x{_header_int(first, 'Columns', 0)}",
    )


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

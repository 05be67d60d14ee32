"""Window/level: the preset table, the default window of an image, and level conversion.

A window is ``(center, width)`` in image intensity units (Hounsfield units for CT); the
display maps ``center - width / 2`` to black and ``center + width / 2`` to white.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "WINDOW_PRESETS",
    "WindowPreset",
    "default_window",
    "format_window",
    "image_presets",
    "levels_to_window",
    "preset_for_key",
    "round_window",
    "window_to_levels",
]

# Beyond this many voxels the percentile default is computed on an evenly strided sample:
# a full sort of a 512x512x300 CT takes about a second, a 2-million-voxel sample a few tens
# of milliseconds, and the 0.1/99.9 percentiles of a regular sample differ negligibly.
_PERCENTILE_SAMPLE = 2_000_000


@dataclass(frozen=True)
class WindowPreset:
    """A named CT window bound to a number key.

    Parameters
    ----------
    key : str
        The number key that applies it (``"1"`` ... ``"9"``).
    name : str
        Name shown in the preset list.
    center, width : float
        Window center (level) and width in Hounsfield units.
    """

    key: str
    name: str
    center: float
    width: float

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(
                f"window preset {self.name!r} needs a positive width, got {self.width}"
            )

    @property
    def label(self) -> str:
        """Text for the preset list, e.g. ``"1  Soft tissue  W400 L40"``."""
        return f"{self.key}  {self.name}  {format_window(self.center, self.width, space='')}"


# OHIF's CT presets plus Slicer's CT-Bone; key 0 is reserved for the image's default window.
WINDOW_PRESETS: tuple[WindowPreset, ...] = (
    WindowPreset("1", "Soft tissue", 40.0, 400.0),
    WindowPreset("2", "Lung", -600.0, 1500.0),
    WindowPreset("3", "Bone", 480.0, 2500.0),
    WindowPreset("4", "Brain", 40.0, 80.0),
    WindowPreset("5", "Liver", 90.0, 150.0),
    WindowPreset("6", "Bone (narrow)", 400.0, 1000.0),
)


def preset_for_key(
    key: str, presets: tuple[WindowPreset, ...] = WINDOW_PRESETS
) -> WindowPreset | None:
    """Return the preset of ``presets`` bound to a number key, or None when the key has none."""
    for preset in presets:
        if preset.key == key:
            return preset
    return None


def _window_step(width: float) -> float:
    """The rounding step of a window: whole units from a width of 10 (HU, MR signal, 8-bit
    pixels), else three significant digits of the width (0-1 float images)."""
    if not np.isfinite(width) or width <= 0 or width >= 10:
        return 1.0
    return float(10.0 ** (np.floor(np.log10(width)) - 2))


def round_window(center: float, width: float) -> tuple[float, float]:
    """Round ``(center, width)`` as a reader states it: W 1830 L 37, not W 1830.13 L 37.0635.

    The width never rounds to zero (the step is at most a hundredth of it below 10).
    """
    step = _window_step(width)
    decimals = max(0, -int(np.floor(np.log10(step))))
    return round(round(center / step) * step, decimals), round(
        max(round(width / step), 1) * step, decimals
    )


def format_window(center: float, width: float, *, space: str = " ") -> str:
    """``"W 1830 L 37"`` (``space=""``: ``"W1830 L37"``), rounded as :func:`round_window`."""
    center, width = round_window(center, width)
    return f"W{space}{width:g} L{space}{center:g}"


def _finite_sample(array: np.ndarray) -> np.ndarray:
    """The finite values of ``array``, or an evenly strided sample of them for a big one."""
    # ravel in memory order: reshape(-1) of a Fortran-ordered (nibabel) volume copies all of it.
    flat = np.asarray(array).ravel(order="K")
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE + 1]
    if np.issubdtype(flat.dtype, np.floating):
        flat = flat[np.isfinite(flat)]
    return flat


def _looks_like_ct(array: np.ndarray, modality: str, natural: bool) -> bool:
    """CT by its modality, or (no modality, as in NIfTI) by Hounsfield air: at least 1 % of the
    voxels at -900 or below (an MR with a few negative values, such as nibabel's
    anatomical.nii down to -610, is not CT)."""
    if modality:
        return modality.upper() == "CT"
    if natural:
        return False
    sample = _finite_sample(array)
    return bool(sample.size) and float(np.percentile(sample, 1.0)) <= -900.0


def image_presets(
    array: np.ndarray, *, modality: str = "", natural: bool = False
) -> tuple[WindowPreset, ...]:
    """The number-key presets that fit an image.

    CT (by modality, or a NIfTI whose values reach Hounsfield air) gets the CT presets in HU
    (:data:`WINDOW_PRESETS`). Anything else (MR, PET, photographs) has no fixed units: it gets
    the 1-99 percentile range (key 1) and the full range from the lowest to the highest value
    (key 2). Key 0 stays the image's default window either way.

    Parameters
    ----------
    array : numpy.ndarray
        The image's values (RGB channels pooled); big arrays are sampled.
    modality : str
        DICOM-style modality, ``""`` when unknown.
    natural : bool
        A photograph or other natural image.
    """
    if _looks_like_ct(array, modality, natural):
        return WINDOW_PRESETS
    sample = _finite_sample(array)
    if sample.size == 0:
        return ()
    presets = []
    for key, name, (low, high) in (
        ("1", "Percentiles 1-99 %", np.percentile(sample, (1.0, 99.0))),
        ("2", "Full range", (sample.min(), sample.max())),
    ):
        low, high = float(low), float(high)
        if high > low:
            presets.append(WindowPreset(key, name, *round_window(*levels_to_window(low, high))))
    return tuple(presets)


def window_to_levels(center: float, width: float) -> tuple[float, float]:
    """Convert ``(center, width)`` to display levels ``(low, high)``.

    Raises
    ------
    ValueError
        When ``width`` is not positive.
    """
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    return float(center) - float(width) / 2.0, float(center) + float(width) / 2.0


def levels_to_window(low: float, high: float) -> tuple[float, float]:
    """Convert display levels ``(low, high)`` back to ``(center, width)``."""
    if not high > low:
        raise ValueError(f"display levels need high > low, got ({low}, {high})")
    return (float(low) + float(high)) / 2.0, float(high) - float(low)


def default_window(
    array: np.ndarray,
    *,
    dicom_window: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (0.1, 99.9),
) -> tuple[float, float]:
    """Choose the initial window of an image.

    Parameters
    ----------
    array : numpy.ndarray
        Image intensities (any shape; RGB channels are pooled).
    dicom_window : tuple of float or None
        ``(center, width)`` stored in the file; used as-is when given with a positive width.
    percentiles : tuple of float
        Lower and upper percentiles of the finite intensities used otherwise.

    Returns
    -------
    tuple of float
        ``(center, width)`` with ``width > 0``, percentile windows rounded by
        :func:`round_window`. A constant image gets width 1 around its value; an image with
        no finite voxel gets ``(0.5, 1.0)``.
    """
    if dicom_window is not None and dicom_window[1] > 0:
        return float(dicom_window[0]), float(dicom_window[1])
    flat = _finite_sample(array)
    if flat.size == 0:
        return 0.5, 1.0
    low, high = np.percentile(flat, percentiles)
    if not high > low:
        return float(low), 1.0
    return round_window(*levels_to_window(float(low), float(high)))

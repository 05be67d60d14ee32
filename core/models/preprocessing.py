"""Named intensity transforms a model spec lists under ``"preprocessing"``.

Each transform takes a float32 array with the channel axis first, ``(C, *spatial)``, plus the
parameters from the spec, and returns an array of the same shape. They run in the order listed.

``ct_window``  ``{"center": 40, "width": 400}``
    Clip to ``[center - width/2, center + width/2]`` (a CT display window in HU) and scale that
    range linearly to [0, 1].
``zscore``  ``{"mean": m, "std": s}`` or ``{"nonzero": true}``
    Subtract a mean and divide by a standard deviation. With fixed ``mean``/``std`` (dataset
    statistics) they are used as given; otherwise they are measured on this image, over all
    voxels or, with ``nonzero``, over voxels that are not 0 (MR background).
``percentile``  ``{"lower": 0.5, "upper": 99.5}``
    Clip to the image's lower/upper percentiles and scale that range to [0, 1].
``rgb_meanstd``  ``{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 255}``
    Divide by ``scale`` then normalise each channel with its mean and standard deviation
    (the ImageNet convention).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Transform",
    "apply_preprocessing",
    "known_transforms",
    "register_transform",
]

Transform = Callable[..., np.ndarray]

_TRANSFORMS: dict[str, Transform] = {}


def register_transform(name: str, transform: Transform) -> None:
    """Make ``transform(array, **parameters) -> array`` available under ``name``."""
    existing = _TRANSFORMS.get(name)
    if existing is not None and existing is not transform:
        raise ValueError(f"preprocessing transform {name!r} is already registered")
    _TRANSFORMS[name] = transform


def known_transforms() -> tuple[str, ...]:
    """Names of the registered transforms, sorted."""
    return tuple(sorted(_TRANSFORMS))


def apply_preprocessing(
    array: np.ndarray, steps: Sequence[Mapping[str, Any]], *, copy: bool = True
) -> np.ndarray:
    """Run the spec's transforms in order on a ``(C, *spatial)`` array.

    Parameters
    ----------
    array : numpy.ndarray
        Channel-first image; converted to float32.
    steps : sequence of dict
        ``{"name": ..., **parameters}`` per transform.
    copy : bool
        Work on a copy (default). False lets a float32 input be changed in place, which saves
        a volume-sized copy when the caller made the array itself.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape.
    """
    out = np.array(array, dtype=np.float32, copy=True) if copy else np.asarray(array, np.float32)
    for index, step in enumerate(steps):
        parameters = dict(step)
        name = parameters.pop("name", None)
        transform = _TRANSFORMS.get(name)
        if transform is None:
            raise ValueError(
                f"preprocessing[{index}]: unknown transform {name!r} "
                f"(known: {', '.join(known_transforms())})"
            )
        try:
            out = transform(out, **parameters)
        except TypeError as error:
            raise ValueError(f"preprocessing[{index}] {name!r}: bad parameters ({error})") from None
    return out


def ct_window(array: np.ndarray, *, center: float, width: float) -> np.ndarray:
    """Clip to a CT window and scale it to [0, 1]."""
    if width <= 0:
        raise ValueError(f"ct_window width must be positive, got {width}")
    low = center - width / 2.0
    np.clip(array, low, low + width, out=array)
    array -= low
    array /= width
    return array


def zscore(
    array: np.ndarray,
    *,
    mean: float | None = None,
    std: float | None = None,
    nonzero: bool = False,
) -> np.ndarray:
    """Standardise intensities with given or measured mean and standard deviation."""
    if mean is None or std is None:
        values = array[array != 0] if nonzero else array
        if values.size == 0:
            values = array
        mean = float(values.mean(dtype=np.float64)) if mean is None else mean
        std = float(values.std(dtype=np.float64)) if std is None else std
    array -= mean
    # A constant image has std 0: leave it centred rather than dividing by zero.
    array /= std if std > 0 else 1.0
    return array


def percentile(array: np.ndarray, *, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the image's percentiles and scale that range to [0, 1]."""
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentile needs 0 <= lower < upper <= 100, got {lower}, {upper}")
    low, high = np.percentile(array, [lower, upper])
    np.clip(array, low, high, out=array)
    array -= low
    array /= (high - low) if high > low else 1.0
    return array


def rgb_meanstd(
    array: np.ndarray,
    *,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    scale: float = 255.0,
) -> np.ndarray:
    """Scale to [0, 1] by ``scale`` and normalise each channel (channel axis first)."""
    if len(mean) != array.shape[0] or len(std) != array.shape[0]:
        raise ValueError(
            f"rgb_meanstd has {len(mean)} means and {len(std)} stds for {array.shape[0]} channels"
        )
    shape = (-1,) + (1,) * (array.ndim - 1)
    array /= scale
    array -= np.asarray(mean, dtype=np.float32).reshape(shape)
    array /= np.asarray(std, dtype=np.float32).reshape(shape)
    return array


register_transform("ct_window", ct_window)
register_transform("zscore", zscore)
register_transform("percentile", percentile)
register_transform("rgb_meanstd", rgb_meanstd)

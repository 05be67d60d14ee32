"""Turning an :class:`~core.io.image.Image` into what a model's first layer expects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.io.channels import with_channel_files
from core.io.image import Image
from core.models.loaded import LoadedModel
from core.models.preprocessing import apply_preprocessing

__all__ = ["check_model_voxels", "model_input"]

# ITU-R BT.601 luma weights: the usual grey value of an RGB pixel.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def check_model_voxels(image: Image) -> None:
    """Refuse, naming the file, voxels no model can take: NaN/Inf or a non-numeric type."""
    array = image.array
    where = f"{image.path}: " if image.path is not None else ""
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{where}voxels of type {array.dtype} cannot be fed to a model")
    if array.dtype.kind == "f":
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"{where}{bad} of {array.size} voxels are NaN or infinite; a model cannot "
                "segment them (replace them in the file first)"
            )


def model_input(model: LoadedModel, image: Image) -> np.ndarray:
    """Channel-first, preprocessed float32 array ``(Cin, I, J, K)`` for ``model``.

    Grey images feeding a 3-channel model are repeated on the three channels; RGB images feeding
    a 1-channel model are converted to grey (BT.601 luma). A natural image deeper than 8 bits
    fed to a model whose preprocessing divides by 255 is first scaled from its type's range to
    0-255. The spec's preprocessing then runs on the whole image, so statistics such as
    percentiles are the image's, not a slice's.

    Parameters
    ----------
    model : LoadedModel
        Supplies ``in_channels`` and the preprocessing steps.
    image : Image
        Array ``(I, J, K)`` or ``(I, J, K, 3)``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(in_channels, I, J, K)``.

    Raises
    ------
    ValueError
        Naming the image file: NaN or infinite voxels, a non-numeric voxel type, or a channel
        count the model cannot take.
    """
    spec = model.spec
    array = image.array
    where = f"{image.path}: " if image.path is not None else ""
    check_model_voxels(image)
    if image.is_rgb:
        channels = np.moveaxis(array, -1, 0).astype(np.float32)
        if spec.in_channels == 1:
            channels = np.tensordot(_LUMA, channels, axes=1)[np.newaxis]
    elif image.extra_channels:
        channels = np.stack(
            [np.asarray(c.array, dtype=np.float32) for c in with_channel_files(image, 1)]
        )
    else:
        channels = array.astype(np.float32)[np.newaxis]
        if spec.in_channels == 3:
            channels = np.repeat(channels, 3, axis=0)
    if channels.shape[0] != spec.in_channels:
        raise ValueError(
            f"{where}image has {channels.shape[0]} channel(s) but model {model.name!r} expects "
            f"{spec.in_channels}"
        )
    if image.is_natural and _expects_8_bit(spec.preprocessing) and array.dtype.itemsize > 1:
        if array.dtype.kind in "iu":
            # A 16-bit photograph divided by 255 would reach 257: scale its range to 8 bits.
            channels *= np.float32(255.0 / np.iinfo(array.dtype).max)
        elif array.dtype.kind == "f" and float(np.max(array, initial=0.0)) <= 1.0:
            channels *= np.float32(255.0)  # a float picture in [0, 1]
    return apply_preprocessing(channels, spec.preprocessing, copy=False)


def _expects_8_bit(steps: Sequence[Mapping[str, Any]]) -> bool:
    """True when the first transform divides by 255 (the model was trained on 8-bit pictures)."""
    if not steps:
        return False
    first = steps[0]
    return first.get("name") == "rgb_meanstd" and float(first.get("scale", 255.0)) == 255.0

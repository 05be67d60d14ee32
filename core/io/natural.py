"""Natural 2-D images (PNG, JPEG, TIFF, BMP) as ``(H, W, 1)`` or ``(H, W, 1, 3)`` volumes.

Rows become voxel axis i (top to bottom), columns axis j (left to right), k is a single slice,
and the affine is the identity (1 mm pixels), so masks and metrics treat them like volumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.io

from core.io.errors import ImageReadError, VolumeChoiceRequired
from core.io.image import Image

__all__ = ["read_natural", "read_natural_pixels"]


def read_natural_pixels(path: Path, *, volume: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode a natural image to ``(H, W)`` or ``(H, W, 3)`` plus warnings.

    Alpha is dropped (with a warning when it is not fully opaque), grey+alpha becomes grey, a
    multi-page TIFF needs ``volume`` to pick a page; 1-bit images stay boolean (the caller
    decides: 0/255 for display, 0/1 for masks).

    Raises
    ------
    ImageReadError
        Unreadable file, unsupported channel layout, missing or bad page choice.
    """
    try:
        pixels = np.asarray(skimage.io.imread(path))
    except Exception as exc:  # imageio/Pillow raise many types for damaged files
        text = " ".join(str(exc).split())[:200]
        raise ImageReadError(f"{path}: cannot decode image ({text})") from exc
    warnings: list[str] = []
    if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] not in (1, 2, 3, 4)):
        pages = pixels.shape[0]
        if volume is None:
            raise VolumeChoiceRequired(path, pages, f"{pages} pages/frames")
        if not 0 <= volume < pages:
            raise ImageReadError(f"{path}: volume {volume} out of range ({pages} pages)")
        pixels = pixels[volume]
    if pixels.ndim == 3:
        channels = pixels.shape[-1]
        if channels in (2, 4):
            alpha = pixels[..., -1]
            opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1
            if np.any(alpha != opaque):
                warnings.append("transparency (alpha channel) ignored")
            pixels = pixels[..., :-1]
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3):
        raise ImageReadError(f"{path}: unsupported pixel layout {pixels.shape}")
    return pixels, warnings


def read_natural(path: Path, *, volume: int | None = None) -> Image:
    """Read a PNG/JPEG/TIFF/BMP file as an :class:`Image` with ``is_natural=True``.

    Grey images keep their dtype (8- or 16-bit); colour images are ``(H, W, 1, 3)``.
    """
    pixels, warnings = read_natural_pixels(path, volume=volume)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255  # 1-bit pictures display as black and white
    array = pixels[:, :, np.newaxis]
    return Image(
        array=array,
        affine=np.eye(4),
        path=path,
        warnings=warnings,
        is_natural=True,
    )

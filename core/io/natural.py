"""Natural 2-D images (PNG, JPEG, TIFF, BMP) as ``(H, W, 1)`` or ``(H, W, 1, 3)`` volumes.

Rows become voxel axis i (top to bottom), columns axis j (left to right), k is a single slice,
and the affine is the identity (1 mm pixels), so masks and metrics treat them like volumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import tifffile

from core.io.errors import ImageReadError, VolumeChoiceRequired, VolumeOutOfRange
from core.io.image import Image
from core.memory import array_bytes, require_memory

__all__ = ["read_natural", "read_natural_pixels"]


#: Pillow modes converted to RGB(A) before reading: palettes, CMYK/YCCK (Pillow's libjpeg turns
#: YCCK into CMYK and undoes Adobe's inverted CMYK), other colour spaces.
_TO_RGB = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB"}
#: Modes read as they are: 1-bit, 8-bit grey (+alpha), 16/32-bit grey, float, RGB(A).
_DIRECT = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F", "RGB", "RGBA"}


def read_natural_pixels(path: Path, *, volume: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode one page of a natural image to ``(H, W)`` or ``(H, W, 3)`` plus warnings.

    Alpha is dropped (with a warning when it is not fully opaque), grey+alpha becomes grey,
    CMYK and other colour spaces become RGB, palettes their colours. A file with several pages
    or frames (multi-page TIFF, animated GIF/PNG) needs ``volume`` to pick one, and only that
    page is decoded; a page count is never guessed from the array's shape. 1-bit images stay
    boolean (the caller decides: 0/255 for display, 0/1 for masks). The size in the header is
    checked against the available memory before any pixel is decoded.

    Raises
    ------
    ImageReadError
        Unreadable file, unsupported channel layout, missing or bad page choice.
    MemoryLimitError
        The page would not fit in memory.
    """
    warnings: list[str] = []
    if path.suffix.lower() in (".tif", ".tiff"):
        pixels = _read_tiff_page(path, volume, warnings)
    else:
        pixels = _read_pillow_frame(path, volume, warnings)
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
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        raise ImageReadError(f"{path}: unsupported pixel layout {pixels.shape}")
    return pixels, warnings


def _page_index(path: Path, volume: int | None, pages: int) -> int:
    if pages > 1:
        if volume is None:
            raise VolumeChoiceRequired(path, pages, f"{pages} pages/frames")
        if not 0 <= volume < pages:
            raise VolumeOutOfRange(f"{path}: volume {volume} out of range ({pages} pages)")
        return volume
    if volume not in (None, 0):
        raise VolumeOutOfRange(f"{path}: volume {volume} requested but the file has one page")
    return 0


def _decode_failure(path: Path, exc: BaseException) -> ImageReadError:
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    return ImageReadError(f"{path}: cannot decode image ({text})")


def _read_pillow_frame(path: Path, volume: int | None, warnings: list[str]) -> np.ndarray:
    try:
        picture = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path}: the header claims more pixels than Pillow's decompression-bomb limit "
            f"({PIL.Image.MAX_IMAGE_PIXELS} pixels); refusing to decode it"
        ) from exc
    except Exception as exc:  # Pillow raises many types for damaged or unknown files
        raise _decode_failure(path, exc) from exc
    with picture:
        index = _page_index(path, volume, int(getattr(picture, "n_frames", 1) or 1))
        width, height = picture.size
        bands = len(picture.getbands())
        require_memory(
            array_bytes((height, width, max(bands, 3)), 4),
            f"{path}: decoding its {width}x{height} pixels (page {index})",
        )
        try:
            picture.seek(index)
            mode = picture.mode
            if mode in ("P", "PA"):
                has_alpha = mode == "PA" or "transparency" in picture.info
                picture = picture.convert("RGBA" if has_alpha else "RGB")
            elif mode in _TO_RGB:
                picture = picture.convert(_TO_RGB[mode])
                warnings.append(f"{mode} colours converted to RGB")
            elif mode not in _DIRECT:
                picture = picture.convert("RGBA" if "A" in mode else "RGB")
            return np.array(picture)  # writable (asarray of a Pillow image is read-only)
        except Exception as exc:
            raise _decode_failure(path, exc) from exc


def _read_tiff_page(path: Path, volume: int | None, warnings: list[str]) -> np.ndarray:
    try:
        tiff = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error ...
        raise _decode_failure(path, exc) from exc
    with tiff:
        pages = tiff.pages
        index = _page_index(path, volume, len(pages))
        try:
            page = pages[index]
            shape, dtype, axes = page.shape, page.dtype, page.axes
        except Exception as exc:
            raise _decode_failure(path, exc) from exc
        if dtype is None:
            raise ImageReadError(f"{path}: page {index} has a sample format segbench cannot read")
        require_memory(
            array_bytes(shape, max(dtype.itemsize, 4)),
            f"{path}: decoding page {index} of {'x'.join(map(str, shape))} {dtype} samples",
        )
        try:
            pixels = page.asarray()
        except Exception as exc:
            raise _decode_failure(path, exc) from exc
        photometric = int(page.photometric)
        colormap = page.colormap
    if axes.startswith("S") and pixels.ndim == 3:
        pixels = np.moveaxis(pixels, 0, -1)  # planar (one plane per colour) to interleaved
    elif axes not in ("YX", "YXS") and pixels.ndim != 2:
        raise ImageReadError(f"{path}: page {index} has axes {axes}, not a 2-D picture")
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE and pixels.ndim == 2:
        # 0 is white: invert, so larger values stay brighter as everywhere else.
        pixels = ~pixels if pixels.dtype.kind == "u" else pixels.max() - pixels
        warnings.append("white-is-zero grey values inverted")
    elif photometric == tifffile.PHOTOMETRIC.PALETTE and colormap is not None:
        table = np.asarray(colormap).T  # (levels, 3), 16-bit colours
        pixels = (table[np.clip(pixels, 0, len(table) - 1)] >> 8).astype(np.uint8)
    elif photometric == tifffile.PHOTOMETRIC.SEPARATED and pixels.ndim == 3:
        pixels = _cmyk_to_rgb(pixels[..., :4], path)
        warnings.append("CMYK colours converted to RGB")
    return pixels


def _cmyk_to_rgb(cmyk: np.ndarray, path: Path) -> np.ndarray:
    """Naive CMYK to RGB (ink coverage subtracted from white), as Pillow does for JPEGs."""
    if cmyk.shape[-1] != 4 or cmyk.dtype.kind != "u":
        raise ImageReadError(f"{path}: CMYK pixels of shape {cmyk.shape} are not supported")
    top = float(np.iinfo(cmyk.dtype).max)
    ink = cmyk.astype(np.float32) / top
    rgb = (1.0 - ink[..., :3]) * (1.0 - ink[..., 3:4])
    return np.round(rgb * top).astype(cmyk.dtype)


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

"""Multi-channel cases stored one file per channel, as nnU-Net names them.

nnU-Net's raw data keeps channel ``c`` of case ``name`` in ``name_{c:04d}.nii.gz``
(``case_0000``, ``case_0001``, ...). Opening ``case_0000`` of a model with four input channels
reads the other three beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.io.image import Image

__all__ = ["channel_files", "with_channel_files"]

_CHANNEL_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<suffix>\.[A-Za-z][\w.]*)$")


def channel_files(path: Path, count: int) -> list[Path]:
    """The ``count`` channel files of the case ``path`` is channel 0 of.

    Raises
    ------
    ValueError
        ``path`` is not named ``<case>_0000.<ext>``, or a channel file is missing; the message
        names the file and what is expected.
    """
    match = _CHANNEL_NAME.match(path.name)
    if match is None or match["channel"] != "0000":
        raise ValueError(
            f"{path}: the model needs {count} input channels; name the channel files "
            f"<case>_0000{''.join(path.suffixes)} ... <case>_{count - 1:04d} (nnU-Net's naming) "
            "and open the _0000 file"
        )
    files = [path.with_name(f"{match['case']}_{c:04d}{match['suffix']}") for c in range(count)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise ValueError(
            f"{path}: the model needs {count} input channels but {', '.join(missing)} "
            "is missing beside it"
        )
    return files


def with_channel_files(image: Image, count: int) -> list[Image]:
    """``image`` and its further channels: those it carries, else the files beside it.

    Parameters
    ----------
    image : Image
        Channel 0 of a case (its ``extra_channels`` already filled, or read from a
        ``<case>_0000`` file).
    count : int
        Input channels the model expects.

    Returns
    -------
    list of Image
        ``count`` images on one grid when the files are there; otherwise what ``image``
        carries, so the caller's channel check reports the mismatch in words.
    """
    from core.io.reader import read_image

    channels = [image, *image.extra_channels]
    if count <= len(channels) or image.path is None or image.is_rgb:
        return channels
    return [image] + [read_image(p) for p in channel_files(image.path, count)[1:]]

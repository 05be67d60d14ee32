"""Reading the image a command names, with ``--series`` and ``--volume`` as the user chose them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.cli.errors import UsageError

if TYPE_CHECKING:  # read lazily so `main.py --help` does not import the readers
    from core.io import Image

__all__ = ["read_chosen_image"]


def read_chosen_image(path: str, *, series: str | None = None, volume: int | None = None) -> Image:
    """``core.io.read_image`` for a command: a missing or impossible volume choice is a usage
    error (exit 2) that names ``--volume``, not a failure (exit 1).

    Returns
    -------
    core.io.Image
    """
    from core.io import VolumeChoiceRequired, VolumeOutOfRange, read_image

    try:
        return read_image(path, series=series, volume=volume)
    except VolumeChoiceRequired as exc:
        raise UsageError(exc.explain("--volume ")) from exc
    except VolumeOutOfRange as exc:
        raise UsageError(f"--volume {volume}: {exc}") from exc

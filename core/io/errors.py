"""The error types every image or mask reader raises for bad input."""

from __future__ import annotations

import os

__all__ = ["NO_DICOM_IMAGES", "ImageReadError", "VolumeChoiceRequired", "VolumeOutOfRange"]

#: The one wording for a folder that holds no DICOM image (readers, ``info``, the GUI).
NO_DICOM_IMAGES = "no DICOM images in this folder"


class ImageReadError(ValueError):
    """A file could not be read as an image or mask.

    The message is one line naming the file and the problem in words, so the GUI can show it
    as-is. Subclasses ``ValueError`` so callers that only know the project-wide convention
    ("bad input raises ValueError") still catch it.
    """


class VolumeOutOfRange(ImageReadError):
    """A ``volume=`` choice that the file does not have (an index past its last volume).

    A value that parses but makes no sense for this file: the command line answers it with
    exit code 2, like any other bad option value.
    """


class VolumeChoiceRequired(ImageReadError):
    """The file holds several volumes (4-D, echoes, pages, components) and none was chosen.

    Callers that can ask (the GUI's volume picker, the ``--volume`` option) catch this type and
    read again with ``volume=`` set; the message alone still reads well for everyone else.

    Parameters
    ----------
    path : path-like
        The file or folder read.
    count : int
        Number of volumes; valid choices are ``0 .. count - 1``.
    summary : str
        What the file holds, in words (``"4-D image with 2 volumes"``).
    detail : str, optional
        How the volumes differ (``"by EchoNumbers: 1, 2"``), shown in parentheses.
    """

    def __init__(
        self, path: str | os.PathLike[str], count: int, summary: str, detail: str = ""
    ) -> None:
        self.path = str(path)
        self.count = count
        self.summary = summary
        self.detail = detail
        super().__init__(self.explain("volume="))

    def explain(self, option: str) -> str:
        """The message, naming how to choose: ``option`` is ``"volume="`` or ``"--volume "``."""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.path}: {self.summary}{extra}; choose one with {option}0..{self.count - 1}"

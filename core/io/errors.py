"""The error type every image or mask reader raises for bad input."""

__all__ = ["ImageReadError"]


class ImageReadError(ValueError):
    """A file could not be read as an image or mask.

    The message is one line naming the file and the problem in words, so the GUI can show it
    as-is. Subclasses ``ValueError`` so callers that only know the project-wide convention
    ("bad input raises ValueError") still catch it.
    """

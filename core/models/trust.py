"""The one error for "opening this would run code from the file": the caller may ask to trust it."""

from __future__ import annotations

__all__ = ["UntrustedCodeError"]


class UntrustedCodeError(ValueError):
    """A model file or config would run code and the user has not said they trust it.

    The GUI asks the user and opens again with ``trust=True``; the commands say to pass
    ``--trust``.
    """

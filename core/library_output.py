"""Catching what libraries print or warn while they read a file, to report it in the app's words.

numpy, nibabel, Pillow and torch emit Python warnings; ITK's MetaImage and NRRD readers write
straight to the process's stderr from C++. Left alone, these lines land on the terminal beside
the app's own ``warning:`` lines, without the file name and often twice. Inside
:func:`captured_library_output` both kinds are collected as one-line messages, which the caller
attaches to what it read (``Image.warnings``) or drops when the read failed with its own error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

__all__ = ["captured_library_output"]

#: Only one thread at a time may point file descriptor 2 elsewhere; others keep the terminal.
_NATIVE_LOCK = threading.Lock()

#: Python warning categories worth passing on, with the words said before their text.
_PREFIXES = {
    "DecompressionBombWarning": "very large picture",
    "ComplexWarning": "complex values lost their imaginary part",
    "RuntimeWarning": "numeric problem",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Send what C/C++ code writes to fd 2 into ``lines`` (one entry per non-empty line)."""
    if not _NATIVE_LOCK.acquire(blocking=False):
        yield  # another thread is capturing: this one's native output stays on the terminal
        return
    try:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield  # no real stderr (an embedded interpreter): nothing to capture
            return
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
        lines.extend(_one_line(line) for line in text.splitlines() if line.strip())
    finally:
        _NATIVE_LOCK.release()


@contextlib.contextmanager
def captured_library_output() -> Iterator[list[str]]:
    """Collect Python warnings and native stderr output of the code inside the block.

    Yields
    ------
    list of str
        Filled when the block ends: one line per distinct message, such as
        ``"numeric problem: overflow encountered in cast"`` or
        ``"MetaImage: M_ReadElementsData: data not read completely ideal = 240 : actual = 190"``.
    """
    collected: list[str] = []
    native: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught, _native_stderr(native):
            warnings.simplefilter("always")
            yield collected
    finally:
        messages = []
        for item in caught:
            category = item.category.__name__
            text = _one_line(str(item.message))
            prefix = _PREFIXES.get(category)
            messages.append(f"{prefix}: {text}" if prefix else text)
        messages.extend(native)
        collected.extend(dict.fromkeys(m for m in messages if m))

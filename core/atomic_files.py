"""Safe file writes: a temporary file in the target's folder, renamed over the target.

A crash, a full disk or a cancelled job never leaves half a file under the final name, and an
earlier file there stays intact until the new one is complete. Masks (``core.io``), reports
(``core.report_files``) and the GUI's exports all write through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "write_text_atomic", "same_file"]


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (links and ``..`` resolved)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def atomic_write(target: Path, write: Callable[[Path], None], *, suffix: str = "") -> Path:
    """Write ``target`` through ``write(temp_path)``, then rename the temporary file over it.

    Parameters
    ----------
    target : Path
        The final file; its folder must exist.
    write : callable
        Writes the content to the temporary path it is given.
    suffix : str
        Ending of the temporary file (writers such as nibabel pick the format by it).

    Raises
    ------
    ValueError
        The folder does not exist or ``target`` is a folder.
    """
    target = Path(target)
    if not target.parent.is_dir():
        raise ValueError(f"{target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise ValueError(f"{target}: is a folder, not a file")
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".partial{suffix}", dir=target.parent
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        # mkstemp makes the file owner-only; a saved file should be as readable as any other.
        os.chmod(temp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())  # the data is on disk before the name points to it
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(temp: Path) -> None:
        with open(temp, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)

    return atomic_write(Path(path), write)

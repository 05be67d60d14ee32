"""Memory a file's header asks for, checked against what the machine has before allocating it.

A header is the file author's claim: a 40-byte NIfTI header can ask for 16 GiB of voxels, a
small ``.nii.gz`` can inflate to terabytes. Readers call :func:`require_memory` with the size
the header implies before they read any pixel, so such a file is refused in words instead of
taking the machine into swap or the out-of-memory killer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MemoryLimitError", "array_bytes", "available_bytes", "format_gib", "require_memory"]


class MemoryLimitError(ValueError):
    """What a file asks for does not fit in the memory available (one line, with figures)."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_available() -> int | None:
    """Room left under a container's memory limit (cgroup v2 or v1), if one is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        limit = _read_int(Path(limit_file))
        if limit is not None and limit < 1 << 60:  # "max" or a huge number mean no limit
            usage = _read_int(Path(usage_file)) or 0
            return max(0, limit - usage)
    return None


def available_bytes() -> int:
    """Memory this process can still take: the smaller of the free RAM and a container limit.

    Falls back to the physical memory size where neither can be read (not Linux).
    """
    figures = [f for f in (_meminfo_available(), _cgroup_available()) if f is not None]
    if figures:
        return min(figures)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def format_gib(nbytes: float) -> str:
    """``"16.0 GiB"`` (one decimal; MiB below 1 GiB)."""
    if nbytes < 1 << 30:
        return f"{nbytes / (1 << 20):.1f} MiB"
    return f"{nbytes / (1 << 30):.1f} GiB"


def require_memory(nbytes: float, what: str, *, available: int | None = None) -> None:
    """Raise :class:`MemoryLimitError` when ``nbytes`` will not fit in the available memory.

    Parameters
    ----------
    nbytes : float
        What the allocation needs.
    what : str
        Start of the message, naming the file and the allocation
        (``"ct.nii.gz: reading its 2048x2048x2048 int16 voxels"``).
    available : int, optional
        Bytes available (measured with :func:`available_bytes` when omitted).

    Raises
    ------
    MemoryLimitError
        ``"WHAT needs 16.0 GiB, 9.1 GiB available"``.
    """
    free = available_bytes() if available is None else available
    if nbytes > free:
        raise MemoryLimitError(f"{what} needs {format_gib(nbytes)}, {format_gib(free)} available")


def array_bytes(shape: Iterable[int], itemsize: int) -> int:
    """Bytes of an array of ``shape`` and ``itemsize`` (Python ints: no overflow)."""
    return math.prod(int(n) for n in shape) * int(itemsize)

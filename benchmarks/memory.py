"""Peak resident memory of the current process, for benchmark child processes (Linux)."""

from __future__ import annotations


def status_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process image in MiB, NaN when unknown.

    ru_maxrss would carry the parent's peak over exec; /proc/self/status is this image's own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current size, so a later peak is the following work's own."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False

"""A one-line progress bar on stderr for the headless commands.

The bar is drawn only when stderr is a terminal (a log file or a pipe gets no carriage-return
noise) and never with ``--quiet``. It is a :data:`core.jobs.ProgressCallback`, so the same core
jobs that drive the GUI's progress bars drive it unchanged.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from core.jobs import Progress

__all__ = ["ProgressPrinter", "format_progress"]

_BAR_WIDTH = 24


class ProgressPrinter:
    """Draw :class:`core.jobs.Progress` reports as a bar that rewrites one line of a stream.

    Parameters
    ----------
    stream : text stream, optional
        Where to draw; ``sys.stderr`` when omitted.
    enabled : bool, optional
        Force drawing on or off; by default it draws when ``stream.isatty()`` is true.
    interval : float
        Smallest time in seconds between two redraws of the same stage (the last step of a
        stage and a new stage are always drawn).

    Examples
    --------
    >>> with ProgressPrinter(enabled=False) as printer:  # doctest: +SKIP
    ...     result = segment_image(model, image, on_progress=printer)
    """

    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool | None = None, interval: float = 0.1
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self._stream, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        self.enabled = enabled
        self._interval = interval
        self._last_draw = -float("inf")
        self._stage: str | None = None
        self._line_open = False

    @classmethod
    def for_command(cls, quiet: bool) -> ProgressPrinter:
        """The printer a command uses: on stderr when it is a terminal, silent when ``quiet``."""
        return cls(enabled=False) if quiet else cls()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        new_stage = progress.stage != self._stage
        is_last = progress.total is not None and progress.step >= progress.total
        if not (new_stage or is_last or now - self._last_draw >= self._interval):
            return
        if new_stage and self._line_open:
            self._stream.write("\n")  # keep the finished stage's last line on screen
        self._stage = progress.stage
        self._last_draw = now
        self._draw(format_progress(progress))

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self._stream.write("\r" + text[:width].ljust(width))
        self._stream.flush()
        self._line_open = True

    def finish(self) -> None:
        """End the current line so later output starts on a fresh one."""
        if self.enabled and self._line_open:
            self._stream.write("\n")
            self._stream.flush()
        self._line_open = False
        self._stage = None

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()


def format_progress(progress: Progress) -> str:
    """One line for a report: ``inference [#####-----]  50% 4/8 slice batch 4``.

    Parameters
    ----------
    progress : core.jobs.Progress

    Returns
    -------
    str
        Stage, a bar and the percentage when the total is known, the step count otherwise, then
        the message and any named values (``loss=0.0123``).
    """
    parts = [progress.stage or "working"]
    fraction = progress.fraction
    if fraction is not None:
        filled = int(round(fraction * _BAR_WIDTH))
        parts.append(f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {fraction:4.0%}")
        parts.append(f"{progress.step}/{progress.total}")
    else:
        parts.append(f"step {progress.step}")
    if progress.message:
        parts.append(progress.message)
    parts.extend(f"{key}={value:.4g}" for key, value in progress.values.items())
    return " ".join(parts)

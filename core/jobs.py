"""The plain-Python vocabulary of long-running jobs: progress reports and cooperative cancel.

A core job is an ordinary function that takes two optional keyword arguments::

    def some_job(..., on_progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Result

It calls ``on_progress(Progress(...))`` now and then and ``cancel.raise_if_cancelled()`` at step
boundaries. Nothing here knows about Qt: the GUI wraps such a function once (``gui.workers``), the
headless commands print the same progress on stderr.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CancelToken",
    "JobCancelled",
    "Progress",
    "ProgressCallback",
    "ProgressThrottle",
    "report",
]


class JobCancelled(Exception):
    """Raised inside a job when its :class:`CancelToken` was cancelled."""


@dataclass(frozen=True)
class Progress:
    """One progress report of a job.

    Parameters
    ----------
    step : int
        Steps done so far (0-based count of finished steps).
    total : int or None
        Number of steps, or None when unknown (an indeterminate progress bar).
    message : str
        What the job is doing now, in words ("block enc1: iteration 120/500").
    values : Mapping[str, float]
        Optional named numbers, for example ``{"loss": 0.013}`` for a live loss curve.
    stage : str
        Optional stage name ("calibration", "reconstruction", "inference").
    """

    step: int
    total: int | None = None
    message: str = ""
    values: Mapping[str, float] = field(default_factory=dict)
    stage: str = ""

    @property
    def fraction(self) -> float | None:
        """Progress in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.step / self.total))


ProgressCallback = Callable[[Progress], Any]


class CancelToken:
    """A thread-safe flag a job polls to stop early.

    The caller keeps the token and calls :meth:`cancel`; the job calls :meth:`raise_if_cancelled`
    between steps, which raises :class:`JobCancelled`. Cancellation is cooperative: a job stops at
    its next check, so jobs check often enough to stop within a fraction of a second.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise JobCancelled("cancelled by the user")


def report(on_progress: ProgressCallback | None, progress: Progress) -> None:
    """Send ``progress`` to ``on_progress`` if a callback was given."""
    if on_progress is not None:
        on_progress(progress)


class ProgressThrottle:
    """Forward at most one report per ``interval`` seconds (plus the last step) to a callback.

    Jobs with thousands of tiny steps (optimizer iterations) wrap their callback in this so a GUI
    receives a few dozen signals a second, not thousands.
    """

    def __init__(self, on_progress: ProgressCallback | None, interval: float = 0.1) -> None:
        self._callback = on_progress
        self._interval = interval
        self._last = -float("inf")

    def __call__(self, progress: Progress, *, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        is_last = progress.total is not None and progress.step >= progress.total
        if force or is_last or now - self._last >= self._interval:
            self._last = now
            self._callback(progress)

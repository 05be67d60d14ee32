"""Run any core job off the GUI thread, with progress, a real cancel and errors as data.

The pattern follows superqt's thread_worker: a :class:`JobWorker` is a QRunnable that holds a small
QObject of signals (:class:`JobSignals`) created in the GUI thread, so every connected slot, lambdas
included, runs on the GUI thread. A core job is a plain function that accepts ``on_progress`` and
``cancel`` keyword arguments (see ``core.jobs``); the worker passes both in.

Signals, in the order they fire: ``started`` -> ``progressed`` (0..n) -> exactly one of
``succeeded(result)``, ``failed(JobFailure)``, ``cancelled()`` -> ``finished()``.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.jobs import CancelToken, JobCancelled, Progress

__all__ = [
    "JobFailure",
    "JobSignals",
    "JobWorker",
    "JobRunner",
    "GIL_SWITCH_INTERVAL",
    "first_line",
]

# Python hands the GIL between threads every switch interval (5 ms by default). A job whose
# Python code runs between torch kernels would hold the GUI thread off for up to that long per
# handover; 1 ms keeps the event loop's lag low at a negligible cost (benchmarks/gui_latency.py).
GIL_SWITCH_INTERVAL = 0.001

log = logging.getLogger("segbench.jobs")
_job_ids = itertools.count(1)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class JobFailure:
    """An exception that ended a job, carried across threads as data.

    Attributes
    ----------
    title : str
        The job's name ("Quantize demo model").
    message : str
        One line for the dialog: the exception's message, or its type when it has none.
    details : str
        The formatted traceback, shown under "Show details".
    exception : BaseException
        The exception itself, for callers that want to inspect it.
    """

    title: str
    message: str
    details: str
    exception: BaseException


class JobSignals(QObject):
    """The signals of one job. Create it in the GUI thread so slots run there."""

    started = Signal()
    progressed = Signal(object)  # core.jobs.Progress
    succeeded = Signal(object)  # the job's return value
    failed = Signal(object)  # JobFailure
    cancelled = Signal()
    finished = Signal()


class JobWorker(QRunnable):
    """Runs ``fn(*args, on_progress=..., cancel=..., **kwargs)`` on a pool thread.

    Parameters
    ----------
    fn : callable
        A core job. It must accept ``on_progress`` and ``cancel`` keyword arguments.
    *args, **kwargs
        Passed to ``fn``.
    title : str
        A short name for logs and error dialogs.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, title: str = "job", **kwargs: Any):
        super().__init__()
        self.setAutoDelete(False)  # the runner keeps a reference until `finished`
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.title = title
        self.job_id = next(_job_ids)
        self.cancel_token = CancelToken()
        self.signals = JobSignals()
        self.elapsed: float | None = None
        self._stage = ""
        self._stage_started = 0.0

    def cancel(self) -> None:
        """Ask the job to stop at its next cancel check."""
        self.cancel_token.cancel()

    def _on_progress(self, progress: Progress) -> None:
        # Runs on the worker thread: log stage changes with their durations, then hand the
        # report to the GUI thread through the queued signal.
        if progress.stage and progress.stage != self._stage:
            now = time.perf_counter()
            if self._stage:
                log.info(
                    "%s: stage %s took %.2f s", self.title, self._stage, now - self._stage_started
                )
            self._stage, self._stage_started = progress.stage, now
        self.signals.progressed.emit(progress)

    def run(self) -> None:  # noqa: D401 - Qt entry point
        signals = self.signals
        start = time.perf_counter()
        self._stage_started = start
        log.info("%s: started (job %d)", self.title, self.job_id)
        signals.started.emit()
        try:
            result = self.fn(
                *self.args, on_progress=self._on_progress, cancel=self.cancel_token, **self.kwargs
            )
        except JobCancelled:
            self.elapsed = time.perf_counter() - start
            log.info("%s: cancelled after %.2f s", self.title, self.elapsed)
            signals.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a dialog, not a crash
            self.elapsed = time.perf_counter() - start
            message = first_line(exc)
            details = "".join(traceback.format_exception(exc))
            log.error("%s: failed after %.2f s: %s", self.title, self.elapsed, message)
            signals.failed.emit(JobFailure(self.title, message, details, exc))
        else:
            self.elapsed = time.perf_counter() - start
            if self._stage:
                log.info(
                    "%s: stage %s took %.2f s",
                    self.title,
                    self._stage,
                    time.perf_counter() - self._stage_started,
                )
            log.info("%s: finished in %.2f s", self.title, self.elapsed)
            signals.succeeded.emit(result)
        finally:
            signals.finished.emit()


class JobRunner(QObject):
    """Starts jobs on a thread pool and remembers which are running.

    The main window owns one runner. It keeps each worker alive until ``finished`` and can
    cancel everything (for example when the window closes).
    """

    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, *, max_threads: int = 2) -> None:
        super().__init__(parent)
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._running: dict[int, JobWorker] = {}

    @property
    def is_busy(self) -> bool:
        return bool(self._running)

    @property
    def running(self) -> list[JobWorker]:
        return list(self._running.values())

    def start(self, worker: JobWorker) -> JobWorker:
        """Start ``worker``. Connect its signals before calling this."""
        was_busy = self.is_busy
        self._running[worker.job_id] = worker
        job_id = worker.job_id
        worker.signals.finished.connect(lambda: self._on_worker_finished(job_id))
        self._pool.start(worker)
        if not was_busy:
            self.busy_changed.emit(True)
        return worker

    def cancel_all(self) -> None:
        for worker in self._running.values():
            worker.cancel()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until every job has ended (used on close after cancel_all)."""
        return self._pool.waitForDone(msecs)

    def _on_worker_finished(self, job_id: int) -> None:
        self._running.pop(job_id, None)
        if not self._running:
            self.busy_changed.emit(False)

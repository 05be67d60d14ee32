import time
import weakref

import numpy as np
import pytest

from core.jobs import JobCancelled, Progress
from gui.workers import JobFailure, JobRunner, JobWorker


def counting_job(n, *, on_progress=None, cancel=None):
    for i in range(n):
        cancel.raise_if_cancelled()
        on_progress(Progress(i + 1, n, f"step {i + 1}", {"loss": 1.0 / (i + 1)}))
    return n * 2


def endless_job(*, on_progress=None, cancel=None):
    while True:
        cancel.raise_if_cancelled()
        time.sleep(0.005)


def failing_job(path, *, on_progress=None, cancel=None):
    raise ValueError(f"{path}: not a NIfTI file (bad magic)")


class Recorder:
    def __init__(self, worker):
        self.events = []
        s = worker.signals
        s.started.connect(lambda: self.events.append(("started",)))
        s.progressed.connect(lambda p: self.events.append(("progressed", p)))
        s.succeeded.connect(lambda r: self.events.append(("succeeded", r)))
        s.failed.connect(lambda f: self.events.append(("failed", f)))
        s.cancelled.connect(lambda: self.events.append(("cancelled",)))
        s.finished.connect(lambda: self.events.append(("finished",)))

    def kinds(self):
        return [e[0] for e in self.events]


def test_worker_reports_progress_then_result_in_order(qtbot):
    runner = JobRunner()
    worker = JobWorker(counting_job, 3, title="count")
    rec = Recorder(worker)
    with qtbot.waitSignal(worker.signals.finished, timeout=5000):
        runner.start(worker)
    assert rec.kinds() == [
        "started",
        "progressed",
        "progressed",
        "progressed",
        "succeeded",
        "finished",
    ]
    assert [e[1].step for e in rec.events if e[0] == "progressed"] == [1, 2, 3]
    assert rec.events[4][1] == 6
    qtbot.waitUntil(lambda: not runner.is_busy, timeout=2000)


def test_worker_failure_becomes_data_with_message_and_traceback(qtbot):
    runner = JobRunner()
    worker = JobWorker(failing_job, "/tmp/x.nii", title="Open image")
    rec = Recorder(worker)
    with qtbot.waitSignal(worker.signals.finished, timeout=5000):
        runner.start(worker)
    failure = rec.events[-2][1]
    assert isinstance(failure, JobFailure)
    assert failure.title == "Open image"
    assert failure.message == "/tmp/x.nii: not a NIfTI file (bad magic)"
    assert "Traceback" in failure.details and "failing_job" in failure.details
    assert isinstance(failure.exception, ValueError)


def test_cancel_stops_a_running_job_promptly(qtbot):
    runner = JobRunner()
    worker = JobWorker(endless_job, title="endless")
    rec = Recorder(worker)
    with qtbot.waitSignal(worker.signals.started, timeout=5000):
        runner.start(worker)
    assert runner.is_busy
    t0 = time.perf_counter()
    with qtbot.waitSignal(worker.signals.finished, timeout=5000):
        runner.cancel_all()
    assert time.perf_counter() - t0 < 1.0
    assert "cancelled" in rec.kinds() and "succeeded" not in rec.kinds()
    qtbot.waitUntil(lambda: not runner.is_busy, timeout=2000)


def test_cancelled_job_raises_job_cancelled_inside():
    # The job sees a real exception type it can clean up on.
    from core.jobs import CancelToken

    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelled):
        endless_job(on_progress=None, cancel=token)


def test_finished_worker_lets_go_of_its_inputs(qtbot):
    # The thread pool keeps started runnables alive: a worker that kept its arguments would
    # pin them (a CT's probabilities passed to a decision job) for the rest of the session.
    def job(array, *, scale, on_progress=None, cancel=None):
        return float(array.sum()) * scale

    array = np.ones(1000)
    alive = weakref.ref(array)
    runner = JobRunner()
    worker = JobWorker(job, array, scale=2.0, title="sum")
    rec = Recorder(worker)
    with qtbot.waitSignal(worker.signals.finished, timeout=5000):
        runner.start(worker)
    assert ("succeeded", 2000.0) in rec.events
    del array
    assert alive() is None and worker.args == () and worker.kwargs == {}

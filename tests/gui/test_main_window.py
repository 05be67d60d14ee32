import gc
import time

from core.device import gui_torch_threads
from core.jobs import Progress
from gui.app import freeze_startup_objects
from gui.main_window import MainWindow


def slow_job(*, on_progress=None, cancel=None):
    for i in range(400):
        cancel.raise_if_cancelled()
        on_progress(Progress(i, 400, f"step {i}", stage="work"))
        time.sleep(0.005)
    return "done"


def bad_job(*, on_progress=None, cancel=None):
    raise ValueError("scan.nii: truncated file")


def test_empty_state_says_what_to_open(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    text = window.empty_state.text()
    assert "Open" in text and "NIfTI" in text and "DICOM" in text


def test_job_progress_shows_in_status_bar_and_result_arrives(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    results = []
    with qtbot.waitSignal(window.job_succeeded, timeout=10000):
        window.run_job(slow_job, title="Demo job", on_success=results.append)
        qtbot.waitUntil(lambda: window.progress_bar.isVisible(), timeout=2000)
        qtbot.waitUntil(lambda: window.progress_bar.value() > 0, timeout=5000)
        assert window.cancel_button.isVisible()
    assert results == ["done"]
    qtbot.waitUntil(lambda: not window.progress_bar.isVisible(), timeout=2000)


def test_failure_shows_error_dialog_with_one_line_and_details(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    # No waitSignal on `finished` here: the job fails at once, and a signal emitted from the
    # worker thread before the wait connects would never reach it.
    window.run_job(bad_job, title="Open image")
    qtbot.waitUntil(lambda: len(window.error_boxes) == 1, timeout=10000)
    box = window.error_boxes[0]
    assert box.text() == "scan.nii: truncated file"
    assert box.windowTitle() == "Open image"
    assert "Traceback" in box.detailedText()
    box.done(0)


def test_close_during_job_asks_and_can_refuse(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    asked = []

    def refuse():
        asked.append(True)
        return False

    window.confirm_close_during_job = refuse
    worker = window.run_job(slow_job, title="Long job")
    qtbot.waitUntil(lambda: window.runner.is_busy, timeout=2000)
    window.close()
    assert asked and window.isVisible()
    window.confirm_close_during_job = lambda: True
    with qtbot.waitSignal(worker.signals.finished, timeout=5000):
        window.close()
    assert not window.isVisible()


def test_log_panel_receives_job_timings(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    with qtbot.waitSignal(window.job_succeeded, timeout=10000):
        window.run_job(slow_job, title="Timed job")
    qtbot.waitUntil(
        lambda: any("Timed job: finished in" in line for line in window.log_panel.lines()),
        timeout=2000,
    )
    assert any("stage work took" in line for line in window.log_panel.lines())


def test_startup_objects_are_frozen_out_of_full_collections():
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_app_leaves_a_core_to_the_gui_thread():
    assert gui_torch_threads() >= 1
    assert gui_torch_threads() == gui_torch_threads()  # read once, whatever select_device did

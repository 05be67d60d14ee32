"""File > Evaluate on a cluster: the dialog runs ``evaluate`` on Ray with progress and Cancel."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QSettings

from core.demo import demo_paths
from gui.widgets.cluster_dialog import ClusterEvaluateDialog

TIMEOUT_MS = 120_000


@pytest.fixture
def dialog(qtbot, eval_data, tmp_path):
    widget = ClusterEvaluateDialog([str(p) for p in eval_data.models])
    qtbot.addWidget(widget)
    widget.images.setText(str(eval_data.images))
    widget.labels.setText(str(eval_data.labels))
    widget.report_path.setText(str(tmp_path / "cluster.json"))
    widget.decisions.setText("argmax")
    widget.show()
    yield widget
    widget.runner.cancel_all()
    widget.runner.wait(30000)


def test_file_menu_opens_the_dialog_on_the_open_model(qtbot, tmp_path, monkeypatch):
    from gui.workbench_window import WorkbenchWindow

    monkeypatch.setenv("SEGBENCH_DATA_DIR", str(tmp_path / "data"))
    window = WorkbenchWindow(
        settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    )
    qtbot.addWidget(window)
    window.load_demo(segment=False)
    qtbot.waitUntil(lambda: bool(window.session.variants), timeout=TIMEOUT_MS)
    (action,) = [a for a in window.file_menu.actions() if "cluster" in a.text()]
    action.trigger()
    dialog = window.findChild(ClusterEvaluateDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.model_paths == [str(demo_paths().model)]
    dialog.close()
    window.runner.cancel_all()
    window.runner.wait(20000)


def test_wrong_folders_are_said_in_the_dialog_without_starting(dialog, tmp_path):
    dialog.labels.setText(str(tmp_path / "missing"))
    dialog.start()
    assert dialog.status.text().startswith("Cannot start:")
    assert "missing" in dialog.status.text()
    assert dialog.worker is None and dialog.start_button.isEnabled()


@pytest.mark.slow
def test_dialog_runs_on_ray_shows_progress_and_cancel_keeps_a_resumable_report(
    dialog, qtbot, eval_data, ray_cluster, tmp_path
):
    total = len(eval_data.cases)
    cancelled = []

    def cancel_after_the_first_case(progress):
        if progress.stage == "cases" and progress.step >= 1 and not cancelled:
            cancelled.append(progress.step)
            dialog.cancel()

    dialog.start()
    dialog.worker.signals.progressed.connect(cancel_after_the_first_case)
    with qtbot.waitSignal(dialog.worker.signals.cancelled, timeout=TIMEOUT_MS):
        pass
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=TIMEOUT_MS)
    assert "Cancelled" in dialog.status.text()
    partial = json.loads(open(dialog.report_path.text()).read())
    assert partial["complete"] is False
    done = len(partial["cases"])
    assert 1 <= done < total
    assert dialog.progress.value() >= 1

    dialog.resume.setChecked(True)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=TIMEOUT_MS)
    assert dialog.progress.value() == dialog.progress.maximum() == total
    assert dialog.status.text().startswith(f"Done: {total} case(s)")
    assert dialog.nodes.text().startswith("Nodes: ")
    report = json.loads(open(dialog.report_path.text()).read())
    assert report["complete"] is True and report["run"]["resumed"] == done
    assert [c["name"] for c in report["cases"]] == [c.name for c in eval_data.cases]

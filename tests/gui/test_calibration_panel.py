"""The Calibration view: measuring the shown result, fitting a calibrated copy, reading reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.models import load_model, predict
from core.probability_calibration import ReliabilityTally
from core.probability_calibration.measure import classes_from_records
from gui.widgets.calibration_panel import CalibrationPanel
from tests.gui.test_workbench import JOB_TIMEOUT, wait_idle, window  # noqa: F401 - fixture


def _tally(seed: int = 0) -> ReliabilityTally:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1, 1, 1], size=(12, 10)).transpose(2, 0, 1).astype(np.float32)
    tally = ReliabilityTally(["background", "a", "b"], bins=5)
    tally.add(p, rng.integers(0, 3, size=(12, 10)))
    return tally


def test_panel_lists_each_class_with_its_figures(qtbot):
    panel = CalibrationPanel()
    qtbot.addWidget(panel)
    classes = _tally().classes()
    panel.show_classes(classes, "title", [(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    assert panel.table.rowCount() == 3
    for row, cls in enumerate(classes):
        assert panel.table.item(row, 0).text() == cls.name
        assert panel.table.item(row, 1).text() == f"{cls.ece:.4f}"
        assert panel.table.item(row, 3).text() == str(cls.tail_positives)
    assert panel.title.text() == "title"


def test_report_section_reads_back_into_the_same_figures():
    classes = _tally(1).classes()
    section = json.loads(json.dumps([c.to_dict() for c in classes]))
    again = classes_from_records(section)
    for a, b in zip(classes, again, strict=True):
        assert (a.name, a.ece, a.tail_mass, a.tail_positives) == (
            b.name,
            b.ece,
            b.tail_mass,
            b.tail_positives,
        )
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_allclose(a.observed, b.observed, equal_nan=True)


@pytest.mark.slow
def test_measure_then_fit_on_the_open_image_adds_a_calibrated_guarded_variant(
    window,  # noqa: F811 - the fixture
    qtbot,
    tmp_path,
):
    win = window
    win.load_demo(segment=False)
    wait_idle(qtbot, win)
    name = next(iter(win.session.variants))
    win.run_segmentation_with(name, "argmax")
    qtbot.waitUntil(lambda: len(win.session.results) == 1, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)

    panel = win.calibration_panel
    panel.measure_button.click()
    wait_idle(qtbot, win)
    assert not win.error_boxes
    model = win.session.variants[name].model
    expected = ReliabilityTally(list(model.spec.class_names))
    expected.add(predict(model, win.session.image, device="cpu"), win.session.ground_truth)
    shown = [panel.table.item(r, 1).text() for r in range(panel.table.rowCount())]
    assert shown == [f"{c.ece:.4f}" for c in expected.classes()]

    folder = tmp_path / "calibrated"
    win.ask_save_path = lambda *args: str(folder)
    panel.fit_image_button.click()
    qtbot.waitUntil(lambda: len(win.session.variants) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    assert not win.error_boxes
    saved = load_model(folder)
    calibration = saved.spec.probability_calibration
    assert calibration is not None and calibration.guard is not None
    assert "T =" in panel.title.text()
    calibrated = [v for v in win.session.variants if "calibrated" in v]
    assert calibrated == [saved.name]

    win.run_segmentation_with(saved.name, "guarded")
    qtbot.waitUntil(lambda: len(win.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    rules = [c for c in win.results_table.shown_columns if c.endswith(" rule")]
    assert rules == [f"{n} rule" for n in saved.spec.class_names[1:]]
    row = 1
    for class_name, rule in zip(
        saved.spec.class_names[1:], calibration.guard.rules[1:], strict=True
    ):
        assert win.results_table.cell_text(row, f"{class_name} rule").startswith(rule)

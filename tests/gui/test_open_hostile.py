"""Opening odd and hostile files in the GUI: an error dialog at most, never an escaped exception."""

from __future__ import annotations

import sys

import pytest

from core.demo import demo_paths
from tests.gui.test_workbench import wait_idle, window  # noqa: F401 - the fixture
from tests.hostile_corpus import CHOOSE, REFUSE, make_corpus


def _fail_unless(monkeypatch, viewer, method: str, kept, message: str) -> None:
    """Make ``viewer.method`` raise for anything but ``kept``: the second view fails after the
    first one took the new value, the case where views and session could disagree."""
    original = getattr(viewer, method)

    def broken(value):
        if value is not kept:
            raise ValueError(message)
        original(value)

    monkeypatch.setattr(viewer, method, broken)


def _open_and_settle(qtbot, win, open_file, path) -> None:
    """Open ``path`` through the window and let the job and its queued slots finish."""
    open_file(str(path))
    wait_idle(qtbot, win)
    qtbot.wait(1)


@pytest.fixture
def escaped(monkeypatch):
    """Exceptions that reach the Qt event loop (sys.excepthook), instead of a dialog."""
    caught = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, trace: caught.append(value))
    return caught


def test_opening_every_corpus_file_shows_it_or_an_error(window, qtbot, tmp_path, escaped):  # noqa: F811
    asked = []
    window.ask_volume = lambda path, choice: asked.append(path) or None
    window.load_demo(segment=False)
    wait_idle(qtbot, window)
    demo = window.session.image
    for item in make_corpus(tmp_path / "corpus"):
        boxes = len(window.error_boxes)
        shown_before = window.session.image
        _open_and_settle(qtbot, window, window.open_image, item.path)
        what = f"{item.path.name} ({item.why})"
        assert escaped == [], what
        if item.expect == REFUSE:
            assert len(window.error_boxes) == boxes + 1, what
            assert str(item.path) in window.error_boxes[-1].text(), what
        if item.expect in (REFUSE, CHOOSE):
            # The session and the views still agree on the image shown before.
            assert window.session.image is shown_before, what
            assert window.viewer._image is shown_before, what
        else:
            assert window.session.image.path == item.path, what
            assert window.viewer._image is window.session.image, what
    assert demo is not None and len(asked) == 2


def test_a_view_that_cannot_show_an_image_leaves_session_and_views_as_they_were(
    window,  # noqa: F811
    qtbot,
    escaped,
    monkeypatch,
):
    window.load_demo(segment=False)
    wait_idle(qtbot, window)
    demo = window.session.image
    _fail_unless(monkeypatch, window.compare_viewer, "set_image", demo, "cannot lay out this")
    _open_and_settle(qtbot, window, window.open_image, demo_paths().label)
    assert escaped == []
    assert "cannot lay out this" in window.error_boxes[-1].text()
    assert window.session.image is demo and window.viewer._image is demo


def test_bad_models_and_ground_truths_end_in_a_dialog(window, qtbot, tmp_path, escaped):  # noqa: F811
    import json

    import nibabel as nib
    import numpy as np

    from core.models import save_model
    from tests.tiny_models import tiny_unet

    model = tiny_unet()
    good = save_model(model.module, model.spec, tmp_path / "good")
    bad_spec = tmp_path / "bad_spec"
    save_model(model.module, model.spec, bad_spec)
    spec = json.loads((bad_spec / "model.json").read_text())
    spec["class_names"] = "abcd"
    (bad_spec / "model.json").write_text(json.dumps(spec))
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "noise.json").write_text(model.spec.to_json())
    window.load_demo(segment=False)
    wait_idle(qtbot, window)
    shape = window.session.image.shape3
    nib.Nifti1Image(np.zeros((shape[0], shape[1], shape[2] + 1), np.uint8), np.eye(4)).to_filename(
        tmp_path / "wrong_shape.nii.gz"
    )
    attempts = [
        (window.open_model, bad_spec, "class_names must be a list"),
        (window.open_model, tmp_path / "noise.pt", "not a PyTorch file"),
        (window.open_ground_truth, tmp_path / "wrong_shape.nii.gz", "does not match image shape"),
    ]
    for open_file, path, words in attempts:
        boxes = len(window.error_boxes)
        _open_and_settle(qtbot, window, open_file, path)
        assert escaped == [], path
        assert len(window.error_boxes) == boxes + 1 and words in window.error_boxes[-1].text()
    window.open_model(str(good))
    wait_idle(qtbot, window)
    assert escaped == [] and len(window.error_boxes) == 3


def test_saving_or_exporting_onto_a_fifo_is_refused_and_leaves_it(window, qtbot, tmp_path, escaped):  # noqa: F811
    import os
    import stat

    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    window.export_table(str(fifo))
    wait_idle(qtbot, window)
    qtbot.wait(1)
    assert escaped == []
    assert "FIFO" in window.error_boxes[-1].text()
    shot = tmp_path / "views.png"
    os.mkfifo(shot)
    window.ask_save_path = lambda *args: str(shot)
    window._on_screenshot_requested()  # would block for ever if it opened the FIFO
    assert "FIFO" in window.error_boxes[-1].text()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISFIFO(os.stat(shot).st_mode)


def test_a_ground_truth_the_views_cannot_show_is_not_kept(window, qtbot, escaped, monkeypatch):  # noqa: F811
    window.load_demo(segment=False)
    wait_idle(qtbot, window)
    assert window.session.ground_truth is not None
    kept = window.session.ground_truth
    _fail_unless(monkeypatch, window.compare_viewer, "set_ground_truth", kept, "cannot outline")
    _open_and_settle(qtbot, window, window.open_ground_truth, demo_paths().label)
    assert escaped == [] and "cannot outline" in window.error_boxes[-1].text()
    assert window.session.ground_truth is kept and window.viewer.ground_truth() is kept

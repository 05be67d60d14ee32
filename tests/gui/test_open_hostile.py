"""Opening odd and hostile files in the GUI: an error dialog at most, never an escaped exception."""

from __future__ import annotations

import sys

import pytest

from tests.gui.test_workbench import wait_idle, window  # noqa: F401 - the fixture
from tests.hostile_corpus import CHOOSE, REFUSE, make_corpus


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
        window.open_image(str(item.path))
        wait_idle(qtbot, window)
        qtbot.wait(1)  # let queued slots run
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
    original = window.compare_viewer.set_image

    def broken(image):
        if image is not demo:  # the second view fails after the first one took the image
            raise ValueError("cannot lay out this image")
        original(image)

    monkeypatch.setattr(window.compare_viewer, "set_image", broken)
    from core.demo import demo_paths

    window.open_image(str(demo_paths().label))
    wait_idle(qtbot, window)
    qtbot.wait(1)
    assert escaped == []
    assert "cannot lay out this image" in window.error_boxes[-1].text()
    assert window.session.image is demo and window.viewer._image is demo

"""The review in the workbench, driven with pytest-qt: a worklist of 20 generated cases."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from core.io import read_image, read_mask
from core.review import read_worklist
from gui.workbench_window import WorkbenchWindow
from tests.review.cases import write_case_folder
from tests.review.killing import kill_after_lines

JOB_TIMEOUT = 60_000


def _window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("review/reviewer", "Dr Test")
    win = WorkbenchWindow(settings=settings)
    win.confirm_close_during_job = lambda: True
    qtbot.addWidget(win)
    win.show()
    return win


def _idle(qtbot, win):
    qtbot.waitUntil(lambda: not win.runner.is_busy, timeout=JOB_TIMEOUT)


def _open(qtbot, win, folder):
    with qtbot.waitSignal(win.review.case_shown, timeout=JOB_TIMEOUT):
        win.review.open_worklist(folder)
    _idle(qtbot, win)  # the next case is read ahead


def _go(qtbot, win, action):
    with qtbot.waitSignal(win.review.case_shown, timeout=JOB_TIMEOUT):
        action()
    _idle(qtbot, win)


@pytest.fixture
def worklist_folder(tmp_path):
    return write_case_folder(tmp_path / "worklist", 20)


def test_review_statuses_comments_corrections_and_resume(qtbot, tmp_path, worklist_folder):
    win = _window(qtbot, tmp_path / "one")
    review = win.review
    _open(qtbot, win, worklist_folder)
    names = read_worklist(worklist_folder).names
    assert review.current == names[0] and not win.error_boxes
    # The case's image, its ground truth and the prediction file are open; the row's Dice is
    # the prediction's against the ground truth.
    case = read_worklist(worklist_folder).cases[0]
    image = read_image(case.image)
    truth = read_mask(case.label, reference=image).array
    predicted = read_mask(case.prediction, reference=image).array
    np.testing.assert_array_equal(win.session.ground_truth, truth)
    entry = win.session.results[win.current_key]
    expected = 2 * np.sum((truth == 1) & (predicted == 1)) / (np.sum(truth) + np.sum(predicted))
    assert entry.result.rows[1].dice == pytest.approx(expected)
    assert review.panel.progress_label.text() == "0 of 20 reviewed"
    assert names[1] in review._cache  # read ahead
    review.panel.accept_button.click()
    _go(qtbot, win, review.panel.next_button.click)
    assert review.current == names[1] and review.waits[-1][2] is True  # shown from the cache
    review.panel.reject_button.click()
    review.panel.comment_edit.setText("misses the lower slab")
    review.panel.comment_edit.editingFinished.emit()
    # A correction: delete the lesion with one click of the delete-component tool.
    win.mask_editor.set_tool("delete")
    viewer = win.viewer
    ijk = tuple(int(v) for v in np.argwhere(win.viewer.prediction() == 1)[0])
    axes = viewer.plane_axes("axial")
    from core.display.planes import voxel_to_plane

    viewer.set_cursor_voxel(ijk)
    _, row, col = voxel_to_plane(axes, image.shape3, ijk)
    viewer.stroke.emit("axial", "press", int(row), int(col))
    viewer.stroke.emit("axial", "release", int(row), int(col))
    _idle(qtbot, win)
    corrected_key = win.current_key
    assert corrected_key.endswith("+ corrected")
    assert not win.session.results[corrected_key].labels.array.any()
    assert win.session.results[corrected_key].result.rows[1].dice == 0.0  # all of it changed
    assert review.state.cases[names[1]].status == "corrected"
    case1 = read_worklist(worklist_folder).cases[1]
    model_mask = read_mask(case1.prediction, reference=image).array
    win.undo_stack.undo()  # the lesion comes back, and the saved mask follows
    _idle(qtbot, win)
    np.testing.assert_array_equal(win.session.results[corrected_key].labels.array, model_mask)
    np.testing.assert_array_equal(review.state.load_corrected(names[1], image), model_mask)
    win.undo_stack.redo()
    _idle(qtbot, win)
    assert not review.state.load_corrected(names[1], image).any()
    # Strokes faster than saves: the file ends as the last stroke left the mask.
    win.mask_editor.set_tool("brush")
    for point in ((2, 2), (5, 5), (8, 3)):
        viewer.stroke.emit("axial", "press", *point)
        viewer.stroke.emit("axial", "release", *point)
    _idle(qtbot, win)
    shown = win.session.results[corrected_key].labels.array
    assert shown.any()
    np.testing.assert_array_equal(review.state.load_corrected(names[1], image), shown)
    painted = shown.copy()
    row = win.session.results[corrected_key].result.rows[1]
    assert row.voxels == int((shown == 1).sum())  # readouts kept up to date without a recount
    win.mask_editor.set_tool("navigate")
    _go(qtbot, win, review.next_unreviewed)
    assert review.current == names[2]
    assert review.panel.progress_label.text() == "2 of 20 reviewed"
    review.panel.set_filter("rejected")
    assert review.panel.shown_cases == []
    review.panel.set_filter("corrected")
    assert review.panel.shown_cases == [names[1]]
    review.panel.set_filter("")
    win.close()
    _idle(qtbot, win)

    # Reopened (a new window, as after quitting): resumes on case 3 with every verdict.
    again = _window(qtbot, tmp_path / "two")
    _open(qtbot, again, worklist_folder)
    assert again.review.current == names[2]
    state = again.review.state
    assert [state.cases[n].status for n in names[:3]] == ["accepted", "corrected", "unreviewed"]
    assert state.cases[names[1]].comment == "misses the lower slab"
    assert state.cases[names[0]].reviewer == "Dr Test"
    assert state.cases[names[0]].seconds > 0
    _go(qtbot, again, lambda: again.review.go_to(names[1]))
    assert again.current_key.endswith("+ corrected")
    np.testing.assert_array_equal(again.session.results[again.current_key].labels.array, painted)
    again.review.export(tmp_path / "review.csv")
    _idle(qtbot, again)
    lines = (tmp_path / "review.csv").read_text().splitlines()
    assert len(lines) == 21 and lines[2].startswith(f"{names[1]},corrected,misses the lower slab")
    assert not again.error_boxes


def test_resume_after_the_app_is_killed_in_the_middle_of_a_review(qtbot, tmp_path):
    folder = write_case_folder(tmp_path / "worklist", 20)
    done = kill_after_lines(
        "tests.review.review_gui_writer",
        str(folder),
        str(tmp_path / "k.ini"),
        lines=7,
        data_dir=tmp_path / "data",
    )
    assert len(done) == 7
    names = read_worklist(folder).names
    assert done == names[:7]
    win = _window(qtbot, tmp_path / "after")
    _open(qtbot, win, folder)
    state = win.review.state
    for index, name in enumerate(done):
        assert state.cases[name].status == ("corrected" if index % 3 == 2 else "accepted"), name
    assert names.index(win.review.current) >= 6  # resumes where the reviewer was
    _go(qtbot, win, lambda: win.review.go_to(done[2]))
    assert win.current_key.endswith("+ corrected")
    assert not win.session.results[win.current_key].labels.array.any()
    assert not win.error_boxes


def test_with_a_model_each_case_is_segmented_and_the_next_one_ahead(qtbot, tmp_path):
    from core.demo import demo_paths

    folder = write_case_folder(tmp_path / "worklist", 3, predictions=False)
    win = _window(qtbot, tmp_path)
    win.open_model(str(demo_paths().model))
    _idle(qtbot, win)
    win.segmentation_panel.decision_combo.setCurrentIndex(
        win.segmentation_panel.decision_combo.findData("argmax")
    )
    _open(qtbot, win, folder)
    names = read_worklist(folder).names
    assert win.current_key.endswith("+ argmax")
    assert names[1] in win.review._cache and win.review._cache[names[1]].segmented is not None
    _go(qtbot, win, lambda: win.review.step(1))
    entry = win.session.results[win.current_key]
    truth = win.session.ground_truth
    mask = entry.result.mask
    for row in entry.result.rows:
        a, b = mask == row.label, truth == row.label
        total = a.sum() + b.sum()
        assert row.dice == pytest.approx(1.0 if total == 0 else 2 * (a & b).sum() / total)
    assert win.review.waits[-1][2] is True
    assert not win.error_boxes


def test_dicom_seg_opens_as_ground_truth_and_a_seg_of_another_series_is_refused(qtbot, tmp_path):
    from pathlib import Path

    from pydicom.data import get_testdata_file

    from core.io.dicom_seg import write_dicom_seg
    from core.phantom import make_phantom
    from tests.dicom_series import write_dicom_series

    ct5n = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
    image = read_image(ct5n)
    mask = np.zeros(image.shape3, np.uint8)
    mask[3:9, 2:7, 1:4] = 1
    seg = write_dicom_seg(mask, tmp_path / "ct5n.dcm", reference=image, class_names=["bg", "a"])
    phantom, _ = make_phantom(1, shape=(16, 16, 16), spacing=(1.0, 1.0, 2.0))
    write_dicom_series(phantom.array.astype(np.int16), phantom.affine, tmp_path / "other")
    other = read_image(tmp_path / "other")
    foreign = write_dicom_seg(
        np.ones(other.shape3, np.uint8), tmp_path / "o.dcm", reference=other, class_names=["b", "x"]
    )
    win = _window(qtbot, tmp_path)
    win.open_image(str(ct5n))
    _idle(qtbot, win)
    win.open_ground_truth(str(seg))
    _idle(qtbot, win)
    np.testing.assert_array_equal(win.session.ground_truth, mask)
    win.open_ground_truth(str(foreign))
    _idle(qtbot, win)
    assert len(win.error_boxes) == 1
    assert "made on series" in win.error_boxes[0].text() + win.error_boxes[0].informativeText()
    np.testing.assert_array_equal(win.session.ground_truth, mask)  # the first one stays
    # Save mask (Ctrl+S) as .dcm: a DICOM SEG of CT5N with the row's labels.
    from core.display import prepare_labels
    from core.review import mask_result

    edited = mask.copy()
    edited[0:2, 0:2, 0] = 1
    result = mask_result(edited, spacing=image.spacing, class_names=["bg", "a"],
                         model_name="m", decision="file")  # fmt: skip
    entry = win.session.add_result("m", result, prepare_labels(edited, win.session.image))
    win.save_mask(entry.key, str(tmp_path / "saved.dcm"))
    _idle(qtbot, win)
    np.testing.assert_array_equal(read_mask(tmp_path / "saved.dcm", reference=image).array, edited)
    assert len(win.error_boxes) == 1

"""What a new user meets first: the layout at laptop sizes, legible letters, keys that work at
once, one numbering, and the command line opening what the GUI opens (issue 18)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractScrollArea, QApplication

from core.cli.parser import parse_command_line
from core.display import WINDOW_PRESETS
from core.io import Image
from core.phantom import make_phantom
from gui.app import _screenshot_when_idle, create_window
from gui.widgets.help_dialog import NUMBERING
from gui.widgets.slice_view import SliceView
from gui.workbench_window import WorkbenchWindow
from tests.dicom_series import write_dicom_series
from tests.gui.test_workbench import JOB_TIMEOUT, wait_idle, window  # noqa: F401 - fixture

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
FOUR_D = NIBABEL_DATA / "example4d.nii.gz"
CLASSES = ["background", "liver", "kidney", "lesion"]
COLOURS = [(0, 0, 0), (220, 120, 60), (70, 160, 230), (250, 230, 40)]


@pytest.fixture
def ct_file(tmp_path):
    image, _ = make_phantom(3, shape=(40, 36, 16))
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(image.array, image.affine), path)
    return path


def open_and_wait(qtbot, win, path, **choice):
    previous = win.session.image
    win.open_image(str(path), **choice)
    qtbot.waitUntil(lambda: win.session.image is not previous, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)


# --- 1. layout at 1400 x 900 and 1280 x 800 ---------------------------------------------------


@pytest.mark.parametrize("size", [(1400, 900), (1280, 800)])
def test_every_panel_fits_without_sideways_scrolling(qtbot, tmp_path, ct_file, size):
    from PySide6.QtCore import QSettings

    settings = QSettings(str(tmp_path / "layout.ini"), QSettings.Format.IniFormat)
    win = WorkbenchWindow(settings=settings)
    win.confirm_close_during_job = lambda: True
    qtbot.addWidget(win)
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    qtbot.wait(50)
    open_and_wait(qtbot, win, ct_file)
    win.viewer.set_labels(CLASSES, COLOURS)
    for dock in (win.data_dock, win.segmentation_dock, win.quantization_dock):
        dock.raise_()
        qtbot.wait(50)
        for panel in (win.data_panel, win.segmentation_panel, win.quantization_panel):
            if panel.isVisible():
                # The panel's narrowest layout fits the dock: nothing is cut or scrolled.
                assert panel.minimumSizeHint().width() <= dock.width(), (dock.windowTitle(), size)
    for dock in (win.quantization_dock, win.overlay_dock):
        dock.raise_()
        qtbot.wait(50)
        scroller = dock.widget()
        assert isinstance(scroller, QAbstractScrollArea)
        assert not scroller.horizontalScrollBar().isVisible(), (dock.windowTitle(), size)
    # The Cases panel of a review, with a comment longer than the dock is wide.
    cases = win.review.panel
    win.review.dock.show()
    win.review.dock.raise_()
    cases.show_rows(
        [
            {"case": "patient01", "status": "rejected", "seconds": 75.0, "edit_dice": 0.97,
             "comment": "lesion missed near the dome of the liver, and the kidney edge is off"},
        ],
        "patient01",
    )  # fmt: skip
    qtbot.wait(50)
    assert cases.minimumSizeHint().width() <= win.review.dock.width(), size
    assert not cases.table.horizontalScrollBar().isVisible(), size
    assert "kidney edge" in cases.table.item(0, 4).toolTip()
    win.review.dock.hide()
    # Every label row is visible in the label table, not 2 of 3.
    table = win.overlay_panel.label_table
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    assert table.rowCount() == 3 and table.viewport().height() >= rows
    # The loss curve has a tab of its own with room for its axis.
    win.quantization_panel.run_started.emit()
    qtbot.wait(50)
    assert win.loss_dock.isVisible() and win.quantization_panel.loss_curve.height() >= 150
    # The presets are listed once: in the Overlay panel, not again in the readout.
    listed = [
        win.overlay_panel.preset_list.item(i).text() for i in range(1, len(WINDOW_PRESETS) + 1)
    ]
    assert listed == [p.label for p in WINDOW_PRESETS]
    assert not any(p.label in win.viewer.info_label.text() for p in WINDOW_PRESETS)
    win.close()


# --- 2. legibility -------------------------------------------------------------------------


def test_orientation_letters_and_titles_stay_readable_on_a_white_image(qtbot):
    from gui.widgets.ortho_viewer import OrthoViewer

    viewer = OrthoViewer()
    qtbot.addWidget(viewer)
    viewer.resize(700, 600)
    viewer.show()
    white = np.full((30, 30, 10), 1000.0, np.float32)
    viewer.set_image(Image(array=white, affine=np.eye(4)), window=(500.0, 1000.0))
    qtbot.wait(100)
    view = viewer.views["axial"]
    picture = view.grab().toImage()
    for label in (view.letter_labels["left"], view.slice_label):
        box = label.geometry()
        pixels = np.array(
            [
                [picture.pixelColor(x, y).lightness() for x in range(box.left(), box.right())]
                for y in range(box.top(), box.bottom())
            ]
        )
        # A dark plate under the letters: most of the box is dark although the image is white.
        assert np.median(pixels) < 100, label.text()
        assert pixels.max() > 150  # the letters themselves are light
    outside = picture.pixelColor(view.width() // 2, view.height() // 2).lightness()
    assert outside > 240  # the image really is white there


def test_windows_read_rounded_and_presets_fit_the_modality(window, qtbot, ct_file):  # noqa: F811
    open_and_wait(qtbot, window, ct_file)
    center, width = window.viewer.window
    assert center == round(center) and width == round(width)
    values = np.asarray(nib.load(ct_file).dataobj)
    low, high = np.percentile(values, [0.1, 99.9])
    assert abs(width - (high - low)) <= 1 and abs(center - (low + high) / 2) <= 1
    assert window.viewer.presets == WINDOW_PRESETS  # a NIfTI CT: HU presets
    open_and_wait(qtbot, window, NIBABEL_DATA / "anatomical.nii")
    names = [p.name for p in window.viewer.presets]
    assert names == ["Percentiles 1-99 %", "Full range"]
    mr = np.asarray(nib.load(NIBABEL_DATA / "anatomical.nii").dataobj).astype(float)
    window.viewer.apply_preset("2")
    center, width = window.viewer.window
    assert (center - width / 2, center + width / 2) == pytest.approx((mr.min(), mr.max()), abs=1)
    panel_rows = window.overlay_panel.preset_list.count()
    assert panel_rows == 3  # key 0 and the two presets of an MR image


# --- 3. keys without a click ---------------------------------------------------------------


def test_keys_act_on_the_views_from_the_moment_the_image_opens(window, qtbot, ct_file):  # noqa: F811
    window.activateWindow()
    open_and_wait(qtbot, window, ct_file)
    focused = window.focusWidget()
    assert isinstance(focused, SliceView) and focused is window.viewer.views["axial"]
    QTest.keyClick(focused, Qt.Key.Key_2)
    assert window.viewer.window == (-600.0, 1500.0)  # lung
    before = window.viewer.slice_index("axial")
    QTest.keyClick(focused, Qt.Key.Key_PageUp)
    assert window.viewer.slice_index("axial") == before + 1
    QTest.keyClick(focused, Qt.Key.Key_O)
    assert not window.viewer.overlay_visible


# --- 4. one numbering, and the title names the volume or series -----------------------------


def test_slice_counter_and_ijk_readout_count_from_zero(window, qtbot, ct_file):  # noqa: F811
    open_and_wait(qtbot, window, ct_file)
    viewer = window.viewer
    k = viewer.cursor_voxel[viewer.plane_axes("axial").slice_axis]
    assert viewer.views["axial"].slice_label.text() == f"Axial {k} of 0–15"
    assert f", {k})" in viewer.cursor_info_at(viewer.cursor_voxel).text()  # IJK (i, j, k)
    assert "count from 0" in NUMBERING


def test_title_names_the_volume_chosen(window, qtbot, monkeypatch):  # noqa: F811
    monkeypatch.setattr(window, "ask_volume", lambda path, choice: 1)
    open_and_wait(qtbot, window, FOUR_D)
    assert window.windowTitle().endswith("example4d.nii.gz — volume 1 of 0-1")
    assert window.hint.text().startswith("example4d.nii.gz — volume 1 of 0-1 (")
    expected = np.asarray(nib.load(FOUR_D).dataobj)[..., 1]
    np.testing.assert_array_equal(window.session.image.array, expected)


def two_series_folder(tmp_path):
    """Two series that differ only in their UID and number: the picker must tell them apart."""
    folder = tmp_path / "dicom"
    volume = np.arange(8 * 6 * 3, dtype=np.int16).reshape(8, 6, 3)
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    for index in (1, 2):
        write_dicom_series(volume * index, affine, folder / f"s{index}")
        for file in (folder / f"s{index}").iterdir():
            ds = pydicom.dcmread(file)
            ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.{index}"
            ds.SeriesNumber = index + 2
            ds.SeriesDescription = "T1 AX"
            ds.SeriesDate, ds.SeriesTime = "20240131", f"10{index}205"
            ds.save_as(file)
    return folder


def test_dicom_image_argument_asks_which_series_with_distinct_entries(window, qtbot, tmp_path):  # noqa: F811
    folder = two_series_folder(tmp_path)
    offered = []

    def pick(path, series):
        offered.extend(series)
        from core.io.dicom import series_titles

        titles = series_titles(series)
        assert len(set(titles)) == 2
        assert all("#" in t and "2024-01-31" in t and "3 slices" in t for t in titles)
        return series[1].uid

    window.ask_series = pick
    open_and_wait(qtbot, window, folder)  # --image FOLDER goes through the series question
    assert len(offered) == 2
    assert "series #" in window.windowTitle() and offered[1].title() in window.windowTitle()


# --- 5 and 10. the command line opens what the GUI opens, and screenshots wait ------------


def test_a_bare_path_is_the_image_and_series_volume_need_one(tmp_path, ct_file):
    args = parse_command_line([str(ct_file), "--no-demo"])
    assert args.command is None and args.image == str(ct_file)
    args = parse_command_line(["--threads", "1", str(ct_file), "--volume", "0"])
    assert args.image == str(ct_file) and args.volume == 0 and args.threads == 1
    assert parse_command_line(["info", str(ct_file)]).command == "info"
    for words in (["--volume", "1"], ["segmnet", "x"], [str(ct_file), "--image", str(ct_file)]):
        with pytest.raises(SystemExit) as stopped:
            parse_command_line(words)
        assert stopped.value.code == 2, words


def test_command_line_series_and_volume_open_without_questions(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_DATA_DIR", str(tmp_path / "data"))
    folder = two_series_folder(tmp_path)
    asked = []
    monkeypatch.setattr(WorkbenchWindow, "ask_series", lambda *a: asked.append(a))
    monkeypatch.setattr(WorkbenchWindow, "ask_volume", lambda *a: asked.append(a))
    uid = "1.2.826.0.1.3680043.8.498.2"
    win = create_window(parse_command_line([str(folder), "--series", uid, "--threads", "1"]))
    qtbot.addWidget(win)
    qtbot.waitUntil(
        lambda: win.startup_opener.done and win.session.image is not None, timeout=JOB_TIMEOUT
    )
    assert asked == []
    assert int(win.session.image.array.max()) == 2 * (8 * 6 * 3 - 1)  # series 2's values
    win4d = create_window(parse_command_line([str(FOUR_D), "--volume", "1", "--threads", "1"]))
    qtbot.addWidget(win4d)
    qtbot.waitUntil(
        lambda: win4d.startup_opener.done and win4d.session.image is not None, timeout=JOB_TIMEOUT
    )
    assert asked == [] and "volume 1" in win4d.windowTitle()
    expected = np.asarray(nib.load(FOUR_D).dataobj)[..., 1]
    np.testing.assert_array_equal(win4d.session.image.array, expected)


def test_screenshot_waits_for_the_volume_question(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_DATA_DIR", str(tmp_path / "data"))
    shot = tmp_path / "shot.png"
    seen = []

    def answer_late(self, path, choice):
        qtbot.wait(1500)  # the user takes a while; the screenshot timer runs meanwhile
        seen.append(shot.exists())
        return 1

    monkeypatch.setattr(WorkbenchWindow, "ask_volume", answer_late)
    win = create_window(parse_command_line([str(FOUR_D), "--threads", "1"]))
    qtbot.addWidget(win)
    win.show()
    _screenshot_when_idle(win, str(shot), win.startup_opener)
    qtbot.waitUntil(shot.exists, timeout=JOB_TIMEOUT)
    assert seen == [False]  # nothing was saved while the question was open
    assert win.session.image is not None and "volume 1" in win.windowTitle()
    assert QApplication.instance() is not None

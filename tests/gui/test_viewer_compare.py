"""CompareViewer synchronisation and modes, and the OverlayPanel's controls, offscreen."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from core.display import WINDOW_PRESETS
from core.io import Image
from gui.widgets.compare_viewer import CompareViewer
from gui.widgets.ortho_viewer import OrthoViewer
from gui.widgets.overlay_panel import OverlayPanel

SHAPE = (12, 14, 10)
AFFINE = np.diag([-2.0, 3.0, 4.0, 1.0])
NAMES = ["background", "liver", "tumour"]
COLORS = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]


def unique_image():
    values = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    return Image(array=values, affine=AFFINE, modality="CT")  # CT: the HU presets on 1-6


def pixel_of(viewer, view, ijk):
    shown = viewer.views[view].image_item.image
    hits = np.argwhere(shown == viewer.image.array[tuple(ijk)])
    assert len(hits) == 1
    return tuple(int(v) for v in hits[0])


@pytest.fixture
def masks():
    left = np.zeros(SHAPE, dtype=np.uint8)
    right = np.zeros(SHAPE, dtype=np.uint8)
    left[:, :, 5] = 1  # the whole axial slice k = 5
    right[:, :, 5] = 2
    return left, right


@pytest.fixture
def compare(qtbot, masks):
    widget = CompareViewer()
    qtbot.addWidget(widget)
    widget.resize(1000, 600)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_image(unique_image())
    widget.set_labels(NAMES, COLORS)
    widget.set_results(masks[0], "FP32 + argmax", masks[1], "W4 FlexRound + RMA")
    QApplication.processEvents()
    yield widget
    widget.close()


def test_side_by_side_shows_each_result(compare):
    assert compare.right.isVisible()
    left = compare.left.views["axial"].overlay_rgba()
    right = compare.right.views["axial"].overlay_rgba()
    assert (left[..., :3] == COLORS[1]).all() and (right[..., :3] == COLORS[2]).all()
    assert compare.title_labels[1].text() == "W4 FlexRound + RMA"


def test_scroll_click_and_window_stay_in_sync(compare, qtbot):
    view = compare.left.views["axial"]
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_PageUp)
    assert compare.right.views["axial"].slice_index == view.slice_index == 6
    compare.right.views["sagittal"].set_slice(2)
    assert compare.left.cursor_voxel == compare.right.cursor_voxel == (2, 7, 6)
    compare.right.apply_preset("4")
    assert compare.left.window == compare.right.window == (40.0, 80.0)
    qtbot.keyClick(view, Qt.Key.Key_1)
    assert compare.right.window == (40.0, 400.0)
    assert tuple(compare.right.views["coronal"].image_item.levels) == (-160.0, 240.0)


def test_zoom_and_pan_are_linked(compare):
    left_box = compare.left.views["coronal"].view_box
    right_box = compare.right.views["coronal"].view_box
    left_box.setRange(xRange=(5, 15), yRange=(5, 15), padding=0)
    QApplication.processEvents()
    np.testing.assert_allclose(right_box.viewRange(), left_box.viewRange())


def test_settings_reach_both_viewers(compare):
    compare.set_overlay_style(False)
    compare.set_opacity(0.2)
    compare.set_label_visible(2, False)
    for viewer in compare.viewers:
        assert not viewer.overlay_filled and viewer.opacity == 0.2
        assert not viewer.is_label_visible(2)
    assert not (compare.right.views["axial"].overlay_rgba()[..., 3] > 0).any()


def test_swipe_splits_columns_between_results(compare):
    compare.set_mode("swipe")
    compare.set_swipe_position(0.25)
    assert not compare.right.isVisible() and compare.swipe_slider.isVisible()
    rgba = compare.left.views["axial"].overlay_rgba()
    cols = rgba.shape[1]
    split = round(0.25 * cols)
    assert (rgba[:, :split, :3] == COLORS[1]).all()
    assert (rgba[:, split:, :3] == COLORS[2]).all()
    assert compare.left.views["axial"].swipe_line.isVisible()
    compare.set_mode("side_by_side")
    assert not compare.left.views["axial"].swipe_line.isVisible()
    assert (compare.left.views["axial"].overlay_rgba()[..., :3] == COLORS[1]).all()


def test_toggle_switches_result_with_t(compare, qtbot):
    compare.set_mode("toggle")
    view = compare.left.views["axial"]
    assert (view.overlay_rgba()[..., :3] == COLORS[1]).all()
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_T)
    assert compare.shown_result == 1
    assert (view.overlay_rgba()[..., :3] == COLORS[2]).all()
    assert "W4 FlexRound + RMA" in compare.title_labels[0].text().split("(")[0]


def test_compare_screenshot_has_both_viewers(compare, tmp_path):
    single = compare.left.grab_views()
    both = compare.grab_views()
    assert both.width() > single.width()
    compare.save_screenshot(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 0


@pytest.fixture
def panel_and_viewer(qtbot):
    viewer = OrthoViewer()
    panel = OverlayPanel(viewer)
    for widget in (viewer, panel):
        qtbot.addWidget(widget)
    viewer.set_image(unique_image())
    viewer.set_labels(NAMES, COLORS)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1, 1, 5] = 1
    mask[2, 2, 5] = 2
    viewer.set_prediction(mask)
    yield panel, viewer
    panel.close()
    viewer.close()


def test_panel_lists_labels_and_controls_visibility(panel_and_viewer):
    panel, viewer = panel_and_viewer
    assert panel.label_table.rowCount() == 2
    assert panel.label_table.item(1, 0).text() == "2  tumour"
    panel.label_table.item(1, 0).setCheckState(Qt.CheckState.Unchecked)
    assert not viewer.is_label_visible(2)
    rgba = viewer.views["axial"].overlay_rgba()
    assert rgba[pixel_of(viewer, "axial", (2, 2, 5))][3] == 0
    assert rgba[pixel_of(viewer, "axial", (1, 1, 5))][3] > 0
    panel.label_table.cellWidget(0, 1).setValue(40)
    assert viewer.label_opacity(1) == pytest.approx(0.4)


def test_panel_mode_style_opacity_and_presets(panel_and_viewer):
    panel, viewer = panel_and_viewer
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("difference"))
    assert viewer.overlay_mode == "difference"
    panel.outline_check.setChecked(True)
    assert not viewer.overlay_filled
    panel.opacity_slider.setValue(80)
    assert viewer.opacity == pytest.approx(0.8)
    assert panel.preset_list.count() == len(WINDOW_PRESETS) + 1
    lung = next(
        i for i in range(panel.preset_list.count()) if "Lung" in panel.preset_list.item(i).text()
    )
    panel.preset_list.itemClicked.emit(panel.preset_list.item(lung))
    assert viewer.window == (-600.0, 1500.0)
    assert panel.window_label.text() == "Window: W 1500 L -600"
    viewer.set_overlay_visible(False)  # e.g. the O key: the checkbox follows
    assert not panel.visible_check.isChecked()
    panel.neurological_check.setChecked(True)
    assert viewer.convention == "neurological"
    assert viewer.views["axial"].letter_labels["left"].text() == "L"


def test_panel_binds_to_compare_viewer(qtbot, compare):
    panel = OverlayPanel(compare)
    qtbot.addWidget(panel)
    panel.opacity_slider.setValue(30)
    assert compare.left.opacity == compare.right.opacity == pytest.approx(0.3)
    assert panel.label_table.rowCount() == 2
    panel.close()

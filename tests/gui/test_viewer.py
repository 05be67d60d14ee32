"""OrthoViewer and SliceView offscreen: slicing, window/level, overlays, geometry, readout.

Positions on screen are checked through an image whose voxel values are all different, so
"what is drawn at this pixel" identifies the voxel independently of the viewer's own maps.
"""

import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from core.display import DIFFERENCE_COLORS, prepare_labels
from core.io import Image
from gui.widgets.ortho_viewer import OrthoViewer

SHAPE = (12, 14, 10)
AFFINE = np.diag([-2.0, 3.0, 4.0, 1.0])  # LAS with unequal spacing
COLORS = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]


def unique_image(affine=AFFINE, shape=SHAPE):
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return Image(array=values, affine=affine, modality="CT")  # CT: the HU presets on 1-6


def pixel_of(viewer, view, ijk):
    """(row, col) where voxel ijk is drawn, found by its unique value in the shown slice."""
    shown = viewer.views[view].image_item.image
    hits = np.argwhere(shown == viewer.image.array[tuple(ijk)])
    assert len(hits) == 1
    return tuple(int(v) for v in hits[0])


def voxel_at(viewer, view, row, col):
    """The voxel drawn at (row, col) of a view, found by value."""
    value = viewer.views[view].image_item.image[row, col]
    return tuple(int(v) for v in np.argwhere(viewer.image.array == value)[0])


def viewport_point(view, row, col):
    """Viewport pixel at the centre of image pixel (row, col), through pyqtgraph's own maps."""
    scene = view.image_item.mapToScene(QPointF(col + 0.5, row + 0.5))
    return view.graphics.mapFromScene(scene)


@pytest.fixture
def viewer(qtbot):
    widget = OrthoViewer()
    qtbot.addWidget(widget)
    widget.resize(700, 700)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.close()


@pytest.fixture
def loaded(viewer):
    viewer.set_image(unique_image())
    viewer.set_labels(["background", "liver", "tumour"], COLORS)
    QApplication.processEvents()
    return viewer


def test_empty_state_then_three_views(viewer):
    assert viewer._stack.currentWidget() is viewer._empty_label
    viewer.set_image(unique_image())
    assert viewer.active_views == ["axial", "coronal", "sagittal"]
    assert viewer.cursor_voxel == (6, 7, 5)
    assert viewer.views["axial"].slice_label.text() == "Axial 5 of 0–9"
    viewer.clear()
    assert viewer._stack.currentWidget() is viewer._empty_label


def test_aspect_follows_voxel_spacing(loaded):
    # LAS: axial columns run along i (2 mm), rows along j (3 mm).
    item = loaded.views["axial"].image_item
    rect = item.mapRectToParent(item.boundingRect())
    assert (rect.width(), rect.height()) == pytest.approx((12 * 2.0, 14 * 3.0))
    item = loaded.views["sagittal"].image_item
    rect = item.mapRectToParent(item.boundingRect())
    assert (rect.width(), rect.height()) == pytest.approx((14 * 3.0, 10 * 4.0))


def test_keys_scroll_slices_and_move_cursor(loaded, qtbot):
    view = loaded.views["axial"]
    seen = []
    loaded.slice_changed.connect(lambda name, index: seen.append((name, index)))
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_PageUp)
    assert view.slice_index == 6 and loaded.cursor_voxel[2] == 6
    qtbot.keyClick(view, Qt.Key.Key_Down)
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.slice_index == 4
    qtbot.keyClick(view, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    assert view.slice_index == 9  # clamped to the last slice
    assert view.slice_label.text() == "Axial 9 of 0–9"
    assert seen[-1] == ("axial", 9)
    # The shown slice is the voxel slice k = 9 (values identify it).
    np.testing.assert_array_equal(
        np.sort(view.image_item.image.ravel()), np.sort(loaded.image.array[:, :, 9].ravel())
    )


def test_wheel_scrolls_and_ctrl_wheel_zooms(loaded):
    view = loaded.views["coronal"]
    start = view.slice_index
    centre = view.graphics.viewport().rect().center()

    def wheel(modifiers):
        event = QWheelEvent(
            QPointF(centre),
            QPointF(view.graphics.viewport().mapToGlobal(centre)),
            QPoint(0, 0),
            QPoint(0, 120),
            Qt.MouseButton.NoButton,
            modifiers,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(view.graphics.viewport(), event)

    wheel(Qt.KeyboardModifier.NoModifier)
    assert view.slice_index == start + 1
    before = view.view_box.viewRange()
    wheel(Qt.KeyboardModifier.ControlModifier)
    after = view.view_box.viewRange()
    assert view.slice_index == start + 1
    assert after[0][1] - after[0][0] < before[0][1] - before[0][0]


def test_presets_and_drag_change_levels(loaded, qtbot):
    windows = []
    loaded.window_changed.connect(lambda c, w: windows.append((c, w)))
    default = loaded.window
    view = loaded.views["axial"]
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_2)
    assert loaded.window == (-600.0, 1500.0)
    assert tuple(view.image_item.levels) == (-1350.0, 150.0)
    assert tuple(loaded.views["sagittal"].image_item.levels) == (-1350.0, 150.0)
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert loaded.window == default
    assert windows == [(-600.0, 1500.0), default]
    # Dragging right widens the window; dragging down raises the level.
    center, width = loaded.window
    view.window_dragged.emit(256.0, 0.0)
    assert loaded.window == pytest.approx((center, 2 * width))
    assert f"W {round(2 * width)} L {round(center)}" in loaded.info_label.text()


def test_default_window_uses_dicom_window(viewer):
    image = unique_image()
    image.window = (40.0, 400.0)
    viewer.set_image(image)
    assert viewer.window == (40.0, 400.0)
    assert tuple(viewer.views["axial"].image_item.levels) == (-160.0, 240.0)


def test_click_moves_crosshair_to_the_voxel_drawn_there(loaded, qtbot):
    view = loaded.views["axial"]
    point = viewport_point(view, 3, 8)
    qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton, pos=point)
    expected = voxel_at(loaded, "axial", 3, 8)
    assert loaded.cursor_voxel == expected
    # Other views now show slices through that voxel, with the crosshair on it.
    assert loaded.views["sagittal"].slice_index == expected[0]
    assert loaded.views["coronal"].slice_index == expected[1]
    row, col = pixel_of(loaded, "coronal", expected)
    assert loaded.views["coronal"].crosshair() == pytest.approx((row, col))


def test_hover_reports_voxel_world_and_labels(loaded, qtbot):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:5, 3:6, 5] = 2
    loaded.set_prediction(mask)
    loaded.set_ground_truth(np.ones(SHAPE, dtype=np.uint8))
    infos = []
    loaded.cursor_moved.connect(infos.append)
    view = loaded.views["axial"]
    row, col = pixel_of(loaded, "axial", (3, 4, 5))
    qtbot.mouseMove(view.graphics.viewport(), viewport_point(view, row, col))
    QApplication.processEvents()
    assert infos, "no cursor_moved on hover"
    info = infos[-1]
    assert info.ijk == (3, 4, 5)
    assert info.world == pytest.approx(tuple((AFFINE @ [3, 4, 5, 1])[:3]))
    assert info.intensity == loaded.image.array[3, 4, 5]
    assert (info.prediction_name, info.ground_truth_name) == ("tumour", "liver")
    assert info.view == "axial"
    assert loaded.hover_label.isVisible() and "IJK (3, 4, 5)" in loaded.hover_label.text()


def test_filled_overlay_colours_the_label_voxels(loaded):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2, 9, 5] = 1
    mask[7, 3, 5] = 2
    loaded.set_opacity(0.6)
    loaded.set_prediction(mask)
    rgba = loaded.views["axial"].overlay_rgba()
    assert rgba.shape[:2] == loaded.views["axial"].image_item.image.shape
    assert tuple(rgba[pixel_of(loaded, "axial", (2, 9, 5))]) == (255, 0, 0, 153)
    assert tuple(rgba[pixel_of(loaded, "axial", (7, 3, 5))]) == (0, 0, 255, 153)
    assert (rgba[..., 3] > 0).sum() == 2
    loaded.set_label_visible(2, False)
    rgba = loaded.views["axial"].overlay_rgba()
    assert (rgba[..., 3] > 0).sum() == 1
    loaded.set_label_opacity(1, 0.5)
    assert loaded.views["axial"].overlay_rgba()[pixel_of(loaded, "axial", (2, 9, 5))][3] == 76


def test_outline_mode_colours_only_boundary_pixels(loaded, qtbot):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:7, 3:8, 5] = 1  # a 5x5 square in the axial slice k = 5
    loaded.set_prediction(mask)
    loaded.views["axial"].setFocus()
    qtbot.keyClick(loaded.views["axial"], Qt.Key.Key_F)
    assert not loaded.overlay_filled
    drawn = loaded.views["axial"].overlay_rgba()[..., 3] > 0
    assert drawn.sum() == 16
    assert not drawn[pixel_of(loaded, "axial", (4, 5, 5))]  # the square's centre
    for ijk in [(2, 3, 5), (6, 7, 5), (2, 5, 5), (4, 7, 5)]:
        assert drawn[pixel_of(loaded, "axial", ijk)]


def test_difference_mode_colours_tp_fp_fn(loaded):
    truth = np.zeros(SHAPE, dtype=np.uint8)
    prediction = np.zeros(SHAPE, dtype=np.uint8)
    truth[1:4, 1:4, 5] = 1
    prediction[2:5, 1:4, 5] = 1
    loaded.set_ground_truth(truth)
    loaded.set_prediction(prediction)
    loaded.set_opacity(1.0)
    loaded.set_overlay_mode("difference")
    rgba = loaded.views["axial"].overlay_rgba()
    cases = {(2, 2, 5): 1, (4, 2, 5): 2, (1, 2, 5): 3}  # TP, FP, FN worked by hand
    for ijk, klass in cases.items():
        assert tuple(rgba[pixel_of(loaded, "axial", ijk)]) == (*DIFFERENCE_COLORS[klass], 255)
    assert (rgba[..., 3] > 0).sum() == 12  # 6 TP + 3 FP + 3 FN
    loaded.set_overlay_mode("both")  # prediction filled, ground truth outlined on top
    rgba = loaded.views["axial"].overlay_rgba()
    assert tuple(rgba[pixel_of(loaded, "axial", (4, 2, 5))][:3]) == COLORS[1]


def test_overlay_key_toggles_and_scroll_redraws(loaded, qtbot):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[5, 5, 5] = 1
    loaded.set_prediction(mask)
    view = loaded.views["axial"]
    assert (view.overlay_rgba()[..., 3] > 0).sum() == 1
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_PageUp)
    assert (view.overlay_rgba()[..., 3] > 0).sum() == 0  # slice k = 6 has no label
    qtbot.keyClick(view, Qt.Key.Key_PageDown)
    qtbot.keyClick(view, Qt.Key.Key_O)
    assert view.overlay_rgba() is None and not loaded.overlay_visible
    qtbot.keyClick(view, Qt.Key.Key_O)
    assert (view.overlay_rgba()[..., 3] > 0).sum() == 1


@pytest.mark.parametrize(
    ("convention", "axial", "coronal"),
    [
        ("radiological", ("R", "L", "A", "P"), ("R", "L", "S", "I")),
        ("neurological", ("L", "R", "A", "P"), ("L", "R", "S", "I")),
    ],
)
def test_letters_for_anatomical_nii(viewer, convention, axial, coronal):
    affine = nib.load(os.path.join(data_path, "anatomical.nii")).affine
    image = unique_image(affine=affine, shape=(33, 41, 25))
    viewer.set_convention(convention)
    viewer.set_image(image)
    edges = ("left", "right", "top", "bottom")
    text = {
        view: tuple(viewer.views[view].letter_labels[e].text() for e in edges)
        for view in ("axial", "coronal", "sagittal")
    }
    assert text == {"axial": axial, "coronal": coronal, "sagittal": ("A", "P", "S", "I")}
    # Independently through the affine: world x of the left edge vs the right edge.
    left = affine @ [*voxel_at(viewer, "axial", 20, 0), 1]
    right = affine @ [*voxel_at(viewer, "axial", 20, 32), 1]
    assert (left[0] > right[0]) == (convention == "radiological")  # x grows to the Right
    top = affine @ [*voxel_at(viewer, "axial", 0, 5), 1]
    bottom = affine @ [*voxel_at(viewer, "axial", 40, 5), 1]
    assert top[1] > bottom[1]  # anterior at the top


def test_switching_convention_keeps_cursor(loaded):
    loaded.set_cursor_voxel((2, 3, 4))
    before = pixel_of(loaded, "axial", (2, 3, 4))
    loaded.set_convention("neurological")
    assert loaded.cursor_voxel == (2, 3, 4)
    after = pixel_of(loaded, "axial", (2, 3, 4))
    assert after == (before[0], SHAPE[0] - 1 - before[1])
    assert loaded.views["axial"].crosshair() == pytest.approx(after)


def test_maximise_by_double_click_and_button(loaded, qtbot):
    view = loaded.views["sagittal"]
    point = viewport_point(view, 2, 2)
    viewport = view.graphics.viewport()
    # What a real double-click delivers (QTest.mouseDClick adds a second press that
    # pyqtgraph would report as a plain click): press, release, double-click, release.
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=point)
    left = Qt.MouseButton.LeftButton
    for kind, buttons in (
        (QEvent.Type.MouseButtonDblClick, left),
        (QEvent.Type.MouseButtonRelease, Qt.MouseButton.NoButton),
    ):
        event = QMouseEvent(
            kind,
            QPointF(point),
            QPointF(viewport.mapToGlobal(point)),
            left,
            buttons,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(viewport, event)
    assert loaded.maximized_view == "sagittal"
    assert not loaded.views["axial"].isVisible() and view.isVisible()
    loaded.views["sagittal"].maximize_button.click()
    assert loaded.maximized_view is None and loaded.views["axial"].isVisible()


def test_natural_grey_and_rgb_images_use_one_view(viewer):
    from skimage.data import astronaut, camera

    grey = camera()
    viewer.set_image(Image(array=grey[:, :, None], affine=np.eye(4), is_natural=True))
    assert viewer.active_views == ["axial"]
    assert not viewer.views["coronal"].isVisible()
    np.testing.assert_array_equal(viewer.views["axial"].image_item.image, grey)
    assert viewer.views["axial"].letter_labels["left"].text() == ""
    assert viewer.views["axial"].slice_label.text() == "Image 0 of 0–0"
    mask = np.zeros(grey.shape, dtype=np.uint8)
    mask[100:110, 200:220] = 1
    viewer.set_labels(["bg", "thing"], COLORS[:2])
    viewer.set_prediction(mask)  # 2-D masks are accepted for 2-D images
    np.testing.assert_array_equal(viewer.views["axial"].overlay_rgba()[..., 3] > 0, mask > 0)
    rgb = astronaut()
    viewer.set_image(Image(array=rgb[:, :, None, :], affine=np.eye(4), is_natural=True))
    np.testing.assert_array_equal(viewer.views["axial"].image_item.image, rgb)
    assert viewer.window == (128.0, 255.0)  # percentiles of a full-range photograph, rounded


def test_bad_masks_raise_value_error(loaded):
    with pytest.raises(ValueError, match="shape"):
        loaded.set_prediction(np.zeros((3, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="integer"):
        loaded.set_ground_truth(np.zeros(SHAPE, dtype=np.float32))
    with pytest.raises(ValueError, match="overlay mode"):
        loaded.set_overlay_mode("sparkles")


def test_screenshot_saves_the_views(loaded, tmp_path):
    loaded.set_prediction(np.ones(SHAPE, dtype=np.uint8))
    pixmap = loaded.grab_views()
    assert pixmap.width() > 100 and pixmap.height() > 100
    path = tmp_path / "views.png"
    loaded.save_screenshot(path)
    image = QImage(str(path))
    assert image.width() == pixmap.width() and image.height() == pixmap.height()
    with pytest.raises(ValueError, match="views.nosuchformat"):
        loaded.save_screenshot(tmp_path / "views.nosuchformat")


def test_masks_are_stored_compactly_in_the_image_memory_order(viewer):
    image = unique_image()
    image.array = np.asfortranarray(image.array)  # as nibabel returns NIfTI voxels
    viewer.set_image(image)
    mask = np.zeros(SHAPE, dtype=np.int64)  # as torch's argmax returns it: C order, int64
    mask[3, 4, 5] = 300
    viewer.set_prediction(mask)
    stored = viewer.prediction()
    assert stored.dtype == np.uint16 and stored.flags.f_contiguous
    np.testing.assert_array_equal(stored, mask)
    assert viewer.ground_truth() is None
    viewer.set_ground_truth(mask > 0)
    assert viewer.ground_truth().dtype == np.uint8 and viewer.ground_truth()[3, 4, 5] == 1


def test_prepared_label_volumes_are_shown_without_a_copy(viewer):
    image = unique_image()
    image.array = np.asfortranarray(image.array)
    viewer.set_image(image, window=(10.0, 20.0))  # a window computed elsewhere is taken as is
    assert viewer.window == (10.0, 20.0)
    mask = np.zeros(SHAPE, dtype=np.uint8, order="F")
    mask[3, 4, 5] = 7
    labels = prepare_labels(mask, image)
    viewer.set_prediction(labels)
    viewer.set_ground_truth(labels)
    assert viewer.prediction() is labels.array and viewer.ground_truth() is labels.array


class _DragEvent:
    """Stand-in for pyqtgraph's MouseDragEvent (offscreen Qt does not turn synthetic mouse
    moves into pyqtgraph drags); positions are in the ViewBox's item coordinates."""

    def __init__(self, button, start, end, modifiers=Qt.KeyboardModifier.NoModifier):
        self._button, self._start, self._end, self._modifiers = button, start, end, modifiers
        self.accepted = False

    def button(self):
        return self._button

    def modifiers(self):
        return self._modifiers

    def pos(self):
        return self._end

    def lastPos(self):  # noqa: N802 (pyqtgraph's name)
        return self._start

    def screenPos(self):  # noqa: N802
        return self._end

    def lastScreenPos(self):  # noqa: N802
        return self._start

    def accept(self):
        self.accepted = True


def test_mouse_gestures_map_to_window_pan_and_crosshair(loaded):
    view = loaded.views["axial"]
    box = view.view_box
    start = QPointF(50, 50)
    center, width = loaded.window
    box.mouseDragEvent(_DragEvent(Qt.MouseButton.RightButton, start, start + QPointF(256, 0)))
    assert loaded.window == pytest.approx((center, 2 * width))
    ctrl = Qt.KeyboardModifier.ControlModifier
    box.mouseDragEvent(_DragEvent(Qt.MouseButton.LeftButton, start, start + QPointF(0, 128), ctrl))
    assert loaded.window == pytest.approx((center + 128 * 2 * width / 256, 2 * width))
    before = box.viewRange()
    shift = Qt.KeyboardModifier.ShiftModifier
    box.mouseDragEvent(_DragEvent(Qt.MouseButton.LeftButton, start, start + QPointF(40, 0), shift))
    after = box.viewRange()
    assert after[0][0] < before[0][0] and after[1] == pytest.approx(before[1])
    target = box.mapFromView(view.image_item.mapToParent(QPointF(2.5, 9.5)))  # pixel (9, 2)
    box.mouseDragEvent(_DragEvent(Qt.MouseButton.LeftButton, start, target))
    assert loaded.cursor_voxel == voxel_at(loaded, "axial", 9, 2)

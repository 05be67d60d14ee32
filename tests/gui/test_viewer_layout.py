"""A single view (2-D picture, or a maximised view) fills the viewer, not one grid quadrant."""

from pathlib import Path

import nibabel as nib
import numpy as np
from skimage import data

from core.io import Image, read_image
from gui.widgets.ortho_viewer import OrthoViewer

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


def shown_viewer(qtbot):
    viewer = OrthoViewer()
    qtbot.addWidget(viewer)
    viewer.resize(800, 600)
    viewer.show()
    return viewer


def fraction_of_viewer(viewer, slot):
    view, area = viewer.views[slot], viewer.views_widget
    return view.width() / area.width(), view.height() / area.height()


def test_natural_image_view_fills_the_viewer(qtbot):
    viewer = shown_viewer(qtbot)
    picture = np.asarray(data.astronaut())[:, :, None, :]
    viewer.set_image(Image(array=picture, affine=np.eye(4), is_natural=True))
    qtbot.waitUntil(lambda: min(fraction_of_viewer(viewer, "axial")) > 0.9, timeout=3000)


def test_maximised_view_fills_the_viewer_and_comes_back(qtbot):
    viewer = shown_viewer(qtbot)
    viewer.set_image(read_image(ANATOMICAL))
    viewer.maximize_view("coronal")  # bottom-left cell of the grid
    qtbot.waitUntil(lambda: min(fraction_of_viewer(viewer, "coronal")) > 0.9, timeout=3000)
    viewer.maximize_view(None)
    qtbot.waitUntil(lambda: max(fraction_of_viewer(viewer, "coronal")) < 0.6, timeout=3000)

"""Make the README's screenshot of the review layout from the real app in an X window (Xvfb).

Writes a worklist of six CT phantoms with ground truths, opens it with the demo model, records
a few verdicts (accept, reject with a comment), corrects the third case with the brush and takes
an X-level screenshot with the Cases panel and the Corrections toolbar in view.

Usage: ``python tools/make_review_screenshot.py [--out docs/screenshots/review.png]``
(needs ``Xvfb`` and ImageMagick's ``import``; starts its own X server when DISPLAY is unset).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tools.screenshot_window as screens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots" / "review.png"))
    args = parser.parse_args()
    xvfb = screens.start_xvfb(":88", (1400, 900))
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import nibabel as nib
    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from core.demo import demo_paths
    from core.display.planes import voxel_to_plane
    from core.phantom import make_phantom
    from gui.workbench_window import WorkbenchWindow

    app = QApplication([])
    temp = Path(tempfile.mkdtemp())
    folder = temp / "worklist"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for seed in range(6):
        image, label = make_phantom(seed)
        name = f"patient{seed + 1:02d}"
        nib.save(nib.Nifti1Image(image.array, image.affine), folder / "images" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, image.affine), folder / "labels" / f"{name}.nii.gz")
    settings = QSettings(str(temp / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("review/reviewer", "Dr Example")
    window = WorkbenchWindow(settings=settings)
    window.setGeometry(0, 0, 1400, 900)  # the app's default size, as the other screenshots
    window.show()

    def wait(condition):
        screens.wait(app, condition)

    review = window.review
    try:
        window.open_model(str(demo_paths().model))
        wait(lambda: not window.runner.is_busy)
        window.viewer.apply_preset("1")
        review.open_worklist(folder)
        wait(lambda: review.current is not None and not window.runner.is_busy)
        review.set_status("accepted")
        review.step(1)
        wait(lambda: review.current == "patient02" and not window.runner.is_busy)
        review.set_comment("lesion missed near the dome")
        review.set_status("rejected")
        review.step(1)
        wait(lambda: review.current == "patient03" and not window.runner.is_busy)
        window.viewer.apply_preset("1")
        # Paint a stroke of the lesion label across the axial view at the crosshair.
        toolbar = window.correction_toolbar
        toolbar.select_tool("brush")
        toolbar.label_combo.setCurrentIndex(toolbar.label_combo.count() - 1)
        toolbar.radius_spin.setValue(4.0)
        viewer = window.viewer
        ijk = viewer.cursor_voxel
        _, row, col = voxel_to_plane(viewer.plane_axes("axial"), viewer.image.shape3, ijk)
        points = [(int(row) + 10, int(col) + 25 + step) for step in range(0, 14, 2)]
        viewer.stroke.emit("axial", "press", *points[0])
        for point in points[1:]:
            viewer.stroke.emit("axial", "move", *point)
        viewer.stroke.emit("axial", "release", *points[-1])
        wait(lambda: not window.runner.is_busy)
        review.dock.raise_()
        wait(lambda: True)
        screens.capture(Path(args.out))
        assert np.any(window.session.results[window.current_key].labels.array)
    finally:
        screens.close(window, app, xvfb)


if __name__ == "__main__":
    main()

"""Paint with real X pointer events (xdotool) on an oblique, anisotropic volume; print the result.

Started by ``tests/review/test_brush_xvfb.py`` with ``DISPLAY`` set to an Xvfb server. It opens
a one-case worklist (an oblique volume with 0.7 x 1.3 x 2.9 mm voxels and an empty prediction),
turns the brush on and, in each of the three views, moves the real pointer to a point, reads
the voxel the cursor readout reports there, and clicks with a one-voxel brush; then it drags a
wider brush across the axial view. What was painted is printed as one JSON line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ["QT_QPA_PLATFORM"] = "xcb"


def _worklist(folder: Path) -> Path:
    import nibabel as nib
    import numpy as np

    from tests.review.cases import OBLIQUE_AFFINE, case_arrays

    image, _, _ = case_arrays(0, shape=(14, 11, 8))
    for sub in ("images", "predictions"):
        (folder / sub).mkdir(parents=True)
    nib.save(nib.Nifti1Image(image, OBLIQUE_AFFINE), folder / "images" / "oblique.nii.gz")
    empty = np.zeros(image.shape, np.uint8)
    nib.save(nib.Nifti1Image(empty, OBLIQUE_AFFINE), folder / "predictions" / "oblique.nii.gz")
    return folder


def main() -> None:
    import numpy as np
    from PySide6.QtCore import QPoint, QSettings
    from PySide6.QtWidgets import QApplication

    from gui.workbench_window import WorkbenchWindow
    from tests.xserver import EventPump

    work = Path(sys.argv[1])
    app = QApplication([])
    window = WorkbenchWindow(settings=QSettings(str(work / "s.ini"), QSettings.Format.IniFormat))
    window.resize(1400, 900)
    window.show()

    events = EventPump(app)
    xdotool = events.xdotool

    window.review.open_worklist(_worklist(work / "worklist"))
    events.wait_until(
        lambda: window.review.current is not None and not window.runner.is_busy,
        "the worklist did not open",
    )
    viewer, editor = window.viewer, window.mask_editor
    hovered: list[list[int]] = []
    viewer.cursor_moved.connect(lambda info: hovered.append([int(v) for v in info.ijk]))
    window.correction_toolbar.select_tool("brush")
    state: dict[str, object] = {"spacing": list(window.session.image.spacing), "clicks": {}}

    def painted() -> list[list[int]]:
        mask = window.session.results[window.current_key].labels.array
        return np.argwhere(mask > 0).tolist()

    def screen_point(view: str, dx: float, dy: float) -> QPoint:
        graphics = viewer.views[view].graphics
        return graphics.mapToGlobal(
            QPoint(int(graphics.width() * (0.5 + dx)), int(graphics.height() * (0.5 + dy)))
        )

    editor.radius_mm = 0.1  # one voxel: the one under the pointer
    for view, (dx, dy) in (
        ("axial", (0.1, -0.1)),
        ("coronal", (-0.08, 0.1)),
        ("sagittal", (0.1, 0.05)),
    ):
        before = {tuple(v) for v in painted()} if window.current_key else set()
        point = screen_point(view, dx, dy)
        xdotool("mousemove", "--sync", str(point.x()), str(point.y()))
        under = hovered[-1] if hovered else None
        xdotool("click", "1")
        after = {tuple(v) for v in painted()}
        state["clicks"][view] = {"hovered": under, "new": sorted(map(list, after - before))}
    # A drag with a 3 mm brush across the axial view, in ten steps.
    editor.radius_mm = 3.0
    before = {tuple(v) for v in painted()}
    start, end = screen_point("axial", -0.2, 0.15), screen_point("axial", 0.2, 0.15)
    xdotool("mousemove", "--sync", str(start.x()), str(start.y()))
    drag = {"start": hovered[-1]}
    xdotool("mousedown", "1")
    for step in range(1, 11):
        x = start.x() + (end.x() - start.x()) * step // 10
        xdotool("mousemove", "--sync", str(x), str(start.y()))
    drag["end"] = hovered[-1]
    xdotool("mouseup", "1")
    drag["new"] = sorted(map(list, {tuple(v) for v in painted()} - before))
    state["drag"] = drag
    state["undo_steps"] = window.undo_stack.count()
    state["row"] = window.current_key
    state["affine"] = window.session.image.affine.tolist()
    state["shape"] = list(window.session.image.shape3)
    events.report_and_close(window, state)


if __name__ == "__main__":
    main()

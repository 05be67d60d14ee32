"""Run the workbench on a real X display and let xdotool drive the mouse; print what changed.

Started by ``tests/test_launch_xvfb.py`` in a subprocess with ``DISPLAY`` set to an Xvfb
server. It opens the CT demo (no segmentation), then, with real X pointer events from
xdotool, right-drags on the axial view (window/level), left-clicks a point (crosshair) and
scrolls the wheel (slice). The events go through X, Qt's xcb platform and pyqtgraph's
scene exactly as a user's mouse would. The state before and after each gesture is printed as
one JSON line on stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["QT_QPA_PLATFORM"] = "xcb"


def main() -> None:
    from PySide6.QtCore import QPoint, QSettings
    from PySide6.QtWidgets import QApplication

    from gui.workbench_window import WorkbenchWindow
    from tests.xserver import EventPump

    app = QApplication([])
    settings = QSettings(sys.argv[1], QSettings.Format.IniFormat)
    window = WorkbenchWindow(settings=settings)
    window.resize(1400, 900)
    window.show()

    events = EventPump(app)
    xdotool = events.xdotool

    window.load_demo(segment=False)
    events.wait_until(
        lambda: window.session.image is not None and not window.runner.is_busy,
        "the demo did not open",
    )
    viewer = window.viewer
    view = viewer.views["axial"]
    graphics = view.graphics
    centre = graphics.mapToGlobal(QPoint(graphics.width() // 2, graphics.height() // 2))
    x, y = centre.x(), centre.y()
    state: dict[str, object] = {
        "window_before": list(viewer.window),
        "slice_before": viewer.slice_index("axial"),
    }
    # Right drag 120 px to the right: window/level changes the width.
    xdotool("mousemove", "--sync", str(x), str(y))
    xdotool("mousedown", "3")
    for step in range(1, 7):
        xdotool("mousemove", "--sync", str(x + 20 * step), str(y))
    xdotool("mouseup", "3")
    state["window_after_drag"] = list(viewer.window)
    # Left click 40 px left and up of the centre: the crosshair follows. Where the click
    # should land is worked out with Qt's own coordinate maps, not through any mouse event.
    picked: list[list[float]] = []
    view.position_picked.connect(lambda row, col: picked.append([row, col]))
    click = QPoint(x - 40, y - 40)
    scene = graphics.mapToScene(graphics.viewport().mapFromGlobal(click))
    row, col = view._view_to_pixel(view.view_box.mapSceneToView(scene))
    state["expected_pick"] = [float(round(row)), float(round(col))]
    state["cursor_before_click"] = list(viewer.cursor_voxel)
    xdotool("mousemove", "--sync", str(click.x()), str(click.y()))
    xdotool("click", "1")
    state["picked"] = picked
    state["cursor_after_click"] = list(viewer.cursor_voxel)
    # Three wheel steps (button 4 = up): the axial slice moves by three.
    slice_before = viewer.slice_index("axial")
    for _ in range(3):
        xdotool("click", "4")
    state["slice_wheel"] = [slice_before, viewer.slice_index("axial")]
    events.report_and_close(window, state)


if __name__ == "__main__":
    main()

"""A reviewer in the real app, killed with SIGKILL by the tests in the middle of the review.

``python -m tests.review.review_gui_writer FOLDER SETTINGS`` opens the workbench (offscreen) on
the worklist in FOLDER and goes through it with the Cases panel's buttons: accept, next; every
third case is corrected instead (one delete-component click on the lesion). Each case name is
printed once its verdict is saved. It never stops by itself.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(folder: str, settings_path: str) -> None:
    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from core.display.planes import voxel_to_plane
    from gui.workbench_window import WorkbenchWindow

    app = QApplication([])
    window = WorkbenchWindow(settings=QSettings(settings_path, QSettings.Format.IniFormat))
    window.show()
    review = window.review

    def wait_idle() -> None:
        while window.runner.is_busy or review.current != review._wanted:
            app.processEvents()
            time.sleep(0.005)

    review.open_worklist(folder)
    while review.current is None:
        app.processEvents()
        time.sleep(0.005)
    index = 0
    while True:
        wait_idle()
        name = review.current
        if index % 3 == 2:
            viewer = window.viewer
            ijk = tuple(int(v) for v in np.argwhere(viewer.prediction() == 1)[0])
            viewer.set_cursor_voxel(ijk)
            _, row, col = voxel_to_plane(viewer.plane_axes("axial"), viewer.image.shape3, ijk)
            window.mask_editor.set_tool("delete")
            viewer.stroke.emit("axial", "press", int(row), int(col))
            viewer.stroke.emit("axial", "release", int(row), int(col))
            window.mask_editor.set_tool("navigate")
        else:
            review.panel.accept_button.click()
        wait_idle()
        print(name, flush=True)
        index += 1
        review.panel.next_button.click() if review.state.next_case(name) else review.go_to(
            review.state.worklist.names[0]
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

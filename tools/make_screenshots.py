"""Regenerate the README's screenshots from the real app in a real X window (Xvfb).

Runs the workbench on the demo exactly as a user would, in the default 1400 x 900 window: opens
it, quantizes the model (W4 FlexRound), segments with the variant, compares FP32 + argmax with
W4 + RankSEG-RMA, and shows the weight-scale plots; after each step it takes an X-level
screenshot of the screen (the X screen is the window's size, so the picture is the window).

Usage: ``python tools/make_screenshots.py [--out docs/screenshots] [--iters 300]
[--size 1400x900]``
(needs ``Xvfb`` and ImageMagick's ``import``; starts its own X server when DISPLAY is unset).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tools.screenshot_window as screens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--size", default="1400x900", help="window size (the app's default)")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.lower().split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xvfb = screens.start_xvfb(":87", size)
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.workbench_window import WorkbenchWindow

    app = QApplication([])
    settings = QSettings(str(out / ".screenshot-settings.ini"), QSettings.Format.IniFormat)
    window = WorkbenchWindow(settings=settings)
    window.setGeometry(0, 0, *size)
    window.show()

    def wait(condition):
        screens.wait(app, condition)

    def shot(name: str) -> None:
        screens.capture(out / name)

    try:
        window.load_demo()
        wait(lambda: len(window.session.results) == 2 and not window.runner.is_busy)
        shot("main.png")

        panel = window.quantization_panel
        panel.iters_spin.setValue(args.iters)
        panel.samples_spin.setValue(32)
        window.quantization_dock.raise_()
        names = []
        panel.variant_created.connect(lambda name, *_: names.append(name))
        panel.start_run()
        wait(lambda: bool(names) and not window.runner.is_busy)
        shot("quantization.png")

        window.run_segmentation_with(names[0], "rma-dice", pruning_prob=0.5)
        wait(lambda: len(window.session.results) == 3 and not window.runner.is_busy)
        keys = list(window.session.results)
        window.compare_results(keys[0], keys[2])
        wait(lambda: True)
        shot("compare.png")

        window.show_result(keys[2])
        window.weights_dock.raise_()
        window.weight_panel.select(names[0])
        wait(lambda: True)
        shot("weight_scales.png")
    finally:
        screens.close(window, app, xvfb)
        (out / ".screenshot-settings.ini").unlink(missing_ok=True)


if __name__ == "__main__":
    main()

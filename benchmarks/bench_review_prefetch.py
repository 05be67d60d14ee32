"""The wait for the next case of a worklist, read and segmented ahead of time or not.

A worklist of CT phantoms (NIfTI, written once from :func:`core.phantom.make_phantom`, with
ground truths) is opened in the real main window (offscreen) with the demo model; the reviewer
looks at each case for a while (until the jobs end, plus ``--look`` seconds) and moves to the
next one. The wait is the time from the move to the case on screen with its segmentation. It is
measured side by side, in one run, with reading ahead on and off.

Run: ``python benchmarks/bench_review_prefetch.py [--shape 256,256,48] [--cases 4]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _write_cases(folder: Path, shape, count: int) -> None:
    import nibabel as nib

    from core.phantom import make_phantom

    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        image, label = make_phantom(seed, shape=shape)
        nib.save(nib.Nifti1Image(image.array, image.affine), folder / "images" / f"ct{seed}.nii.gz")
        nib.save(nib.Nifti1Image(label, image.affine), folder / "labels" / f"ct{seed}.nii.gz")


def _run(app, folder: Path, settings: Path, read_ahead: bool, look: float) -> list[float]:
    from PySide6.QtCore import QSettings

    from core.demo import demo_paths
    from gui.workbench_window import WorkbenchWindow

    window = WorkbenchWindow(settings=QSettings(str(settings), QSettings.Format.IniFormat))
    window.show()

    def pump_until(done, timeout=900.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                raise SystemExit("timed out")
            app.processEvents()
            time.sleep(0.002)

    window.open_model(str(demo_paths().model))
    pump_until(lambda: not window.runner.is_busy)
    review = window.review
    review.read_ahead = read_ahead
    shown: list[str] = []
    review.case_shown.connect(shown.append)
    review.open_worklist(folder)
    pump_until(lambda: shown and not window.runner.is_busy)
    for _ in range(len(review.state.worklist.names) - 1):
        end = time.monotonic() + look
        pump_until(lambda end=end: time.monotonic() > end and not window.runner.is_busy)
        count = len(shown)
        review.step(1)
        pump_until(lambda count=count: len(shown) > count)
    waits = [wait for _name, wait, _ahead in review.waits[1:]]
    pump_until(lambda: not window.runner.is_busy)
    window.close()
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,256,48")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--look", type=float, default=0.5, help="seconds on each case")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    import torch
    from PySide6.QtWidgets import QApplication

    torch.set_num_threads(1)
    app = QApplication([])
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        os.environ["SEGBENCH_DATA_DIR"] = str(root / "data")
        rows = []
        for read_ahead in (False, True):
            folder = root / f"worklist_{read_ahead}"
            _write_cases(folder, shape, args.cases)
            waits = _run(app, folder, root / f"s{read_ahead}.ini", read_ahead, args.look)
            rows.append((read_ahead, waits))
    print(f"shape {shape}, {args.cases} cases, demo model, rule from the settings (rma-dice)")
    print(f"{'read ahead':>10} | {'median wait s':>13} | {'max wait s':>10} | waits")
    for read_ahead, waits in rows:
        listed = " ".join(f"{w:.3f}" for w in waits)
        print(
            f"{'on' if read_ahead else 'off':>10} | {statistics.median(waits):13.3f} | "
            f"{max(waits):10.3f} | {listed}"
        )
    off, on = (statistics.median(w) for _, w in rows)
    print(f"median wait with reading ahead / without: {on / off:.3f}")


if __name__ == "__main__":
    main()

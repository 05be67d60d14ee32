"""Per-redraw time of scrolling a 512x512 slice with overlays in the OrthoViewer, offscreen.

Each step scrolls the axial view by one slice and measures, per step:

- ``update``: new slice into the image item, overlay rendered by core.display, and both
  pyqtgraph ImageItems converted to QImages (``ImageItem.render``) - the CPU work of a redraw;
- ``paint``: the same plus painting the view into a pixmap (``QWidget.grab``), i.e. what the
  screen would show, at about 512x512 screen pixels.

The target is under 16 ms per redraw. Ratios are against the image-only run measured in the
same process. Run: ``python benchmarks/bench_redraw.py [--steps 200]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

try:  # the viewer does not use torch; keep any import of it single-threaded
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

from PySide6.QtWidgets import QApplication  # noqa: E402

from core.io import Image  # noqa: E402
from gui.widgets.ortho_viewer import OrthoViewer  # noqa: E402

SHAPE = (512, 512, 64)
NAMES = ["background", "liver", "kidney", "tumour"]
COLORS = [(0, 0, 0), (220, 60, 60), (60, 200, 60), (250, 200, 40)]


def make_case(seed: int = 0) -> tuple[Image, np.ndarray, np.ndarray]:
    """A CT-like int16 volume with three labelled ellipsoids and a shifted 'ground truth'."""
    rng = np.random.default_rng(seed)
    volume = rng.normal(40, 30, size=SHAPE).astype(np.int16)
    i, j, k = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    label = np.zeros(SHAPE, dtype=np.uint8)
    for value, (ci, cj, ck, ri, rj, rk) in enumerate(
        [(200, 250, 32, 120, 90, 28), (330, 320, 30, 50, 60, 20), (190, 230, 34, 25, 30, 10)],
        start=1,
    ):
        inside = ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 + ((k - ck) / rk) ** 2 <= 1
        label[inside] = value
        volume[inside] += 60 * value
    truth = np.asfortranarray(np.roll(label, 6, axis=0))
    # nibabel hands out NIfTI voxels in Fortran order (axial slices contiguous); a prediction
    # from torch's argmax is C-ordered int64, which the viewer converts once in set_prediction.
    volume = np.asfortranarray(volume)
    label = label.astype(np.int64)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS-like CT axes seen as RAS: flips on screen
    return Image(array=volume, affine=affine, modality="CT"), label, truth


def measure(
    viewer: OrthoViewer, steps: int, *, paint: bool, view_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and CPU milliseconds per scroll step (CPU time is what this process used,
    so it stays meaningful when other processes compete for the cores)."""
    view = viewer.views[view_name]
    wall = np.empty(steps)
    cpu = np.empty(steps)
    n = view.n_slices
    for step in range(steps):
        target = 8 + step % (n - 16)  # scroll through the labelled middle of the volume
        start, start_cpu = time.perf_counter(), time.process_time()
        view.set_slice(target if target != view.slice_index else target + 1)
        view.image_item.render()
        if view.overlay_item.isVisible():
            view.overlay_item.render()
        if paint:
            view.grab()
        wall[step] = time.perf_counter() - start
        cpu[step] = time.process_time() - start_cpu
    return wall * 1000.0, cpu * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    image, label, truth = make_case()
    viewer = OrthoViewer()
    viewer.resize(1040, 1040)  # each view about 512x512 screen pixels
    viewer.show()
    app.processEvents()
    viewer.set_image(image)
    viewer.set_labels(NAMES, COLORS)
    app.processEvents()
    print(
        f"volume {SHAPE} int16, axial slice {viewer.views['axial'].plane_shape}, "
        f"view {viewer.views['axial'].width()}x{viewer.views['axial'].height()} px, "
        f"{args.steps} scroll steps each"
    )

    start = time.perf_counter()
    viewer.set_prediction(label)
    print(
        f"set_prediction (C-order int64 -> F-order uint8, once): "
        f"{(time.perf_counter() - start) * 1000:.0f} ms"
    )
    cases = [
        ("image only", "axial", None, None, "prediction", True),
        ("filled", "axial", label, None, "prediction", True),
        ("outline", "axial", label, None, "prediction", False),
        ("difference", "axial", label, truth, "difference", True),
        ("pred + GT outline", "axial", label, truth, "both", True),
        ("outline, coronal", "coronal", label, None, "prediction", False),
    ]
    rows = []
    for name, view_name, prediction, ground_truth, mode, filled in cases:
        viewer.set_prediction(prediction)
        viewer.set_ground_truth(ground_truth)
        viewer.set_overlay_mode(mode)
        viewer.set_overlay_style(filled)
        measure(viewer, 10, paint=True, view_name=view_name)  # warm-up
        update, _ = measure(viewer, args.steps, paint=False, view_name=view_name)
        painted, painted_cpu = measure(viewer, args.steps, paint=True, view_name=view_name)
        rows.append((name, update, painted, painted_cpu))

    base = [np.median(rows[0][column]) for column in (1, 2, 3)]
    print(
        f"{'case':<20}{'update p50':>11}{'p99':>7}{'x img':>6}"
        f"{'paint p50':>11}{'p99':>7}{'x img':>6}{'paint CPU p50':>15}{'p99':>7}{'x img':>6}  (ms)"
    )
    for name, *columns in rows:
        cells = "".join(
            f"{np.median(c):>{w}.2f}{np.percentile(c, 99):>7.2f}{np.median(c) / b:>6.2f}"
            for c, b, w in zip(columns, base, (11, 11, 15), strict=True)
        )
        print(f"{name:<20}{cells}")
    worst_wall = max(np.percentile(row[2], 99) for row in rows)
    worst_cpu = max(np.percentile(row[3], 99) for row in rows)
    print(
        f"worst painted p99: wall {worst_wall:.2f} ms, CPU {worst_cpu:.2f} ms "
        f"(budget 16 ms; wall includes waiting for other processes, load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    viewer.close()


if __name__ == "__main__":
    main()

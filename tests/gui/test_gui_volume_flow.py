"""The reviewer's flow of benchmarks/bench_gui_volume.py on a small phantom, as a test.

The benchmark holds the timing targets (no slot over 50 ms on a 512x512x300 CT); here the same
driver runs on 128x128x64 voxels and checks that every stage finishes and leaves the window in
the state a user would see. Timings are not asserted (they belong to the benchmark).
"""

import importlib.util
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from core.demo import demo_paths
from gui.workbench_window import WorkbenchWindow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gui_volume.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_gui_volume", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_volume_flow_runs_every_stage(qtbot, qapp, tmp_path):
    bench = load_benchmark()
    image_path, label_path = bench.phantom_files((128, 128, 64), tmp_path)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = WorkbenchWindow(settings=settings)
    qtbot.addWidget(window)
    window.show()
    runner = bench.StageRunner(qapp, bench.SlotProbe())
    try:
        stages = bench.run_flow(window, runner, image_path, label_path, demo_paths().model)
    finally:
        window.runner.cancel_all()
        window.runner.wait(20000)
    assert not [s.name for s in stages if s.timed_out]
    assert not window.error_boxes
    names = [s.name for s in stages]
    assert names[:5] == ["open image", "ground truth", "model", "segment argmax", "segment RMA"]
    assert "compare" in names and "compare scroll" in names
    keys = list(window.session.results)
    assert len(keys) == 3 and keys[-1].startswith("W4")
    assert window.central.currentWidget() is window.viewer and window.current_key == keys[1]
    # Only the variant segmented last keeps its probabilities.
    assert window.session.cached_probs(keys[-1].split(" + ")[0]) is not None
    assert window.session.cached_probs(window.session.base_variant.name) is None

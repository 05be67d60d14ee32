"""The workbench on a MONAI bundle: a dropped bundle opens and segments, and a hostile bundle
asks for trust and runs nothing when refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.io import read_image
from tests.frameworks.test_monai_bundle import hostile_bundle, other_grid_image  # noqa: F401
from tests.gui.test_workbench import JOB_TIMEOUT, wait_idle, window  # noqa: F401 (fixture)


def open_image_and_bundle(win, qtbot, image: Path, bundle: Path) -> None:
    """Open ``image``, then drop the ``bundle`` folder on the window, as a user would."""
    win.open_image(str(image))
    qtbot.waitUntil(lambda: win.session.image is not None, timeout=30000)
    wait_idle(qtbot, win)
    win.open_dropped(str(bundle))
    qtbot.waitUntil(lambda: win.session.base_variant is not None, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)


def test_dropped_bundle_opens_and_segments(
    window,  # noqa: F811
    qtbot,
    monai_bundle: Path,
    other_grid_image: Path,  # noqa: F811
) -> None:
    open_image_and_bundle(window, qtbot, other_grid_image, monai_bundle)
    assert "MONAI bundle tiny_unet_segmentation" in window.data_panel.model_info.text()
    window.segmentation_panel._on_run_clicked()
    qtbot.waitUntil(lambda: len(window.session.results) == 1, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    entry = next(iter(window.session.results.values()))
    assert entry.result.mask.shape == read_image(other_grid_image).shape3
    assert not window.error_boxes


def test_hostile_bundle_asks_and_refusal_runs_nothing(
    window,  # noqa: F811
    qtbot,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran.txt"
    folder = hostile_bundle(tmp_path, marker, "expression")
    questions: list[str] = []
    window.ask_trust = lambda message: questions.append(message) or False
    window.open_model(str(folder))
    qtbot.waitUntil(lambda: bool(questions), timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    assert "Python expression" in questions[0]
    assert window.session.base_variant is None
    assert not marker.exists()


def test_quantized_bundle_exports_a_deploy_folder_that_opens_and_segments(
    window,  # noqa: F811
    qtbot,
    monai_bundle: Path,
    other_grid_image: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Quantize the bundle in the panel, Export ONNX asks for a folder (the bundle's pipeline
    cannot live in one file), and the deploy folder opens and segments on ONNX Runtime."""
    open_image_and_bundle(window, qtbot, other_grid_image, monai_bundle)
    panel = window.quantization_panel
    panel.method_combo.setCurrentIndex(panel.method_combo.findData("rtn"))
    panel.samples_spin.setValue(4)
    with qtbot.waitSignal(panel.variant_created, timeout=JOB_TIMEOUT):
        panel.start_run()
    wait_idle(qtbot, window)
    name = panel.variant_combo.currentData()
    target = tmp_path / "deploy"
    asked = []
    panel._choose_folder = lambda _parent, caption, _start: asked.append(caption) or str(target)
    panel._choose_file = lambda *_: pytest.fail("a framework variant is not one .onnx file")
    assert panel.export_selected() is not None
    wait_idle(qtbot, window)
    assert not window.error_boxes
    assert asked == [f"Export {name} to a deploy folder (framework files, ONNX networks)"]
    size = (target / "models" / "model.onnx").stat().st_size
    assert panel.variant_combo.currentText() == f"{name} · ONNX {size / 1e6:.3f} MB"

    window.open_dropped(str(target))
    qtbot.waitUntil(
        lambda: (
            window.session.base_variant is not None
            and window.session.base_variant.model.path == target
        ),
        timeout=JOB_TIMEOUT,
    )
    wait_idle(qtbot, window)
    assert "ONNX Runtime" in window.data_panel.model_info.text()
    window.segmentation_panel._on_run_clicked()
    qtbot.waitUntil(lambda: len(window.session.results) >= 1, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    assert not window.error_boxes
    row = len(window.session.results) - 1
    assert window.results_table.cell_text(row, "backend") == "onnxruntime"

"""The workbench on an nnU-Net model folder: open (dialog file or dropped folder), segment,
and a hostile checkpoint that asks for trust and runs nothing when refused."""

from __future__ import annotations

from pathlib import Path

from tests.frameworks.conftest import raw_case
from tests.frameworks.test_nnunet import hostile_checkpoint_folder
from tests.gui.test_workbench import JOB_TIMEOUT, wait_idle, window  # noqa: F401 (fixture)


def test_open_and_segment_with_an_nnunet_folder(window, qtbot, nnunet_3d: Path):  # noqa: F811
    window.open_image(str(raw_case(nnunet_3d)[0]))
    qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
    wait_idle(qtbot, window)
    window.open_model(str(nnunet_3d / "fold_1" / "checkpoint_final.pth"))  # as a dialog gives it
    qtbot.waitUntil(lambda: window.session.base_variant is not None, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    model = window.session.base_variant.model
    assert model.framework.folds == ["1"]
    text = window.data_panel.model_info.text()
    assert "nnU-Net v2 3d_fullres" in text and "fold(s) 1" in text
    window.segmentation_panel._on_run_clicked()
    qtbot.waitUntil(lambda: len(window.session.results) == 1, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    entry = next(iter(window.session.results.values()))
    assert entry.result.mask.shape == window.session.image.shape3
    assert not window.error_boxes


def test_onnx_runtime_backend_on_an_nnunet_model(window, qtbot, nnunet_3d: Path):  # noqa: F811
    """The Segmentation panel's Backend runs the folds in ONNX Runtime inside nnU-Net's
    predictor, off the GUI thread, and the results table names the backend and its size."""
    window.open_image(str(raw_case(nnunet_3d)[0]))
    qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
    wait_idle(qtbot, window)
    window.open_model(str(nnunet_3d))
    qtbot.waitUntil(lambda: window.session.base_variant is not None, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    base = window.session.base_variant
    panel = window.segmentation_panel
    panel.decision_combo.setCurrentIndex(panel.decision_combo.findData("argmax"))
    for backend in ("torch", "onnxruntime"):
        panel.backend_combo.setCurrentIndex(panel.backend_combo.findData(backend))
        panel.run_button.click()
        wait_idle(qtbot, window)
    assert not window.error_boxes
    on_torch = window.session.results[f"{base.name} + argmax"].result.mask
    on_ort = window.session.results[f"{base.name} [onnxruntime] + argmax"].result.mask
    assert (on_ort == on_torch).mean() >= 0.999
    folds = list(base.other_backend.module)
    assert len(folds) == 2
    table = window.results_table
    row = list(window.session.results).index(f"{base.name} [onnxruntime] + argmax")
    assert table.cell_text(row, "backend") == "onnxruntime"
    assert table.cell_text(row, "model_mb") == f"{sum(f.size_bytes for f in folds) / 1e6:.3f}"


def test_dropped_folder_opens_as_a_model(window, qtbot, nnunet_3d: Path):  # noqa: F811
    window.open_dropped(str(nnunet_3d))
    qtbot.waitUntil(lambda: window.session.base_variant is not None, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    assert window.session.base_variant.model.framework.folds == ["0", "1"]


def test_hostile_checkpoint_asks_and_refusal_runs_nothing(
    window,  # noqa: F811
    qtbot,
    nnunet_3d: Path,
    tmp_path: Path,
):
    marker = tmp_path / "ran.txt"
    folder = hostile_checkpoint_folder(nnunet_3d, tmp_path, marker)
    questions: list[str] = []
    window.ask_trust = lambda message: questions.append(message) or False
    window.open_model(str(folder))
    qtbot.waitUntil(lambda: bool(questions), timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    assert "would run code" in questions[0]
    assert window.session.base_variant is None
    assert not marker.exists()

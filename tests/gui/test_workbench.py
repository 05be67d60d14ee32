"""The workbench flows end to end on the embedded demo and on real sample files."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PySide6.QtCore import QSettings, Qt

from core.demo import demo_paths
from core.io import read_image
from gui.workbench_window import WorkbenchWindow

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
JOB_TIMEOUT = 120_000


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_DATA_DIR", str(tmp_path / "data"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = WorkbenchWindow(settings=settings)
    # Closing at teardown while a follow-up job (started by a finished one's slot) still runs
    # must not wait on a modal question nobody answers: cancel and quit.
    win.confirm_close_during_job = lambda: True
    qtbot.addWidget(win)
    win.show()
    yield win
    win.runner.cancel_all()
    win.runner.wait(20000)
    for box in list(win.error_boxes):
        box.done(0)


def wait_idle(qtbot, win, timeout=JOB_TIMEOUT):
    qtbot.waitUntil(lambda: not win.runner.is_busy, timeout=timeout)


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


@pytest.mark.slow
def test_demo_flow_segment_quantize_compare_save_export(window, qtbot, tmp_path):
    win = window
    # First minute: the demo opens with ground truth, argmax and RMA results.
    win.load_demo()
    qtbot.waitUntil(lambda: len(win.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    assert not win.error_boxes
    keys = list(win.session.results)
    assert [k.split(" + ")[1] for k in keys] == ["argmax", "rma-dice"]
    assert win.current_key == keys[1]  # RMA is what the user sees first
    gt = win.session.ground_truth
    assert win.viewer.ground_truth() is not None
    for key in keys:
        result = win.session.results[key].result
        assert result.mask.shape == win.session.image.shape3
        for row in result.rows:  # table numbers equal an independent Dice of the masks
            assert row.dice == pytest.approx(dice(result.mask == row.label, gt == row.label))
    assert win.results_table.table.rowCount() == 2
    column = win.results_table.shown_columns.index("lesion expected_dice")
    assert "calibration" in win.results_table.table.horizontalHeaderItem(column).toolTip()
    # Each class's mean intensity inside its mask, as the table shows it (one decimal).
    shown = win.session.results[keys[1]].result.mask
    liver = np.asarray(win.session.image.array)[shown == 1]
    row = 1  # table rows follow the results' order
    assert win.results_table.cell_text(row, "liver mean_intensity") == f"{liver.mean():.1f}"
    assert win.results_table.cell_text(row, "liver sd_intensity") == f"{liver.std():.1f}"
    column = win.results_table.shown_columns.index("liver mean_intensity")
    assert "Hounsfield" in win.results_table.table.horizontalHeaderItem(column).toolTip()
    np.testing.assert_array_equal(win.viewer.prediction(), win.session.results[keys[1]].result.mask)
    assert "quantize" in win.hint.text().lower()

    # Quantize at W4 with few iterations on slices of the open image.
    panel = win.quantization_panel
    panel.iters_spin.setValue(4)
    panel.samples_spin.setValue(8)
    variants = []
    panel.variant_created.connect(lambda name, model, result: variants.append(name))
    with qtbot.waitSignal(panel.variant_created, timeout=JOB_TIMEOUT):
        panel.start_run()
    wait_idle(qtbot, win)
    assert variants and variants[0].startswith("W4")
    assert variants[0] in win.session.variants
    assert win.segmentation_panel.variant_combo.findText(variants[0]) >= 0

    assert win.weight_panel.variant_names() == [variants[0]]

    # Segment with the variant, through the panel as a user would.
    win.segmentation_panel.variant_combo.setCurrentText(variants[0])
    win.segmentation_panel.decision_combo.setCurrentIndex(
        win.segmentation_panel.decision_combo.findData("rma-dice")
    )
    win.segmentation_panel.run_button.click()
    qtbot.waitUntil(lambda: len(win.session.results) == 3, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    quant_key = f"{variants[0]} + rma-dice"
    assert quant_key in win.session.results

    # Compare FP32 + argmax with the quantized RMA result.
    win.compare_results(keys[0], quant_key)
    assert win.central.currentWidget() is win.compare_viewer
    assert win.compare_viewer.left.window == win.viewer.window  # same window/level as before

    # Save the shown mask and reload it: same voxels, same affine as the image.
    win.show_result(quant_key)
    out = tmp_path / "mask.nii.gz"
    win.save_mask(quant_key, str(out))
    wait_idle(qtbot, win)
    saved = nib.load(out)
    np.testing.assert_array_equal(
        np.asarray(saved.dataobj), win.session.results[quant_key].result.mask
    )
    np.testing.assert_allclose(saved.affine, win.session.image.affine, atol=1e-5)

    # Export the results table as CSV and JSON.
    win.export_table(str(tmp_path / "results.csv"))
    win.export_table(str(tmp_path / "results.json"))
    wait_idle(qtbot, win)
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith(
        "model,decision,backend,model_mb,ms_per_slice,mean_dice"
    )
    import json

    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["decision"] for r in data["results"]} == {"argmax", "rma-dice"}
    assert data["ground_truth"].endswith("label.nii.gz")

    # Opening another model drops the old model's quantized variants everywhere.
    win.open_model(str(demo_paths().model))
    qtbot.waitUntil(lambda: len(win.session.variants) == 1, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    assert win.weight_panel.variant_names() == [] and not win.quantization_panel.variants


def _two_page_tiff(tmp_path):
    import skimage.data
    import skimage.io

    camera = skimage.data.camera()[::8, ::8]
    skimage.io.imsave(tmp_path / "pages.tif", np.stack([camera, camera[::-1]]))
    return tmp_path / "pages.tif", camera[::-1][:, :, None]


def _nifti_4d(tmp_path):
    path = NIBABEL_DATA / "example4d.nii.gz"
    return path, np.asarray(nib.load(path).dataobj[..., 1])


def _multi_echo_dicom(tmp_path):
    import pydicom.data

    from tests.dicom_series import write_multi_echo_copy

    ct5n = Path(pydicom.data.__file__).parent / "test_files/dicomdirtests/98892001/CT5N"
    write_multi_echo_copy(ct5n, tmp_path / "echoes")
    return tmp_path / "echoes", read_image(ct5n).array.astype(np.int32) + 100


@pytest.mark.parametrize("make", [_nifti_4d, _multi_echo_dicom, _two_page_tiff])
def test_image_with_several_volumes_asks_which(window, qtbot, tmp_path, make):
    path, expected = make(tmp_path)
    asked = []
    window.ask_volume = lambda path, choice: asked.append(choice.count) or 1
    window.open_image(str(path))
    qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
    wait_idle(qtbot, window)
    assert asked == [3 if "echoes" in str(path) else 2]
    np.testing.assert_array_equal(np.asarray(window.session.image.array), expected)
    assert not window.error_boxes


def test_dicom_folder_with_several_series_asks_which(window, qtbot):
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "77654033"
    offered = []

    def pick(path, series):
        offered.extend(series)
        return series[-1].uid

    window.ask_series = pick
    window.open_dicom_folder(str(folder))
    qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
    wait_idle(qtbot, window)
    assert len(offered) >= 2
    assert window.session.image.shape3[2] == offered[-1].n_slices


def test_corrupt_image_shows_a_dialog_naming_the_file(window, qtbot, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    window.open_image(str(bad))
    qtbot.waitUntil(lambda: len(window.error_boxes) == 1, timeout=30000)
    assert "broken.nii.gz" in window.error_boxes[0].text()
    assert window.session.image is None


def test_pickled_model_asks_for_trust_and_refusal_loads_nothing(window, qtbot, tmp_path):
    from core.models import load_model

    demo = load_model(demo_paths().model)
    target = tmp_path / "pickled.pt"
    torch.save(demo.module, target)
    (tmp_path / "pickled.json").write_text((demo_paths().model / "model.json").read_text())
    questions = []
    window.ask_trust = lambda message: questions.append(message) or False
    window.open_model(str(target))
    qtbot.waitUntil(lambda: bool(questions), timeout=30000)
    wait_idle(qtbot, window)
    assert "pickled" in questions[0] and not window.session.variants
    window.ask_trust = lambda message: True
    window.open_model(str(target))
    qtbot.waitUntil(lambda: bool(window.session.variants), timeout=30000)


def test_dropped_paths_are_routed_by_kind(window, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(window, "open_model", lambda p, **k: calls.append(("model", p)))
    monkeypatch.setattr(window, "open_image", lambda p, **k: calls.append(("image", p)))
    monkeypatch.setattr(window, "open_dicom_folder", lambda p: calls.append(("dicom", p)))
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "model.json").write_text("{}")
    dicom_dir = tmp_path / "d"
    dicom_dir.mkdir()
    window.open_dropped(str(model_dir))
    window.open_dropped(str(dicom_dir))
    window.open_dropped(str(tmp_path / "x.safetensors"))
    window.open_dropped(str(tmp_path / "scan.nii.gz"))
    bundle = tmp_path / "bundle"  # a MONAI bundle's layout (detection only looks at names)
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_text("{}")
    window.open_dropped(str(bundle))
    assert [c[0] for c in calls] == ["model", "dicom", "model", "image", "model"]


def test_run_without_model_explains_in_words(window, qtbot):
    window.open_image(str(NIBABEL_DATA / "anatomical.nii"))
    qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
    window.segmentation_panel.run_button.click()
    assert window.error_boxes and "Open an image and a model first" in window.error_boxes[0].text()
    assert read_image(NIBABEL_DATA / "anatomical.nii").shape3 == window.session.image.shape3


def test_natural_image_demo_opens_in_one_view_and_segments(window, qtbot):
    window.load_demo(natural=True)
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    image = window.session.image
    assert image.is_natural and image.is_rgb
    assert len(window.viewer.active_views) == 1  # one view for a 2-D picture
    gt = window.session.ground_truth
    for entry in window.session.results.values():
        for row in entry.result.rows:
            assert row.dice == pytest.approx(dice(entry.result.mask == row.label, gt == row.label))
    assert "natural" in window.hint.text().lower()
    # A photograph has no physical size: pixel counts, no mL; no intensity statistics for RGB,
    # so those columns stay off the screen (the export keeps every column).
    table = window.results_table
    result = window.session.results[window.current_key].result
    disc = next(row for row in result.rows if row.name == "disc")
    row = list(window.session.results).index(window.current_key)
    assert table.cell_text(row, "disc px") == str(int((result.mask == disc.label).sum()))
    assert not any(key.endswith(" ml") for key in table.columns)
    assert "disc mean_intensity" in table.columns
    assert "disc mean_intensity" not in table.shown_columns


def test_onnx_runtime_backend_adds_rows_naming_it_with_size_and_time(window, qtbot):
    window.load_demo(natural=True)
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    base = window.session.base_variant
    panel = window.segmentation_panel
    panel.backend_combo.setCurrentIndex(panel.backend_combo.findData("onnxruntime"))
    panel.decision_combo.setCurrentIndex(panel.decision_combo.findData("argmax"))
    panel.run_button.click()
    wait_idle(qtbot, window)
    window.run_segmentation_with(base.name, "rma-dice", backend="onnxruntime")
    wait_idle(qtbot, window)
    assert not window.error_boxes
    name = f"{base.name} [onnxruntime]"
    assert list(window.session.results)[2:] == [f"{name} + argmax", f"{name} + rma-dice"]
    torch_mask = window.session.results[f"{base.name} + argmax"].result.mask
    onnx_result = window.session.results[f"{name} + argmax"].result
    np.testing.assert_array_equal(onnx_result.mask, torch_mask)  # FP32: the same decisions
    table = window.results_table
    assert [table.cell_text(r, "backend") for r in range(4)] == ["torch"] * 2 + ["onnxruntime"] * 2
    onnx_bytes = base.other_backend.module.size_bytes
    assert table.cell_text(2, "model_mb") == f"{onnx_bytes / 1e6:.3f}"
    float_bytes = sum(
        t.numel() * 4
        for t in [*base.model.module.parameters(), *base.model.module.buffers()]
        if t.is_floating_point()
    )
    assert onnx_bytes > 0 and float(table.cell_text(0, "model_mb")) == pytest.approx(
        float_bytes / 1e6, abs=0.01
    )
    # The second rule reused the probabilities: it shows the time of the run that made them.
    assert table.cell_text(3, "ms_per_slice") == table.cell_text(2, "ms_per_slice") != "–"
    assert panel.request().backend == "onnxruntime"


def test_weight_tab_gets_room_and_results_tab_gives_it_back(window, qtbot):
    window.weights_dock.raise_()
    qtbot.waitUntil(lambda: window.weights_dock.height() > 300, timeout=5000)
    window.results_dock.raise_()
    qtbot.waitUntil(lambda: window.results_dock.height() < 300, timeout=5000)


def test_window_layout_persists_between_sessions(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "layout.ini"), QSettings.Format.IniFormat)
    first = WorkbenchWindow(settings=settings)
    qtbot.addWidget(first)
    first.show()
    first.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, first.overlay_dock)
    first.log_dock.hide()
    first.close()
    assert settings.value("window/geometry") is not None  # restored within the screen's bounds
    second = WorkbenchWindow(settings=settings)
    qtbot.addWidget(second)
    second.show()
    left = Qt.DockWidgetArea.LeftDockWidgetArea
    assert second.dockWidgetArea(second.overlay_dock) == left  # moved there last time
    assert second.log_dock.isHidden() and not second.results_dock.isHidden()


def test_help_lists_the_shortcuts_the_menus_use(window):
    from PySide6.QtWidgets import QDialog, QLabel

    shortcuts = [a for a in window.help_menu.actions() if a.text() == "&Shortcuts"][0]
    shortcuts.trigger()
    dialog = window.findChild(QDialog, "shortcutsDialog")
    text = " ".join(label.text() for label in dialog.findChildren(QLabel))
    for action in window.file_menu.actions() + window.edit_menu.actions():
        for shortcut in action.shortcuts():
            key = shortcut.toString()
            assert key in text, f"{action.text()} ({key}) missing from Help > Shortcuts"
    dialog.reject()


def test_hint_line_follows_what_the_user_has_open(window, qtbot):
    assert "Open an image" in window.hint.text()
    window.open_image(str(NIBABEL_DATA / "anatomical.nii"))
    qtbot.waitUntil(lambda: window.session.image is not None, timeout=30000)
    wait_idle(qtbot, window)
    assert window.hint.text().startswith("anatomical.nii (")
    assert "Open a model (Ctrl+M)" in window.hint.text()
    assert "anatomical.nii" in window.statusBar().currentMessage()
    window.open_model(str(demo_paths().model))
    qtbot.waitUntil(lambda: window.session.base_variant is not None, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    assert "Run segmentation (Ctrl+R)" in window.hint.text()
    assert "open a ground truth (Ctrl+G)" in window.hint.text()
    window.segmentation_panel._on_run_clicked()
    qtbot.waitUntil(lambda: len(window.session.results) == 1, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    assert "Next: switch the decision rule" in window.hint.text()
    assert not window.error_boxes


def test_hint_says_how_a_grey_image_feeds_an_rgb_model(window, qtbot):
    window.load_demo(segment=False, natural=True)  # an RGB model
    qtbot.waitUntil(lambda: window.session.base_variant is not None, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    window.open_image(str(NIBABEL_DATA / "anatomical.nii"))  # one channel
    qtbot.waitUntil(lambda: window.session.image.path.name == "anatomical.nii", timeout=30000)
    wait_idle(qtbot, window)
    hint = window.hint.text()
    assert "takes RGB: this grey image is repeated on its channels" in hint
    assert "Run segmentation (Ctrl+R)" in hint  # it still runs: predict repeats the grey


def test_rerun_with_other_settings_adds_a_row_instead_of_replacing(window, qtbot):
    window.load_demo()
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    base = window.session.base_variant.name
    before = window.session.results[f"{base} + rma-dice"].result.mask.copy()
    for options in ({"pruning_prob": 0.2}, {"pruning_prob": 0.2}, {"per_slice": True}):
        window.run_segmentation_with(base, "rma-dice", **options)
        wait_idle(qtbot, window)
    window.run_segmentation_with(base, "threshold", threshold=0.4)
    wait_idle(qtbot, window)
    rules = [key.split(" + ")[1] for key in window.session.results]
    assert rules == [
        "argmax",
        "rma-dice",
        "rma-dice, pruning 0.2",  # the same settings twice: one row, the same mask
        "rma-dice, per slice",
        "threshold 0.4",
    ]
    # The first RMA result is still there, untouched.
    np.testing.assert_array_equal(window.session.results[f"{base} + rma-dice"].result.mask, before)
    table = window.results_table
    assert table.table.rowCount() == 5
    assert table.cell_text(4, "decision") == "threshold 0.4"
    assert not window.error_boxes


def test_removing_results_is_undoable(window, qtbot):
    window.load_demo()
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    keys = list(window.session.results)
    shown = window.current_key
    assert shown == keys[1]
    table = window.results_table
    table.select(shown)
    assert table.remove_button.isEnabled()
    window.activateWindow()
    table.table.setFocus()
    qtbot.waitUntil(lambda: table.table.hasFocus())
    qtbot.keyClick(table.table, Qt.Key.Key_Delete)  # the Del key on the table
    assert list(window.session.results) == [keys[0]]
    assert window.current_key == keys[0]  # the view falls back to what is left
    np.testing.assert_array_equal(
        window.viewer.prediction(), window.session.results[keys[0]].result.mask
    )
    window.results_table.select(keys[0])
    table.remove_button.click()
    assert not window.session.results and window.viewer.prediction() is None
    undo = [a for a in window.edit_menu.actions() if a.text().startswith("&Undo")][0]
    undo.trigger()
    assert list(window.session.results) == [keys[0]]
    undo.trigger()
    assert list(window.session.results) == keys  # back at its row
    assert window.current_key == keys[1] and table.table.rowCount() == 2
    window.undo_stack.redo()
    assert list(window.session.results) == [keys[0]]
    # A new image starts a new history.
    window.open_image(str(NIBABEL_DATA / "anatomical.nii"))
    qtbot.waitUntil(lambda: window.session.image.path.name == "anatomical.nii", timeout=30000)
    assert not window.undo_stack.canUndo()


def test_undo_after_a_rerun_keeps_the_newer_result(window, qtbot):
    window.load_demo()
    qtbot.waitUntil(lambda: len(window.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, window)
    key = window.current_key
    window.remove_results([key])
    base = window.session.base_variant.name
    window.run_segmentation_with(base, "rma-dice")
    wait_idle(qtbot, window)
    newer = window.session.results[key]
    window.undo_stack.undo()
    assert window.session.results[key] is newer and len(window.session.results) == 2


@pytest.mark.slow
def test_results_keep_compact_masks_and_probabilities_can_be_freed(window, qtbot):
    win = window
    win.load_demo()
    qtbot.waitUntil(lambda: len(win.session.results) == 2, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    base = win.session.base_variant.name
    for entry in win.session.results.values():
        # One label map per result, shared with the views; no probabilities in the result.
        assert entry.result.mask is entry.labels.array and entry.result.probs is None
        assert entry.labels.array.dtype == np.uint8
    assert win.viewer.prediction() is win.session.results[win.current_key].labels.array
    # The ground truth is prepared once and shared by every view; the compare viewer is built
    # when it is first needed, with the masks the results hold.
    truth = win.session.ground_truth
    assert win.viewer.ground_truth() is truth
    assert win.compare_viewer.left.image is None
    first, second = win.session.results.values()
    win.compare_results(first.key, second.key)
    assert win.compare_viewer.left.ground_truth() is truth
    assert win.compare_viewer.right.ground_truth() is truth
    assert win.compare_viewer.right.prediction() is second.labels.array
    probs = win.session.cached_probs(base)
    assert probs.dtype == np.float16
    memory = win.session.memory()
    assert memory.probabilities == probs.nbytes and memory.masks > 0
    indicator = win.memory_indicator
    assert "probabilities" in indicator.label.text() and indicator.free_button.isEnabled()

    indicator.free_button.click()
    assert win.session.cached_probs(base) is None and win.session.memory().probabilities == 0
    assert "probabilities" not in indicator.label.text()
    assert not indicator.free_button.isEnabled()
    # Without cached probabilities another rule runs the network again.
    win.run_segmentation_with(base, "threshold")
    qtbot.waitUntil(lambda: len(win.session.results) == 3, timeout=JOB_TIMEOUT)
    wait_idle(qtbot, win)
    assert "inference" in win.session.results[win.current_key].result.timings


def test_probabilities_are_kept_for_the_last_variant_unless_asked_for_all(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = WorkbenchWindow(settings=settings)
    qtbot.addWidget(win)
    session = win.session
    first, second = np.zeros((4, 2, 2, 2), np.float16), np.ones((4, 2, 2, 2), np.float16)
    session.cache_probs("FP32", first)
    session.cache_probs("W4", second)
    assert session.cached_probs("FP32") is None and session.cached_probs("W4") is second
    win.keep_probs_action.setChecked(True)
    session.cache_probs("FP32", first)
    assert session.cached_probs("FP32") is first and session.cached_probs("W4") is second
    assert session.memory().probabilities == first.nbytes + second.nbytes
    # The choice is remembered for the next session.
    assert settings.value("results/keep_all_probabilities", type=bool)
    assert session.release_probabilities() == first.nbytes + second.nbytes

"""QuantizationPanel: runs through the real JobWorker, live loss curve, cancel, settings, save."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QSettings

from core.io import Image
from core.models import LoadedModel, load_model
from core.phantom import make_phantom
from core.quant import METHODS, QuantConfig
from core.quant.config import DEFAULT_LR
from core.quantize_images import images_in_folder, quantize_from_images
from gui.widgets.quantization_panel import (
    QuantizationPanel,
    variant_name,
)
from gui.workers import JobRunner, JobWorker
from tests.tiny_models import tiny_unet


def tiny_model() -> LoadedModel:
    return tiny_unet()


@pytest.fixture(scope="module")
def phantom() -> Image:
    image, _label = make_phantom(0, shape=(32, 32, 16))
    return image


class RunJob:
    """MainWindow.run_job in small: a JobWorker on a JobRunner, failures recorded."""

    def __init__(self) -> None:
        self.runner = JobRunner()
        self.failures: list = []
        self.progress_hooks: list = []

    def __call__(self, fn, *args, title, on_success=None, on_progress=None, on_end=None, **kw):
        worker = JobWorker(fn, *args, title=title, **kw)
        if on_progress is not None:
            worker.signals.progressed.connect(on_progress)
        for hook in self.progress_hooks:
            worker.signals.progressed.connect(hook)
        if on_success is not None:
            worker.signals.succeeded.connect(on_success)
        worker.signals.failed.connect(self.failures.append)
        if on_end is not None:
            worker.signals.finished.connect(on_end)
        return self.runner.start(worker)


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_panel(qtbot, settings):
    made = []

    def make(**kwargs):
        run_job = RunJob()
        panel = QuantizationPanel(run_job, settings=kwargs.pop("settings", settings), **kwargs)
        qtbot.addWidget(panel)
        made.append((panel, run_job))
        return panel, run_job

    yield make
    for panel, run_job in made:
        panel.cancel_run()
        run_job.runner.wait(10000)
        panel.close()


def configure(panel, *, method="flexround", bits=4, iters=20, granularity="tensor", samples=8):
    panel.method_combo.setCurrentIndex(panel.method_combo.findData(method))
    panel.bits_spin.setValue(bits)
    panel.granularity_combo.setCurrentIndex(panel.granularity_combo.findData(granularity))
    panel.reconstruction_combo.setCurrentIndex(panel.reconstruction_combo.findData("block"))
    panel.iters_spin.setValue(iters)
    panel.samples_spin.setValue(samples)
    panel.device_combo.setCurrentIndex(panel.device_combo.findData("cpu"))


def test_run_creates_variant_and_loss_curve(make_panel, qtbot, phantom):
    panel, run_job = make_panel()
    base = tiny_model()
    base_weights = {k: v.clone() for k, v in base.module.state_dict().items()}
    assert not panel.run_button.isEnabled()  # no model, no image yet
    panel.set_model(base)
    panel.set_image(phantom)
    configure(panel, iters=30)
    live_lengths = []
    run_job.progress_hooks.append(lambda _p: live_lengths.append(panel.loss_curve.points()[0].size))

    with qtbot.waitSignal(panel.variant_created, timeout=30000) as blocker:
        panel.run_button.click()
        assert panel.is_running and panel.cancel_button.isEnabled()
    name, variant, result = blocker.args
    qtbot.waitUntil(lambda: not panel.is_running, timeout=5000)

    assert not run_job.failures
    assert name == "W4 FlexRound (tensor, block)" == variant.name
    assert max(live_lengths) > 0  # the curve grew while the job ran
    assert variant.module is result.model and variant.is_quantized
    assert variant.spec.architecture == "unet" and variant.spec.quantization["weight_bits"] == 4
    assert variant.spec.class_names == base.spec.class_names
    # Quantizing copies the model: the base keeps its float weights.
    for key, value in base.module.state_dict().items():
        torch.testing.assert_close(value, base_weights[key])
    # After the run the curve is the full history, blocks one after another.
    xs, ys = panel.loss_curve.points()
    expected = np.concatenate([result.history[b] for b in result.blocks])
    np.testing.assert_allclose(ys, expected[expected > 0], rtol=1e-6)
    assert xs.tolist() == list(range(1, expected.size + 1))
    assert panel.loss_curve.boundary_positions() == [30.0 * k for k in range(1, len(result.blocks))]
    assert panel.variant_combo.currentText() == name and panel.save_button.isEnabled()
    assert panel.run_button.isEnabled()


def test_cancel_stops_long_run_without_variant(make_panel, qtbot, phantom):
    panel, run_job = make_panel()
    panel.set_model(tiny_model())
    panel.set_image(phantom)
    configure(panel, iters=100_000)
    created = []
    panel.variant_created.connect(lambda *args: created.append(args))
    panel.run_button.click()
    qtbot.waitUntil(lambda: panel.loss_curve.points()[0].size > 0, timeout=20000)
    with qtbot.waitSignal(panel.run_finished, timeout=10000) as blocker:
        panel.cancel_button.click()
    assert blocker.args == ["cancelled"]
    assert not created and not panel.variants and not run_job.failures
    assert "cancelled" in panel.status_label.text()
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_round_to_nearest_names_and_disables_learning_options(make_panel, qtbot, phantom):
    panel, _ = make_panel()
    panel.set_model(tiny_model())
    panel.set_image(phantom)
    configure(panel, method="rtn", bits=3, granularity="channel")
    assert not panel.iters_spin.isEnabled() and not panel.lr_spin.isEnabled()
    with qtbot.waitSignal(panel.variant_created, timeout=20000) as blocker:
        panel.run_button.click()
    assert blocker.args[0] == "W3 RTN (channel)"
    assert panel.loss_curve.points()[0].size == 0  # nothing learned, no curve
    # A second identical run gets a distinct name.
    qtbot.waitUntil(lambda: not panel.is_running, timeout=5000)
    with qtbot.waitSignal(panel.variant_created, timeout=20000) as blocker:
        panel.run_button.click()
    assert blocker.args[0] == "W3 RTN (channel) #2"
    assert list(panel.variants) == ["W3 RTN (channel)", "W3 RTN (channel) #2"]
    panel.clear_variants()
    assert not panel.variants and not panel.save_button.isEnabled()


def test_learning_rate_default_is_the_one_the_cli_and_the_api_use(make_panel):
    from core.cli.parser import build_parser

    panel, _ = make_panel()
    args = build_parser().parse_args(
        ["quantize", "--model", "m", "--calib", "a.nii.gz", "--out", "q"]
    )
    for method in ("flexround", "adaround"):
        panel.method_combo.setCurrentIndex(panel.method_combo.findData(method))
        config = panel.config()
        assert config.lr is None and args.lr is None  # nobody overrides the default
        assert config.effective_lr == QuantConfig(method=method).effective_lr
        assert config.effective_lr == DEFAULT_LR[method]
    assert panel.lr_spin.text() == "Method default"
    assert panel.config().learn_grid is args.learn_grid is QuantConfig().learn_grid is False


def test_learned_grid_is_a_flexround_option_that_reaches_the_config_and_persists(
    make_panel, settings
):
    panel, _ = make_panel()
    configure(panel, method="flexround")
    assert panel.learn_grid_check.isEnabled()
    panel.learn_grid_check.setChecked(True)
    assert panel.config().learn_grid is True
    configure(panel, method="adaround")
    assert not panel.learn_grid_check.isEnabled()
    settings.sync()
    again, _ = make_panel(settings=QSettings(settings.fileName(), QSettings.Format.IniFormat))
    assert again.learn_grid_check.isChecked()


def test_settings_persist_between_panels(make_panel, settings):
    panel, _ = make_panel()
    configure(panel, method="adaround", bits=3, iters=750, granularity="channel", samples=12)
    panel.reconstruction_combo.setCurrentIndex(panel.reconstruction_combo.findData("layer"))
    panel.lr_spin.setValue(0.0005)
    panel.seed_spin.setValue(7)
    panel.first_last_check.setChecked(False)
    panel.crop_spin.setValue(48)  # patches: small batches
    settings.sync()
    again, _ = make_panel(settings=QSettings(settings.fileName(), QSettings.Format.IniFormat))
    assert again.config() == QuantConfig(
        method="adaround",
        bits=3,
        granularity="channel",
        first_last_bits=None,
        reconstruction="layer",
        iters=750,
        lr=0.0005,
        batch_size=8,
        seed=7,
        device="cpu",
    )
    assert again.crop_spin.value() == 48


def test_save_writes_a_folder_load_model_reads_back(make_panel, qtbot, phantom, tmp_path):
    target = tmp_path / "saved"
    panel, run_job = make_panel(choose_folder=lambda parent, caption, start: str(target))
    panel.set_model(tiny_model())
    panel.set_image(phantom)
    configure(panel, method="rtn", bits=4)
    with qtbot.waitSignal(panel.variant_created, timeout=20000) as blocker:
        panel.run_button.click()
    variant = blocker.args[1]
    with qtbot.waitSignal(panel.variant_saved, timeout=20000):
        panel.save_button.click()
    assert not run_job.failures
    loaded = load_model(target)
    assert loaded.is_quantized
    reference = variant.module.state_dict()
    for key, value in loaded.module.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=1e-6, atol=1e-7)


def test_missing_folder_fails_without_variant(make_panel, qtbot, tmp_path):
    panel, run_job = make_panel()
    panel.set_model(tiny_model())
    configure(panel, method="rtn")
    panel.source_combo.setCurrentIndex(panel.source_combo.findData("folder"))
    assert panel.folder_edit.isEnabled() and panel.run_button.isEnabled()  # no image needed
    panel.folder_edit.setText(str(tmp_path / "nowhere"))
    with qtbot.waitSignal(panel.run_finished, timeout=10000) as blocker:
        panel.run_button.click()
    assert blocker.args == ["failed"] and not panel.variants
    assert "nowhere" in run_job.failures[0].message


def test_folder_calibration_reads_every_image_file(tmp_path, phantom):
    import nibabel as nib

    for index in range(2):
        data = np.asarray(phantom.array[..., 4 * index : 4 * index + 4], dtype=np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"case{index}.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    images = images_in_folder(tmp_path)
    assert [img.shape3 for img in images] == [(32, 32, 4), (32, 32, 4)]
    config = QuantConfig(method="rtn", bits=4, device="cpu")
    result = quantize_from_images(tiny_model(), tmp_path, config, n_samples=6)
    assert [layer.bits for layer in result.layers][1:-1] == [4] * (len(result.layers) - 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: no image files"):
        images_in_folder(empty)


def test_variant_name_follows_the_settings():
    assert variant_name(QuantConfig(method="adaround", bits=2, reconstruction="layer")) == (
        "W2 AdaRound (tensor, layer)"
    )
    assert variant_name(QuantConfig(method="rtn-minmax", bits=8)) == "W8 RTN-minmax (tensor)"
    learned = QuantConfig(method="flexround", bits=2, learn_grid=True)
    assert variant_name(learned) == "W2 FlexRound (tensor, block, learned s1)"
    assert variant_name(QuantConfig(method="flexround", bits=2)) == "W2 FlexRound (tensor, block)"


def test_every_control_explains_itself_in_a_tooltip(make_panel):
    panel, _ = make_panel()
    controls = [
        panel.method_combo,
        panel.bits_spin,
        panel.first_last_check,
        panel.granularity_combo,
        panel.reconstruction_combo,
        panel.iters_spin,
        panel.lr_spin,
        panel.source_combo,
        panel.folder_edit,
        panel.samples_spin,
        panel.device_combo,
        panel.seed_spin,
        panel.run_button,
        panel.cancel_button,
        panel.save_button,
    ]
    assert all(len(widget.toolTip()) > 20 for widget in controls)
    assert "one grid step for the whole layer" in panel.granularity_combo.toolTip()
    assert [panel.method_combo.itemData(i) for i in range(panel.method_combo.count())] == list(
        METHODS
    )


def test_eight_bit_activations_make_a_w4a8_variant(make_panel, qtbot, phantom):
    panel, _ = make_panel()
    panel.set_model(tiny_model())
    panel.set_image(phantom)
    configure(panel, iters=5)
    panel.act_check.setChecked(True)
    assert panel.config().act_bits == 8
    with qtbot.waitSignal(panel.variant_created, timeout=30000) as blocker:
        panel.run_button.click()
    name, variant, result = blocker.args
    assert name.startswith("W4A8 FlexRound")
    assert result.activations  # one learned input step per quantized layer
    assert all(grid.step > 0 and grid.bits == 8 for grid in result.activations.values())


def test_export_onnx_writes_the_selected_variant_and_lists_its_size(
    make_panel, qtbot, phantom, tmp_path
):
    target = tmp_path / "variant"  # the panel adds the .onnx suffix
    asked = []

    def choose_file(_parent, caption, suggested):
        asked.append((caption, suggested))
        return str(target)

    panel, run_job = make_panel(choose_file=choose_file)
    panel.set_model(tiny_model())
    panel.set_image(phantom)
    configure(panel, method="rtn", bits=4)
    assert not panel.export_button.isEnabled()  # no variant yet
    with qtbot.waitSignal(panel.variant_created, timeout=30000) as blocker:
        panel.run_button.click()
    name, variant, _result = blocker.args
    qtbot.waitUntil(lambda: not panel.is_running, timeout=5000)
    assert panel.export_button.isEnabled()
    assert panel.export_selected() is not None
    qtbot.waitUntil(lambda: not run_job.runner.is_busy, timeout=60000)
    assert not run_job.failures
    assert asked == [(f"Export {name} to ONNX", "W4_RTN_tensor.onnx")]
    written = tmp_path / "variant.onnx"
    size = written.stat().st_size
    qtbot.waitUntil(lambda: "MB" in panel.variant_combo.currentText(), timeout=5000)
    assert panel.variant_combo.currentText() == f"{name} · ONNX {size / 1e6:.3f} MB"
    assert panel.variant_combo.currentData() == name and panel.save_button.isEnabled()
    assert "layer(s) with integer weights" in panel.status_label.text()
    reopened = load_model(written)
    assert reopened.backend == "onnxruntime" and reopened.name == f"tiny ({name})"

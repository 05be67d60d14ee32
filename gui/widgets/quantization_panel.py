"""The Quantization panel: choose a method and its settings, run it with a live loss curve.

Every finished run becomes a model variant, announced with :attr:`QuantizationPanel.variant_created`
and listed in the panel so it can be saved as a model folder. The work itself runs as one core
job (:func:`core.quantize_images.quantize_from_images`: read the calibration images, draw
calibration inputs, quantize) through the main window's ``run_job``, so the GUI never blocks
and Cancel stops it.

Integration (MainWindow)::

    panel = QuantizationPanel(run_job=self.run_job)
    self.add_dock("Quantization", panel, Qt.DockWidgetArea.RightDockWidgetArea)
    panel.set_model(loaded_model)      # when a model is opened
    panel.set_image(image)             # when an image is opened
    panel.variant_created.connect(on_variant)   # (name, LoadedModel, QuantResult)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.io import Image
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.models import LoadedModel, quantized_variant, save_quantized_model
from core.quant import QuantConfig, QuantResult
from core.quant.config import DEFAULT_ITERS, default_lr
from core.quantize_images import quantize_from_images
from gui.widgets.compact import narrow_combo
from gui.widgets.loss_curve import LossCurveView

__all__ = [
    "METHOD_TITLES",
    "QuantizationPanel",
    "QuantVariant",
    "export_variant",
    "save_variant",
    "variant_name",
]

log = logging.getLogger("segbench.gui.quantization")

#: Method keys of :class:`core.quant.QuantConfig` and the names shown to the user.
METHOD_TITLES = {
    "flexround": "FlexRound",
    "adaround": "AdaRound",
    "rtn": "Round-to-nearest",
    "rtn-minmax": "Round-to-nearest (min/max)",
}
_SHORT_TITLES = {
    "flexround": "FlexRound",
    "adaround": "AdaRound",
    "rtn": "RTN",
    "rtn-minmax": "RTN-minmax",
}

_METHOD_TIPS = {
    "flexround": "Learns an element-wise divisor for every weight (Lee et al. 2023), so large "
    "weights may move several grid levels. Best at 2-3 bits.",
    "adaround": "Learns for each weight whether to round down or up (Nagel et al. 2020).",
    "rtn": "Rounds every weight to the nearest grid level; the grid comes from an error-"
    "minimising range search. Nothing is learned, so it is fast.",
    "rtn-minmax": "Rounds to nearest on a grid spanning the weights' minimum to maximum: the "
    "crudest baseline.",
}

RunJob = Callable[..., Any]
ChooseFolder = Callable[[QWidget, str, str], str]
#: ``choose_file(parent, caption, suggested_path) -> path`` (empty when cancelled).
ChooseFile = Callable[[QWidget, str, str], str]


def _ask_onnx_file(parent: QWidget, caption: str, suggested: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, caption, suggested, "ONNX model (*.onnx)")
    return path


def variant_name(config: QuantConfig) -> str:
    """The variant's display name, for example ``"W4 FlexRound (tensor, block)"``."""
    method = _SHORT_TITLES.get(config.method, config.method)
    bits = f"W{config.bits}" + (f"A{config.act_bits}" if config.act_bits else "")
    if config.learned:
        grid = ", learned s1" if config.method == "flexround" and config.learn_grid else ""
        return f"{bits} {method} ({config.granularity}, {config.reconstruction}{grid})"
    return f"{bits} {method} ({config.granularity})"


def save_variant(
    result: QuantResult,
    base: LoadedModel,
    folder: str | Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    label: str | None = None,
) -> Path:
    """Job wrapper of :func:`core.models.save_quantized_model` (writes a model folder)."""
    report(on_progress, Progress(0, None, f"writing {folder}", stage="save"))
    return save_quantized_model(result, base, folder, label=label)


def export_variant(
    model: LoadedModel,
    result: QuantResult,
    path: str | Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Any:
    """Job wrapper of :func:`core.deploy.onnx_export.export_onnx` (one ONNX file) or, for a
    framework model, :func:`core.deploy.framework_package.export_framework_onnx` (a deploy
    folder); returns its summary."""
    report(on_progress, Progress(0, None, f"exporting {model.name} to {path}", stage="export"))
    # lazy: torch.onnx and onnx are heavy
    if model.framework is not None:
        from core.deploy.framework_package import export_framework_onnx

        return export_framework_onnx(model, path, quant_result=result)
    from core.deploy.onnx_export import export_onnx

    return export_onnx(model, path, quant_result=result)


@dataclass
class QuantVariant:
    """One finished run of the panel: what :meth:`QuantizationPanel.save_selected` writes."""

    name: str
    model: LoadedModel
    result: QuantResult
    base: LoadedModel


def _file_stem(name: str) -> str:
    """A file name from a variant name: "W4 FlexRound (tensor)" -> "W4_FlexRound_tensor"."""
    return "_".join("".join(c if c.isalnum() else " " for c in name).split())


# --- the panel ----------------------------------------------------------------------------------
class QuantizationPanel(QWidget):
    """Settings, Run/Cancel, live loss curve and Save for post-training quantization.

    Parameters
    ----------
    run_job : callable
        ``run_job(fn, *args, title=..., on_success=..., on_progress=..., on_end=..., **kwargs)
        -> JobWorker``, i.e. :meth:`gui.main_window.MainWindow.run_job`.
    settings : QSettings, optional
        Where the choices persist; the application's default ``QSettings()`` when omitted.
    choose_folder : callable, optional
        ``choose_folder(parent, caption, start_dir) -> str`` (empty when cancelled); defaults to
        ``QFileDialog.getExistingDirectory``. Tests pass a function returning a fixed path.
    parent : QWidget, optional
    """

    #: (name, LoadedModel of the quantized module with the base spec, core.quant.QuantResult)
    variant_created = Signal(str, object, object)
    #: Emitted with the folder after a variant was saved.
    variant_saved = Signal(str, object)
    #: Emitted when a run ends in any way ("succeeded", "failed" or "cancelled").
    run_finished = Signal(str)
    #: Emitted when a run starts (the window shows the loss curve then).
    run_started = Signal()

    SETTINGS_GROUP = "quantization"

    def __init__(
        self,
        run_job: RunJob,
        *,
        settings: QSettings | None = None,
        choose_folder: ChooseFolder | None = None,
        choose_file: ChooseFile | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._run_job = run_job
        self._settings = settings if settings is not None else QSettings()
        self._choose_folder = choose_folder or QFileDialog.getExistingDirectory
        self._choose_file = choose_file or _ask_onnx_file
        self._model: LoadedModel | None = None
        self._image: Image | None = None
        self._worker: Any = None
        self._run_outcome = ""
        self._run_counter = 0
        self.variants: dict[str, QuantVariant] = {}
        self._build()
        self._restore_settings()
        self._connect_persistence()
        self._update_enabled()

    # --- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)

        method_box = QGroupBox("Method", self)
        form = QFormLayout(method_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.method_combo = narrow_combo(self)
        for key, title in METHOD_TITLES.items():
            self.method_combo.addItem(title, key)
            self.method_combo.setItemData(
                self.method_combo.count() - 1, _METHOD_TIPS[key], Qt.ItemDataRole.ToolTipRole
            )
        self.method_combo.setToolTip(
            "How each weight is rounded to the integer grid.\n"
            + "\n".join(f"{METHOD_TITLES[k]}: {tip}" for k, tip in _METHOD_TIPS.items())
        )
        form.addRow("Method", self.method_combo)

        self.bits_spin = QSpinBox(self)
        self.bits_spin.setRange(2, 8)
        self.bits_spin.setValue(4)
        self.bits_spin.setSuffix(" bit")
        self.bits_spin.setToolTip(
            "Weight bits: 2**bits grid levels per layer. Fewer bits make a smaller model and a "
            "larger error."
        )
        form.addRow("Weight bits", self.bits_spin)

        self.first_last_check = QCheckBox("First, last layer at 8 bit", self)
        self.first_last_check.setChecked(True)
        self.first_last_check.setToolTip(
            "Keep the input and output layers at 8 bit, the usual convention (BRECQ, QDrop, "
            "FlexRound): they are small but sensitive."
        )
        form.addRow(self.first_last_check)
        self.act_check = QCheckBox("8-bit activations too", self)
        self.act_check.setToolTip(
            "Also fake-quantize every quantized layer's input to 8 bits with a learned step, "
            "trained together with the weights (the paper's W/A setting, e.g. W4A8). Off: "
            "weights only."
        )
        form.addRow(self.act_check)

        self.granularity_combo = narrow_combo(self)
        self.granularity_combo.addItem("Per tensor", "tensor")
        self.granularity_combo.addItem("Per channel", "channel")
        self.granularity_combo.setToolTip(
            "Per tensor: one grid step for the whole layer, the paper's setting.\n"
            "Per channel: one grid step per output channel, more accurate, needs a runtime that "
            "supports it."
        )
        form.addRow("Grid", self.granularity_combo)

        self.reconstruction_combo = narrow_combo(self)
        self.reconstruction_combo.addItem("Block", "block")
        self.reconstruction_combo.addItem("Layer", "layer")
        self.reconstruction_combo.setToolTip(
            "What is learned to match the float model:\n"
            "Block: the output of a whole block of layers (BRECQ style), usually better.\n"
            "Layer: the output of each layer on its own, simpler and often a little faster."
        )
        form.addRow("Reconstruct", self.reconstruction_combo)

        self.iters_spin = QSpinBox(self)
        self.iters_spin.setRange(1, 100_000)
        self.iters_spin.setSingleStep(100)
        self.iters_spin.setValue(DEFAULT_ITERS)
        self.iters_spin.setToolTip(
            f"Optimizer steps per block (or layer); {DEFAULT_ITERS} is the default of the "
            "command line too. The paper uses 5000; fewer steps are a quicker, rougher look "
            "(at 2 bits 150 steps cost the demo 3-5 Dice points). Not used by round-to-nearest."
        )
        form.addRow("Iterations", self.iters_spin)

        # 0 stands for "the method's default", the same one the CLI and the API use.
        self.lr_spin = QDoubleSpinBox(self)
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(0.0, 1.0)
        self.lr_spin.setSingleStep(5e-3)
        self.lr_spin.setSpecialValueText("Method default")
        self.lr_spin.setValue(0.0)
        self.lr_spin.setToolTip(
            "Adam learning rate of the rounding parameters (cosine decay to 0); 'Method "
            f"default' uses FlexRound {default_lr('flexround'):g}, AdaRound "
            f"{default_lr('adaround'):g}, as the command line does.\n"
            "FlexRound's rate is in grid levels per step: each layer's log factors learn at "
            "rate / reach (reach: how many grid steps its largest weight lies from zero), so "
            "one value suits 2 to 8 bits. Not used by round-to-nearest."
        )
        form.addRow("Learning rate", self.lr_spin)

        self.learn_grid_check = QCheckBox("Learn the grid size s1 (FlexRound)", self)
        self.learn_grid_check.setToolTip(
            "FlexRound learns s1 as well as the element-wise divisor, as in the paper. Off "
            "(default): s1 stays at the range search's value, which kept one benchmark network "
            "3 points closer to its float model at 2 bits and changed nothing on the demo."
        )
        form.addRow(self.learn_grid_check)
        layout.addWidget(method_box)

        data_box = QGroupBox("Calibration and device", self)
        data_form = QFormLayout(data_box)
        data_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.source_combo = narrow_combo(self)
        self.source_combo.addItem("Slices of the open image", "image")
        self.source_combo.addItem("Folder of images", "folder")
        self.source_combo.setToolTip(
            "Unlabelled inputs the quantizer learns from: slices (or patches) of the open "
            "image, or every image file in a folder. They should look like what the model "
            "will see."
        )
        data_form.addRow("Calibration", self.source_combo)

        folder_row = QHBoxLayout()
        self.folder_edit = QLineEdit(self)
        self.folder_edit.setPlaceholderText("folder of NIfTI / NRRD / PNG / DICOM files")
        self.folder_edit.setToolTip("Folder whose image files are used for calibration.")
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.setToolTip("Choose the calibration folder.")
        self.browse_button.clicked.connect(self._on_browse_clicked)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.browse_button)
        data_form.addRow("Folder", folder_row)

        self.samples_spin = QSpinBox(self)
        self.samples_spin.setRange(1, 4096)
        self.samples_spin.setValue(64)
        self.samples_spin.setToolTip(
            "Number of calibration samples (2-D: slices, 3-D: patches) drawn from the source, "
            "preferring ones with anatomy in them. More is slower and a little better."
        )
        data_form.addRow("Samples", self.samples_spin)
        self.crop_spin = QSpinBox(self)
        self.crop_spin.setRange(0, 1024)
        self.crop_spin.setSingleStep(16)
        self.crop_spin.setValue(64)
        self.crop_spin.setSpecialValueText("whole slices")
        self.crop_spin.setSuffix(" px")
        self.crop_spin.setToolTip(
            "Random square patches of this size instead of whole slices (0: whole slices). "
            "64 px patches make learning several times faster on a CPU with about the same "
            "result."
        )
        data_form.addRow("Patch size", self.crop_spin)

        self.device_combo = narrow_combo(self)
        self.device_combo.addItem("Auto", "auto")
        self.device_combo.addItem("CPU", "cpu")
        self.device_combo.addItem("CUDA GPU", "cuda")
        self.device_combo.setToolTip(
            "Where to run: Auto uses a CUDA GPU when one is available, else the CPU."
        )
        data_form.addRow("Device", self.device_combo)

        self.seed_spin = QSpinBox(self)
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setToolTip(
            "Seed of the calibration sampling and batch order: the same seed repeats a run."
        )
        data_form.addRow("Seed", self.seed_spin)
        layout.addWidget(data_box)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", self)
        self.run_button.setToolTip("Quantize the open model with these settings.")
        self.run_button.clicked.connect(self.start_run)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the running quantization; no variant is created.")
        self.cancel_button.clicked.connect(self.cancel_run)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.status_label = QLabel("Open a model to quantize it.", self)
        self.status_label.setWordWrap(True)
        self.status_label.setObjectName("quantStatus")
        layout.addWidget(self.status_label)

        self.loss_curve = LossCurveView(self)
        layout.addWidget(self.loss_curve, 1)

        save_row = QHBoxLayout()
        self.variant_combo = narrow_combo(self)
        self.variant_combo.setToolTip("Variants made in this session; Save writes the one shown.")
        self.save_button = QPushButton("Save…", self)
        self.save_button.setToolTip(
            "Write the variant as a model folder (spec, float base weights, integer codes with "
            "their grids) that File > Open model reads back."
        )
        self.save_button.clicked.connect(self.save_selected)
        self.export_button = QPushButton("Export ONNX…", self)
        self.export_button.setToolTip(
            "Write the variant as one ONNX file for ONNX Runtime: the integer codes with "
            "DequantizeLinear (4-bit as INT4), learned input steps as QuantizeLinear/"
            "DequantizeLinear, the model spec in its metadata. Its size is shown in the list. "
            "An nnU-Net or MONAI variant goes to a deploy folder: the framework's files with "
            "one ONNX network per fold."
        )
        self.export_button.clicked.connect(self.export_selected)
        # The variant on a row of its own, its two buttons below: side by side, the three did
        # not fit the dock at 1280x800.
        layout.addWidget(self.variant_combo)
        save_row.addWidget(self.save_button)
        save_row.addWidget(self.export_button)
        layout.addLayout(save_row)

        self.method_combo.currentIndexChanged.connect(self._update_enabled)
        self.source_combo.currentIndexChanged.connect(self._update_enabled)
        self.variant_combo.currentIndexChanged.connect(self._update_enabled)

    # --- public API --------------------------------------------------------------------------
    def set_model(self, model: LoadedModel | None) -> None:
        """The float model the next run quantizes (variants of an earlier model stay listed)."""
        self._model = model
        self._update_enabled()
        if model is not None and not self.is_running:
            self.status_label.setText(f"Ready to quantize {model.name}.")

    def set_image(self, image: Image | None) -> None:
        """The open image, used when the calibration source is its slices."""
        self._image = image
        self._update_enabled()

    def clear_variants(self) -> None:
        """Forget the finished runs (for example when a new model replaces the old one)."""
        self.variants.clear()
        self.variant_combo.clear()
        self._update_enabled()

    @property
    def is_running(self) -> bool:
        """True while a quantization job runs."""
        return self._worker is not None

    def config(self) -> QuantConfig:
        """The :class:`QuantConfig` the current settings describe (raises ValueError if bad)."""
        method = self.method_combo.currentData()
        return QuantConfig(
            method=method,
            bits=self.bits_spin.value(),
            granularity=self.granularity_combo.currentData(),
            first_last_bits=8 if self.first_last_check.isChecked() else None,
            act_bits=8 if self.act_check.isChecked() else None,
            reconstruction=self.reconstruction_combo.currentData(),
            iters=self.iters_spin.value(),
            lr=self.lr_spin.value() or None,
            learn_grid=self.learn_grid_check.isChecked(),
            batch_size=min(8 if self.crop_spin.value() else 32, self.samples_spin.value()),
            seed=self.seed_spin.value(),
            device=self.device_combo.currentData(),
        )

    def start_run(self) -> Any:
        """Start quantizing the model with the current settings; returns the job's worker."""
        if self.is_running or self._model is None:
            return None
        source = self._calibration_source()
        if source is None:
            return None
        config = self.config()
        self._store_settings()
        base = self._model
        self._run_counter += 1
        run_id = self._run_counter
        self._run_outcome = "cancelled"
        self.loss_curve.reset(config.iters if config.learned else 0)
        self.status_label.setText(f"Quantizing {base.name}: {variant_name(config)}…")
        self._worker = self._run_job(
            quantize_from_images,
            base,
            source,
            config,
            n_samples=self.samples_spin.value(),
            crop=self.crop_spin.value() or None,
            title=f"Quantize {base.name}",
            on_success=lambda result: self._on_run_succeeded(run_id, base, result),
            on_progress=self._on_run_progressed,
            on_end=lambda: self._on_run_ended(run_id),
        )
        self._worker.signals.failed.connect(lambda _failure: self._set_outcome(run_id, "failed"))
        self._update_enabled()
        self.run_started.emit()
        return self._worker

    def cancel_run(self) -> None:
        """Ask the running quantization to stop; it ends without a variant."""
        if self._worker is not None:
            self._worker.cancel()
            self.status_label.setText("Cancelling…")

    def save_selected(self) -> Any:
        """Ask for a folder and save the selected variant there (as a job); returns the worker."""
        name = self.variant_combo.currentData()
        variant = self.variants.get(name)
        if variant is None:
            return None
        start = str(self._settings.value(f"{self.SETTINGS_GROUP}/save_dir", "") or "")
        folder = self._choose_folder(self, f"Save {name} into an empty folder", start)
        if not folder:
            return None
        self._settings.setValue(f"{self.SETTINGS_GROUP}/save_dir", str(Path(folder).parent))
        return self._run_job(
            save_variant,
            variant.result,
            variant.base,
            folder,
            label=name,
            title=f"Save {name}",
            on_success=lambda path: self._on_saved(name, path),
        )

    def export_selected(self) -> Any:
        """Ask for an .onnx file and export the selected variant there (as a job)."""
        name = self.variant_combo.currentData()
        variant = self.variants.get(name)
        if variant is None:
            return None
        start = str(self._settings.value(f"{self.SETTINGS_GROUP}/export_dir", "") or "")
        if variant.model.framework is not None:
            # The framework's pipeline cannot live in one ONNX file: a deploy folder holds its
            # files with one ONNX network per member.
            path = self._choose_folder(
                self, f"Export {name} to a deploy folder (framework files, ONNX networks)", start
            )
        else:
            stem = _file_stem(name)
            suggested = str(Path(start) / f"{stem}.onnx") if start else f"{stem}.onnx"
            path = self._choose_file(self, f"Export {name} to ONNX", suggested)
            if path and Path(path).suffix.lower() != ".onnx":
                path = f"{path}.onnx"
        if not path:
            return None
        self._settings.setValue(f"{self.SETTINGS_GROUP}/export_dir", str(Path(path).parent))
        return self._run_job(
            export_variant,
            variant.model,
            variant.result,
            path,
            title=f"Export {name} to ONNX",
            on_success=lambda summary: self._on_exported(name, summary),
        )

    # --- slots -------------------------------------------------------------------------------
    def _on_exported(self, name: str, summary: Any) -> None:
        index = self.variant_combo.findData(name)
        if index >= 0:
            self.variant_combo.setItemText(index, f"{name} · ONNX {summary.bytes / 1e6:.3f} MB")
            self.variant_combo.setItemData(
                index, "\n".join(summary.lines()), Qt.ItemDataRole.ToolTipRole
            )
        self.status_label.setText("\n".join(summary.lines()))
        log.info("exported %s: %s", name, "; ".join(summary.lines()))

    def _on_run_progressed(self, progress: Progress) -> None:
        if progress.message:
            self.status_label.setText(progress.message)
        loss = progress.values.get("loss") if progress.values else None
        if loss is not None and progress.stage == "reconstruction":
            self.loss_curve.add_point(progress.step, float(loss))

    def _on_run_succeeded(self, run_id: int, base: LoadedModel, result: QuantResult) -> None:
        self._set_outcome(run_id, "succeeded")
        self.loss_curve.set_history(result.history, result.blocks)
        name = self._unique_name(variant_name(result.config))
        model = quantized_variant(result, base, name)
        self.variants[name] = QuantVariant(name, model, result, base)
        self.variant_combo.addItem(name, name)
        self.variant_combo.setCurrentIndex(self.variant_combo.count() - 1)
        seconds = result.timings.get("total", float("nan"))
        self.status_label.setText(f"{name}: done in {seconds:.1f} s.")
        self.status_label.setToolTip(f"Ran on {result.device}.")
        log.info("variant %s created from %s", name, base.name)
        self.variant_created.emit(name, model, result)

    def _on_run_ended(self, run_id: int) -> None:
        if run_id != self._run_counter:
            return
        self._worker = None
        outcome = self._run_outcome
        if outcome == "cancelled":
            self.status_label.setText("Quantization cancelled; no variant was created.")
        elif outcome == "failed":
            self.status_label.setText("Quantization failed (see the error dialog and the log).")
        self._update_enabled()
        self.run_finished.emit(outcome)

    def _set_outcome(self, run_id: int, outcome: str) -> None:
        if run_id == self._run_counter:
            self._run_outcome = outcome

    def _on_saved(self, name: str, path: Any) -> None:
        self.status_label.setText(f"Saved {name} to {path}.")
        self.variant_saved.emit(name, path)

    def _on_browse_clicked(self) -> None:
        folder = self._choose_folder(
            self, "Folder of calibration images", self.folder_edit.text().strip()
        )
        if folder:
            self.folder_edit.setText(folder)

    # --- helpers -----------------------------------------------------------------------------
    def _calibration_source(self) -> Image | str | None:
        if self.source_combo.currentData() == "folder":
            folder = self.folder_edit.text().strip()
            if not folder:
                self.status_label.setText("Choose a folder of calibration images first.")
                return None
            return folder
        if self._image is None:
            self.status_label.setText("Open an image first: its slices are the calibration data.")
            return None
        return self._image

    def _unique_name(self, name: str) -> str:
        unique, n = name, 2
        while unique in self.variants:
            unique, n = f"{name} #{n}", n + 1
        return unique

    def _update_enabled(self, *_: Any) -> None:
        running = self.is_running
        learned = self.method_combo.currentData() in ("flexround", "adaround")
        folder = self.source_combo.currentData() == "folder"
        for widget in (
            self.method_combo,
            self.bits_spin,
            self.first_last_check,
            self.act_check,
            self.granularity_combo,
            self.source_combo,
            self.samples_spin,
            self.crop_spin,
            self.device_combo,
            self.seed_spin,
        ):
            widget.setEnabled(not running)
        for widget in (self.reconstruction_combo, self.iters_spin, self.lr_spin):
            widget.setEnabled(not running and learned)
        flexround = self.method_combo.currentData() == "flexround"
        self.learn_grid_check.setEnabled(not running and flexround)
        self.folder_edit.setEnabled(not running and folder)
        self.browse_button.setEnabled(not running and folder)
        has_source = folder or self._image is not None
        self.run_button.setEnabled(not running and self._model is not None and has_source)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(self.variant_combo.currentData() in self.variants)
        self.export_button.setEnabled(self.variant_combo.currentData() in self.variants)

    # --- settings ----------------------------------------------------------------------------
    def _persisted(self) -> list[tuple[str, QWidget]]:
        return [
            ("method", self.method_combo),
            ("bits", self.bits_spin),
            ("first_last_8bit", self.first_last_check),
            ("act_8bit", self.act_check),
            ("granularity", self.granularity_combo),
            ("reconstruction", self.reconstruction_combo),
            ("iters", self.iters_spin),
            # not "lr": values stored under that key were the old shared 3e-3, which FlexRound
            # now reads in grid levels per step
            ("learning_rate", self.lr_spin),
            ("learn_grid", self.learn_grid_check),
            ("source", self.source_combo),
            ("folder", self.folder_edit),
            ("samples", self.samples_spin),
            ("crop", self.crop_spin),
            ("device", self.device_combo),
            ("seed", self.seed_spin),
        ]

    def _store_settings(self, *_: Any) -> None:
        group = self.SETTINGS_GROUP
        for key, widget in self._persisted():
            if isinstance(widget, QComboBox):
                value: Any = widget.currentData()
            elif isinstance(widget, QCheckBox):
                value = widget.isChecked()
            elif isinstance(widget, QLineEdit):
                value = widget.text()
            else:
                value = widget.value()
            self._settings.setValue(f"{group}/{key}", value)

    def _restore_settings(self) -> None:
        group = self.SETTINGS_GROUP
        for key, widget in self._persisted():
            value = self._settings.value(f"{group}/{key}")
            if value is None:
                continue
            # QSettings' INI backend returns strings; convert back by the widget's type and
            # ignore values that no longer fit (an old method name, a bad number).
            try:
                if isinstance(widget, QComboBox):
                    index = widget.findData(str(value))
                    if index >= 0:
                        widget.setCurrentIndex(index)
                elif isinstance(widget, QCheckBox):
                    widget.setChecked(str(value).lower() in ("true", "1"))
                elif isinstance(widget, QLineEdit):
                    widget.setText(str(value))
                elif isinstance(widget, QDoubleSpinBox):
                    widget.setValue(float(value))
                elif isinstance(widget, QSpinBox):
                    widget.setValue(int(value))
            except (TypeError, ValueError):
                log.warning("ignoring the stored setting %s/%s=%r", group, key, value)

    def _connect_persistence(self) -> None:
        for _key, widget in self._persisted():
            if isinstance(widget, QComboBox):
                widget.currentIndexChanged.connect(self._store_settings)
            elif isinstance(widget, QCheckBox):
                widget.toggled.connect(self._store_settings)
            elif isinstance(widget, QLineEdit):
                widget.editingFinished.connect(self._store_settings)
            else:
                widget.valueChanged.connect(self._store_settings)

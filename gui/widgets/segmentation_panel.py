"""The Segmentation panel: pick a model variant and a decision rule, then Run."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.pipeline import DEFAULT_PRUNING_PROB

__all__ = ["SegmentationRequest", "SegmentationPanel", "DECISION_TITLES"]

DECISION_TITLES = {
    "rma-dice": "RankSEG-RMA (Dice)",
    "rma-iou": "RankSEG-RMA (IoU)",
    "guarded": "Guarded RankSEG-RMA",
    "argmax": "Argmax",
    "threshold": "Threshold",
}


@dataclass(frozen=True)
class SegmentationRequest:
    """What the user asked the Run button for."""

    variant: str
    decision: str
    pruning_prob: float
    threshold: float
    per_slice: bool
    device: str
    backend: str = "torch"


class SegmentationPanel(QWidget):
    """Options of a segmentation run; emits ``run_requested`` with a SegmentationRequest."""

    run_requested = Signal(object)
    cancel_requested = Signal()

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or QSettings()
        form = QFormLayout()
        self.variant_combo = QComboBox(self)
        self.variant_combo.setToolTip("The FP32 model or one of its quantized variants")
        form.addRow("Model", self.variant_combo)
        self.decision_combo = QComboBox(self)
        for key, title in DECISION_TITLES.items():
            self.decision_combo.addItem(title, key)
        self.decision_combo.setToolTip(
            "Argmax: most probable class per voxel. RankSEG-RMA: the mask that maximises the "
            "expected Dice (or IoU) under the model's probabilities; it keeps faint small "
            "structures that argmax drops. Guarded RankSEG-RMA: per class RMA or argmax and "
            "RMA's pruning, as learned with the model's probability calibration."
        )
        self.decision_combo.currentIndexChanged.connect(self._on_decision_changed)
        form.addRow("Decision rule", self.decision_combo)
        self.pruning_spin = QDoubleSpinBox(self)
        self.pruning_spin.setRange(0.0, 0.99)
        self.pruning_spin.setSingleStep(0.05)
        self.pruning_spin.setDecimals(2)
        self.pruning_spin.setToolTip(
            "RankSEG-RMA leaves a class empty when its highest probability is at or below this. "
            "Lower it to keep faint small objects (the paper's code used 0.1, the package 0.5)."
        )
        form.addRow("Pruning threshold", self.pruning_spin)
        self.threshold_spin = QDoubleSpinBox(self)
        self.threshold_spin.setRange(0.01, 0.99)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setToolTip("Cut-off of the Threshold rule (per class, p > cut-off)")
        form.addRow("Threshold", self.threshold_spin)
        self.per_slice_check = QCheckBox("Optimise per slice (else per volume)", self)
        self.per_slice_check.setToolTip(
            "RankSEG-RMA maximises the metric of each 2-D slice on its own instead of the whole "
            "volume; both are legitimate and give different masks."
        )
        form.addRow(self.per_slice_check)
        self.device_combo = QComboBox(self)
        for device in ("auto", "cpu", "cuda"):
            self.device_combo.addItem(device, device)
        self.device_combo.setToolTip("auto: CUDA when present, the CPU otherwise")
        form.addRow("Device", self.device_combo)
        self.backend_combo = QComboBox(self)
        self.backend_combo.addItem("PyTorch", "torch")
        self.backend_combo.addItem("ONNX Runtime", "onnxruntime")
        self.backend_combo.setToolTip(
            "What runs the network. ONNX Runtime runs the variant exported to ONNX with its "
            "integer weights (exported on its first run); an opened .onnx model runs only there. "
            "nnU-Net and MONAI models keep their framework's pipeline and run each network "
            "(fold) in ONNX Runtime inside it."
        )
        form.addRow("Backend", self.backend_combo)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run segmentation", self)
        self.run_button.setObjectName("runSegmentation")
        self.run_button.clicked.connect(self._on_run_clicked)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self._restore()
        self._on_decision_changed()

    def _restore(self) -> None:
        decision = self.settings.value("segmentation/decision", "rma-dice")
        index = self.decision_combo.findData(decision)
        self.decision_combo.setCurrentIndex(max(0, index))
        self.pruning_spin.setValue(
            float(self.settings.value("segmentation/pruning", DEFAULT_PRUNING_PROB))
        )
        self.threshold_spin.setValue(float(self.settings.value("segmentation/threshold", 0.5)))
        self.per_slice_check.setChecked(
            str(self.settings.value("segmentation/per_slice", "false")).lower() == "true"
        )
        backend = self.backend_combo.findData(self.settings.value("segmentation/backend", "torch"))
        self.backend_combo.setCurrentIndex(max(0, backend))

    def _save(self) -> None:
        self.settings.setValue("segmentation/decision", self.decision_combo.currentData())
        self.settings.setValue("segmentation/pruning", self.pruning_spin.value())
        self.settings.setValue("segmentation/threshold", self.threshold_spin.value())
        self.settings.setValue("segmentation/per_slice", self.per_slice_check.isChecked())
        self.settings.setValue("segmentation/backend", self.backend_combo.currentData())

    def set_variants(self, names: list[str], current: str | None = None) -> None:
        previous = current or self.variant_combo.currentText()
        self.variant_combo.clear()
        self.variant_combo.addItems(names)
        index = self.variant_combo.findText(previous)
        self.variant_combo.setCurrentIndex(index if index >= 0 else 0)

    def set_busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def request(self) -> SegmentationRequest:
        return SegmentationRequest(
            variant=self.variant_combo.currentText(),
            decision=self.decision_combo.currentData(),
            pruning_prob=self.pruning_spin.value(),
            threshold=self.threshold_spin.value(),
            per_slice=self.per_slice_check.isChecked(),
            device=self.device_combo.currentData(),
            backend=self.backend_combo.currentData(),
        )

    def _on_decision_changed(self, *_: object) -> None:
        decision = self.decision_combo.currentData()
        is_rma = str(decision).startswith("rma")
        self.pruning_spin.setEnabled(is_rma)  # a guard has its own pruning per class
        self.per_slice_check.setEnabled(is_rma or decision == "guarded")
        self.threshold_spin.setEnabled(decision == "threshold")

    def _on_run_clicked(self) -> None:
        self._save()
        self.run_requested.emit(self.request())

"""The Data panel: open an image, its ground truth and a model; see what was opened, in words."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.io import Image
from core.models import LoadedModel

__all__ = ["DataPanel", "IMAGE_FILTER", "MODEL_FILTER", "MAX_RECENT"]

IMAGE_FILTER = (
    "Images (*.nii *.nii.gz *.dcm *.nrrd *.nhdr *.mha *.mhd "
    "*.png *.jpg *.jpeg *.tif *.tiff *.bmp);;"
    "All files (*)"
)
MODEL_FILTER = (
    "Models (*.json *.safetensors *.pt *.pth *.ts *.onnx);;nnU-Net model folder (plans.json);;"
    "All files (*)"
)
MAX_RECENT = 8


def describe_image(image: Image) -> str:
    """A few lines about an image for the panel (shape, spacing, orientation, modality)."""
    spacing = " x ".join(f"{s:.3g}" for s in image.spacing)
    size = image.size_text() + (" (RGB)" if image.is_rgb else "")
    lines = [
        f"<b>{Path(str(image.path)).name if image.path else 'image'}</b>",
        # columns x rows x slices, as `info` says it; a photograph has no millimetres
        size if image.is_natural else f"{size}, {spacing} mm",
        f"orientation {image.orientation}" + (f", {image.modality}" if image.modality else ""),
    ]
    for warning in image.warnings:
        lines.append(f"<span style='color:#b35c00'>⚠ {_html_lines(warning)}</span>")
    return "<br>".join(lines)


def _html_lines(text: str) -> str:
    """A warning for a rich-text label: its own line breaks kept (a list of series)."""
    return html.escape(text).replace("\n", "<br>")


def _framework_line(facts: dict[str, Any], in_channels: int) -> str:
    """What runs the model and how: nnU-Net configuration and folds, a MONAI bundle's name and
    network, then input channels, patch and spacing where the framework has them."""
    head = " ".join(
        str(facts[k]) for k in ("framework", "configuration", "bundle", "version") if facts.get(k)
    )
    parts = [head]
    if facts.get("folds"):
        parts.append(f"fold(s) {', '.join(facts['folds'])}")
    if facts.get("network"):
        parts.append(f"network {facts['network']}")
    parts.append(f"input: {', '.join(facts.get('channel_names') or []) or in_channels}")
    if facts.get("patch_size"):
        parts.append(f"patch {' x '.join(map(str, facts['patch_size']))}")
    if facts.get("spacing_mm"):
        parts.append(f"spacing {' x '.join(f'{s:g}' for s in facts['spacing_mm'])} mm")
    if "mirroring" in facts:
        parts.append(f"mirroring {'on' if facts['mirroring'] else 'off'}")
    return "; ".join(parts)


def describe_model(model: LoadedModel) -> str:
    spec = model.spec
    classes = ", ".join(spec.class_names)
    text = f"<b>{model.name}</b><br>{spec.architecture}, {spec.mode}, {spec.activation}<br>"
    if model.framework is not None:
        text += _framework_line(model.framework.describe(), spec.in_channels) + "<br>"
    calibration = spec.probability_calibration
    if calibration is not None:
        text += f"probability calibration: {calibration.describe()}"
        if calibration.guard is not None:
            by_argmax = [
                n
                for n, r in zip(spec.class_names, calibration.guard.rules, strict=True)
                if r == "argmax"
            ]
            text += f" (argmax for {', '.join(by_argmax)})" if by_argmax else ""
        text += "<br>"
    return text + f"classes: {classes}"


class DataPanel(QWidget):
    """Buttons to open files, a recent-files list, and descriptions of what is open.

    The panel only asks for paths; the main window opens them on the worker.
    """

    image_requested = Signal(str)
    folder_requested = Signal(str)
    ground_truth_requested = Signal(str)
    model_requested = Signal(str)

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or QSettings()
        layout = QVBoxLayout(self)

        buttons = QGroupBox("Open", self)
        grid = QVBoxLayout(buttons)
        row = QHBoxLayout()
        self.open_image_button = QPushButton("Image…", self)
        self.open_image_button.setToolTip("Open a NIfTI, NRRD, MHA, DICOM file or a 2-D image")
        self.open_image_button.clicked.connect(self._on_open_image_clicked)
        self.open_folder_button = QPushButton("DICOM folder…", self)
        self.open_folder_button.setToolTip("Open a folder of DICOM files; you pick the series")
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)
        row.addWidget(self.open_image_button)
        row.addWidget(self.open_folder_button)
        grid.addLayout(row)
        row = QHBoxLayout()
        self.open_gt_button = QPushButton("Ground truth…", self)
        self.open_gt_button.setToolTip("Open a label mask with the same grid as the image")
        self.open_gt_button.clicked.connect(self._on_open_gt_clicked)
        self.open_model_button = QPushButton("Model…", self)
        self.open_model_button.setToolTip(
            "Open a model folder (model.json + weights), a .safetensors with its .json, "
            "a TorchScript file, an exported .onnx (runs in ONNX Runtime), an nnU-Net v2 trained "
            "model folder (pick its plans.json, or a "
            "fold's checkpoint for that fold alone) or a MONAI bundle (pick its "
            "configs/metadata.json or models/model.pt); or drop a model folder on the window"
        )
        self.open_model_button.clicked.connect(self._on_open_model_clicked)
        row.addWidget(self.open_gt_button)
        row.addWidget(self.open_model_button)
        grid.addLayout(row)
        self.recent_combo = QComboBox(self)
        self.recent_combo.setToolTip("Recently opened images")
        self.recent_combo.activated.connect(self._on_recent_activated)
        grid.addWidget(QLabel("Recent images:", self))
        grid.addWidget(self.recent_combo)
        layout.addWidget(buttons)

        self.image_info = QLabel("No image open.", self)
        self.image_info.setWordWrap(True)
        self.image_info.setObjectName("imageInfo")
        self.gt_info = QLabel("No ground truth.", self)
        self.gt_info.setWordWrap(True)
        self.model_info = QLabel("No model open.", self)
        self.model_info.setWordWrap(True)
        for label in (self.image_info, self.gt_info, self.model_info):
            layout.addWidget(label)
        layout.addStretch(1)
        self._refresh_recent()

    # Dialog hooks: tests replace these to avoid modal dialogs.
    def ask_open_path(self, title: str, file_filter: str) -> str:
        return QFileDialog.getOpenFileName(self, title, self._last_dir(), file_filter)[0]

    def ask_folder(self, title: str) -> str:
        return QFileDialog.getExistingDirectory(self, title, self._last_dir())

    def _last_dir(self) -> str:
        recent = self.recent_files()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    # --- recent files ----------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.settings.value("recent_images", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def remember(self, path: str) -> None:
        recent = [p for p in self.recent_files() if p != path]
        self.settings.setValue("recent_images", [path, *recent][:MAX_RECENT])
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_combo.clear()
        for path in self.recent_files():
            self.recent_combo.addItem(Path(path).name, path)
            self.recent_combo.setItemData(self.recent_combo.count() - 1, path)

    # --- descriptions ----------------------------------------------------------------------
    def show_image(self, image: Image | None) -> None:
        self.image_info.setText(describe_image(image) if image is not None else "No image open.")

    def show_ground_truth(
        self,
        path: str | None,
        warnings: list[str] | None = None,
        names: dict[int, str] | None = None,
    ) -> None:
        if path is None:
            self.gt_info.setText("No ground truth.")
            return
        text = f"Ground truth: <b>{Path(path).name}</b>"
        if names:  # the file's own names: the readout uses them for its labels
            text += "<br>its labels: " + ", ".join(f"{v} {n}" for v, n in sorted(names.items()))
        for warning in warnings or []:
            text += f"<br><span style='color:#b35c00'>⚠ {_html_lines(warning)}</span>"
        self.gt_info.setText(text)

    def show_model(self, model: LoadedModel | None) -> None:
        self.model_info.setText(describe_model(model) if model is not None else "No model open.")

    # --- slots -----------------------------------------------------------------------------
    def _on_open_image_clicked(self) -> None:
        path = self.ask_open_path("Open image", IMAGE_FILTER)
        if path:
            self.image_requested.emit(path)

    def _on_open_folder_clicked(self) -> None:
        path = self.ask_folder("Open DICOM folder")
        if path:
            self.folder_requested.emit(path)

    def _on_open_gt_clicked(self) -> None:
        path = self.ask_open_path("Open ground truth", IMAGE_FILTER)
        if path:
            self.ground_truth_requested.emit(path)

    def _on_open_model_clicked(self) -> None:
        path = self.ask_open_path("Open model", MODEL_FILTER)
        if path:
            self.model_requested.emit(path)

    def _on_recent_activated(self, index: int) -> None:
        path = self.recent_combo.itemData(index)
        if path:
            self.image_requested.emit(path)

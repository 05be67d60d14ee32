"""What the Calibration view's buttons do: measure, fit a calibrated copy, read a report.

Every step that reads files or runs the network is a core function run through the window's
``run_job``; the slots only pass results between the session and the panel. A fitted model is
written to a folder the user picks and added as a model variant, so the Segmentation panel can
run it (with the 'Guarded RankSEG-RMA' rule) beside the uncalibrated model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtWidgets import QFileDialog, QInputDialog

from core.probability_calibration import ClassCalibration, ReliabilityTally
from core.probability_calibration.measure import classes_from_records
from gui.widgets.calibration_panel import CalibrationPanel

__all__ = ["CalibrationFlow", "measure_reliability"]

log = logging.getLogger("segbench.gui")


def measure_reliability(
    model: Any,
    image: Any,
    truth: np.ndarray,
    probs: np.ndarray | None,
    *,
    on_progress=None,
    cancel=None,
) -> list[ClassCalibration]:
    """The model's per-class reliability on one labelled image (runs it unless ``probs``)."""
    if probs is None:
        from core.models import predict

        probs = predict(model, image, on_progress=on_progress, cancel=cancel)
    tally = ReliabilityTally(list(model.spec.class_names))
    tally.add(probs, truth)
    return tally.classes()


def _fit_and_save(model, cases, vector: bool, folder: str, *, on_progress=None, cancel=None):
    """Job: fit on ``cases``, write the calibrated copy to ``folder`` and load it back."""
    from core.models import load_model
    from core.probability_calibration.model_fit import fit_model_calibration, save_calibrated_model

    if isinstance(cases, str):  # a folder of labelled cases
        from core.probability_calibration.model_fit import folder_cases

        cases = folder_cases(cases)
    fit = fit_model_calibration(model, cases, vector=vector, on_progress=on_progress, cancel=cancel)
    written = save_calibrated_model(model, fit.calibration, folder, overwrite=True)
    return fit, load_model(written)


class CalibrationFlow:
    """Connects a :class:`CalibrationPanel` to the workbench window."""

    def __init__(self, window: Any, panel: CalibrationPanel) -> None:
        self.window = window
        self.panel = panel
        panel.measure_requested.connect(self.measure_current)
        panel.fit_image_requested.connect(self.fit_on_image)
        panel.fit_folder_requested.connect(self.fit_on_folder)
        panel.report_requested.connect(self.open_report)

    # Dialogs are methods so tests can answer them.
    def ask_folder(self, title: str) -> str:
        return QFileDialog.getExistingDirectory(self.window, title)

    def ask_report(self) -> str:
        return QFileDialog.getOpenFileName(self.window, "Evaluate report", "", "JSON (*.json)")[0]

    def ask_choice(self, title: str, items: list[str]) -> str:
        item, ok = QInputDialog.getItem(self.window, title, "Model", items, 0, False)
        return item if ok else ""

    def _colors(self, model: Any) -> list[tuple[int, int, int]]:
        return [tuple(int(v) for v in c) for c in model.spec.class_colors]

    def measure_current(self) -> None:
        window, session = self.window, self.window.session
        entry = session.results.get(window.current_key or "")
        if entry is None or session.ground_truth is None:
            window.show_error(
                "Measure calibration",
                "Run a segmentation with a ground truth open first: calibration is measured "
                "against the ground truth.",
            )
            return
        variant = session.variants.get(entry.variant)
        if variant is None:
            window.show_error("Measure calibration", f"model variant {entry.variant!r} is gone")
            return
        model = variant.model
        title = f"Reliability of {entry.variant} on {Path(str(session.image.path)).name}"
        window.run_job(
            measure_reliability,
            model,
            session.image,
            session.ground_truth,
            session.cached_probs(entry.variant),
            title="Measure calibration",
            on_success=lambda classes: self.panel.show_classes(classes, title, self._colors(model)),
        )

    def _fit(self, cases: Any, vector: bool, what: str) -> None:
        window, session = self.window, self.window.session
        base = session.base_variant
        if base is None:
            window.show_error("Fit calibration", "Open a model first.")
            return
        stem = base.model.path.name if base.model.path is not None else "model"
        suggested = str(Path.home() / f"{stem}-calibrated")
        folder = window.ask_save_path("Save the calibrated model as a folder", suggested, "")
        if not folder:
            return

        def done(outcome) -> None:
            fit, model = outcome
            variant = session.add_variant(model.name, model)
            window.segmentation_panel.set_variants(list(session.variants), variant.name)
            calibration = fit.calibration
            rules = ", ".join(
                f"{name}: {rule}"
                for name, rule in zip(model.spec.class_names, calibration.guard.rules, strict=True)
            )
            self.panel.show_classes(
                fit.after,
                f"Fitted on {what}: T = {calibration.temperature:.3g}; guard {rules}. Curves: the "
                "calibrated model on the fitting cases (judge it on other images).",
                self._colors(model),
            )
            message = f"Calibrated model saved to {folder} and added as {variant.name}"
            log.info(message)
            window.statusBar().showMessage(message, 8000)

        window.run_job(
            _fit_and_save,
            base.model,
            cases,
            vector,
            folder,
            title="Fit calibration",
            on_success=done,
        )

    def fit_on_image(self, vector: bool) -> None:
        session = self.window.session
        if session.image is None or session.ground_truth is None:
            self.window.show_error(
                "Fit calibration", "Open an image and its ground truth first (or fit on a folder)."
            )
            return
        image, truth = session.image, session.ground_truth
        name = Path(str(image.path)).name if image.path is not None else "the open image"
        self._fit([lambda: (image, truth)], vector, name)

    def fit_on_folder(self, vector: bool) -> None:
        folder = self.ask_folder("Folder of labelled calibration cases")
        if folder:
            self._fit(folder, vector, Path(folder).name)

    def open_report(self) -> None:
        path = self.ask_report()
        if not path:
            return
        try:
            section = json.loads(Path(path).read_text(encoding="utf-8")).get("calibration") or {}
        except (OSError, ValueError, AttributeError) as error:
            self.window.show_error(
                "Open evaluate report", f"{path}: not a readable report ({error})"
            )
            return
        if not section:
            self.window.show_error(
                "Open evaluate report", f"{path}: has no calibration section (run evaluate again)"
            )
            return
        names = list(section)
        chosen = names[0] if len(names) == 1 else self.ask_choice("Evaluate report", names)
        if not chosen:
            return
        try:
            classes = classes_from_records(section[chosen])
        except (KeyError, TypeError, ValueError) as error:
            self.window.show_error(
                "Open evaluate report", f"{path}: malformed calibration ({error})"
            )
            return
        self.panel.show_classes(classes, f"Reliability of {chosen} on the test cases of {path}")

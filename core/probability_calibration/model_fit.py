"""Fitting a model's probability calibration and decision guard on labelled cases, end to end.

Shared by ``main.py evaluate --fit-calibration``, the GUI's Calibration view and
``benchmarks/bench_calibration.py``: the network runs once per calibration case (its own,
uncalibrated probabilities), the scaling is fitted by NLL on the gathered pixels, then the
guard is learned on the same cases' calibrated probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.probability_calibration.fitting import PixelSample, fit_scaling, sample_pixels
from core.probability_calibration.guard import GuardTally, model_argmax
from core.probability_calibration.measure import ClassCalibration, ReliabilityTally
from core.probability_calibration.scaling import calibrate_probabilities
from core.probability_calibration.settings import ProbabilityCalibration

__all__ = [
    "CalibrationFit",
    "case_loader",
    "fit_from_probabilities",
    "fit_model_calibration",
    "folder_cases",
    "save_calibrated_model",
]

#: A calibration case: a function that reads it and returns (image, label array).
CaseLoader = Callable[[], tuple[Any, np.ndarray]]


@dataclass
class CalibrationFit:
    """A fitted probability calibration with what it was measured on.

    Attributes
    ----------
    calibration : ProbabilityCalibration
        Scaling and (unless turned off) the decision guard.
    before, after : list of ClassCalibration
        Reliability of each class on the calibration cases, uncalibrated and calibrated.
    guard_scores : dict
        Mean per-class score of argmax and of RMA at each pruning level on those cases.
    """

    calibration: ProbabilityCalibration
    before: list[ClassCalibration]
    after: list[ClassCalibration]
    guard_scores: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_dict(),
            "before": [c.to_dict() for c in self.before],
            "after": [c.to_dict() for c in self.after],
            "guard_scores": self.guard_scores,
        }


def fit_from_probabilities(
    cases: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    class_names: Sequence[str],
    activation: str,
    vector: bool = False,
    guard: bool = True,
    seed: int = 0,
    cancel: CancelToken | None = None,
) -> CalibrationFit:
    """Fit scaling and guard on cases given as (uncalibrated probabilities, labels) pairs.

    Parameters
    ----------
    cases : sequence of (probs (C, *spatial), labels (*spatial))
        Not modified (calibrated copies are made one case at a time).
    class_names : the model's classes
    activation : {'softmax', 'sigmoid'}
    vector : bool
        Per-class vector scaling instead of a single temperature.
    guard : bool
        Also learn the per-class decision guard.
    seed : int
        Seed of the pixel sample.
    """
    if not cases:
        raise ValueError("no labelled case to fit the probability calibration on")
    names = list(class_names)
    sample = PixelSample(activation=activation, n_classes=len(names))
    before = ReliabilityTally(names)
    for index, (probs, truth) in enumerate(cases):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sample_pixels(sample, probs, truth, seed=seed + index)
        before.add(probs, truth)
    calibration = fit_scaling(sample, vector=vector)
    after = ReliabilityTally(names)
    multilabel = activation == "sigmoid"
    tally = GuardTally(len(names), multilabel=multilabel)
    for probs, truth in cases:
        if cancel is not None:
            cancel.raise_if_cancelled()
        # The guard's argmax is the uncalibrated model's (vector scaling moves the argmax).
        own = None
        if guard and calibration.is_vector:
            own = model_argmax(probs, multilabel=multilabel)
        calibrated = calibrate_probabilities(np.array(probs, copy=True), calibration, activation)
        after.add(calibrated, truth)
        if guard:
            tally.add(calibrated, truth, model_decision=own, cancel=cancel)
        del calibrated, own
    if guard:
        calibration = ProbabilityCalibration(
            temperature=calibration.temperature,
            class_scales=calibration.class_scales,
            class_biases=calibration.class_biases,
            guard=tally.learn(),
            fit=calibration.fit,
        )
    return CalibrationFit(
        calibration=calibration,
        before=before.classes(),
        after=after.classes(),
        guard_scores=tally.summary() if guard else {},
    )


def fit_model_calibration(
    model: Any,
    cases: Sequence[CaseLoader],
    *,
    vector: bool = False,
    guard: bool = True,
    device: str = "auto",
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> CalibrationFit:
    """Run ``model`` (uncalibrated) on each case and fit its probability calibration.

    Parameters
    ----------
    model : core.models.LoadedModel
    cases : sequence of callables
        Each returns ``(image, labels)`` for one labelled calibration case (read on demand).
    vector, guard
        See :func:`fit_from_probabilities`.
    device : {'auto', 'cpu', 'cuda'}
    on_progress, cancel
        Progress per case (stage "calibration"); cancel checked between steps.

    Notes
    -----
    The cases' probabilities are held until the fit ends (the guard is learned on them after
    the scaling is fitted): about C x 4 bytes per voxel of every case.
    """
    from core.models import predict  # lazy: keeps this module light

    pairs = []
    total = len(cases) + 1
    for number, load in enumerate(cases, start=1):
        report(
            on_progress, Progress(number - 1, total, f"case {number}/{len(cases)}", "calibration")
        )
        image, truth = load()
        probs = predict(model, image, device=device, cancel=cancel, calibrated=False)
        if truth.shape != probs.shape[1:]:
            where = f"{image.path}: " if getattr(image, "path", None) is not None else ""
            raise ValueError(
                f"{where}label shape {truth.shape} does not match the image {probs.shape[1:]}"
            )
        pairs.append((probs, np.asarray(truth)))
    report(on_progress, Progress(total - 1, total, "fitting the calibration", "calibration"))
    fit = fit_from_probabilities(
        pairs,
        class_names=model.spec.class_names,
        activation=model.spec.activation,
        vector=vector,
        guard=guard,
        cancel=cancel,
    )
    report(on_progress, Progress(total, total, "done", "calibration"))
    return fit


def folder_cases(folder: str | Path) -> list[CaseLoader]:
    """Labelled cases of a folder, as loaders for :func:`fit_model_calibration`.

    The folder holds ``images/`` and ``labels/`` subfolders, or image files and label files
    side by side, labels named with a label tag (``case01_seg.nii.gz`` beside
    ``case01.nii.gz``; see :data:`core.cli.matching.LABEL_TAGS`). Pairing is by case name.

    Raises
    ------
    ValueError
        Naming the folder when no image in it has a label.
    """
    from core.cli.matching import LABEL_TAGS, case_name, expand_files, pair_cases

    folder = Path(folder)
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        images = expand_files([folder / "images"], "images")
        labels = expand_files([folder / "labels"], "labels")
    else:
        files = expand_files([folder], "calibration folder")
        tagged = [f for f in files if case_name(f).lower().endswith(LABEL_TAGS)]
        images = [f for f in files if f not in tagged]
        labels = tagged
    cases = pair_cases(images, labels).cases if images and labels else []
    if not cases:
        raise ValueError(
            f"{folder}: no labelled case found (put images/ and labels/ subfolders there, or "
            "label files named like case01_seg.nii.gz beside case01.nii.gz)"
        )

    return [case_loader(case.image, case.label) for case in cases]


def case_loader(image_path: Path, label_path: Path) -> CaseLoader:
    """A loader reading an image and its label map (aligned with the image) on demand."""
    from core.io import read_image, read_mask

    def load() -> tuple[Any, np.ndarray]:
        image = read_image(image_path)
        return image, read_mask(label_path, reference=image).array

    return load


def save_calibrated_model(
    model: Any, calibration: ProbabilityCalibration, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write a copy of ``model`` whose spec carries ``calibration``; returns the folder.

    Raises
    ------
    ValueError
        For a model another framework runs (nnU-Net, MONAI) or a quantized variant: their
        folders are written by their own code, which keeps no calibration field yet.
    """
    from core.models import save_model

    where = f"{model.path}" if model.path is not None else model.name
    if model.framework is not None:
        raise ValueError(
            f"{where}: a calibrated copy of a framework model (nnU-Net, MONAI) cannot be written "
            "yet; its calibration can be measured and applied in this session only"
        )
    if model.is_quantized:
        raise ValueError(
            f"{where}: a calibrated copy of a quantized variant cannot be written yet; "
            "calibrate the float model, then quantize the calibrated copy"
        )
    spec = model.spec.with_changes(calibration=calibration.to_dict())
    return save_model(model, spec, path, overwrite=overwrite)

"""One labelled case scored by every (model, decision) pair: the unit of work of ``evaluate``.

:func:`evaluate_case` reads the image and its label, runs each model once, applies every
decision rule to that model's probabilities and scores the masks. The local executor calls it in
a loop and the Ray executor (:mod:`core.cluster`) calls it inside a task, so both produce the
same rows from the same code. Its result is plain data (lists of dicts of numbers and strings,
floats already rounded as the report writes them), cheap to send back from a worker and equal,
to the last digit, whichever process computed it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.jobs import CancelToken, Progress, ProgressCallback
from core.report_files import json_ready

__all__ = ["CaseOutcome", "EvaluationSettings", "LabelledCase", "evaluate_case", "load_models"]


@dataclass(frozen=True)
class LabelledCase:
    """One image with its label file (``core.cli.matching.Case`` has the same fields)."""

    name: str
    image: Path
    label: Path


@dataclass(frozen=True)
class EvaluationSettings:
    """What is scored and how: the same for every case of a run.

    Parameters
    ----------
    decisions : tuple of str
        Decision rules applied to each model's probabilities, in report order.
    pruning_prob, per_slice, threshold
        The decision rules' settings (see :func:`core.pipeline.decide`).
    device : str
        Where torch computes: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    model_options : dict
        Keyword arguments of :func:`core.models.load_model` (trust, folds, checkpoint,
        mirroring), so a worker loads the models exactly as the driver did.
    """

    decisions: tuple[str, ...] = ("argmax", "rma-dice")
    pruning_prob: float = 0.5
    per_slice: bool = False
    threshold: float = 0.5
    device: str = "auto"
    model_options: dict[str, Any] = field(default_factory=dict)

    def options_record(self) -> dict[str, Any]:
        """The report's ``options`` entry (what a resumed run must match)."""
        return {
            "pruning_prob": self.pruning_prob,
            "per_slice": self.per_slice,
            "threshold": self.threshold,
            "device": self.device,
        }


@dataclass
class CaseOutcome:
    """Everything one case adds to the report, as plain data.

    Attributes
    ----------
    name : str
        The case name.
    record : dict
        The report's ``cases`` entry: name, image, label, shape, reading warnings.
    per_case : list of dict
        One row per (model, decision, class), in model then decision then label order.
    inference, decisions : list of dict
        Timing rows: one per model (network run) and one per (model, decision).
    warnings : list of dict
        ``{"model", "case", "warning"}``: what running a model on the case warned about.
    calibration : list of dict
        Per model, the case's probability-calibration tally
        (:meth:`core.probability_calibration.ReliabilityTally.to_record` plus model and case).
    """

    name: str
    record: dict[str, Any]
    per_case: list[dict[str, Any]] = field(default_factory=list)
    inference: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    calibration: list[dict[str, Any]] = field(default_factory=list)


def load_models(paths: Sequence[str | os.PathLike[str]], options: dict[str, Any]) -> list[Any]:
    """Load every model as the command line does (errors name the file and ``--trust``)."""
    from core.cli.model_loading import load_cli_model

    return [load_cli_model(path, **{"trust": False, **options}) for path in paths]


def _labelled(on_progress: ProgressCallback | None, prefix: str) -> ProgressCallback | None:
    if on_progress is None:
        return None

    def forward(progress: Progress) -> None:
        on_progress(
            Progress(
                progress.step,
                progress.total,
                f"{prefix}: {progress.message}",
                progress.values,
                progress.stage,
            )
        )

    return forward


def _calibration_record(model, model_id: str, case: Any, probs, truth) -> dict[str, Any]:
    """The case's reliability tally of one model's probabilities, as plain data."""
    from core.probability_calibration import ReliabilityTally

    tally = ReliabilityTally(list(model.spec.class_names))
    tally.add(probs, truth)
    return {"model": model_id, "case": case.name, **tally.to_record()}


def evaluate_case(
    case: Any,
    models: Sequence[Any],
    model_ids: Sequence[str],
    settings: EvaluationSettings,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    label_progress: Callable[[str], str] = str,
) -> CaseOutcome:
    """Read one case, run each model once and score every decision rule on its probabilities.

    Parameters
    ----------
    case : LabelledCase or core.cli.matching.Case
        Name, image path and label path.
    models : sequence of core.models.LoadedModel
    model_ids : sequence of str
        The report's id of each model (unique within the run).
    settings : EvaluationSettings
    on_progress : callable, optional
        Receives the inference and decision progress, the message prefixed with
        ``label_progress("CASE, MODEL, DECISION")``.
    cancel : core.jobs.CancelToken, optional
    label_progress : callable
        Turns the (case, model, decision) description into the progress prefix.

    Returns
    -------
    CaseOutcome
        Rows rounded as the report stores them (:func:`core.report_files.json_ready`).
    """
    from core.io import read_image, read_mask
    from core.metrics import volume_ml
    from core.pipeline import segment_image

    image = read_image(case.image)
    gt = read_mask(case.label, reference=image)
    outcome = CaseOutcome(
        name=case.name,
        record={
            "name": case.name,
            "image": str(case.image),
            "label": str(case.label),
            "shape": list(image.shape3),
            "warnings": [*image.warnings, *(f"label: {w}" for w in gt.warnings)],
        },
    )
    truth = gt.array
    for model, model_id in zip(models, model_ids, strict=True):
        gt_volumes = volume_ml(
            truth.astype("int64"), image.spacing, num_classes=model.spec.num_classes
        )
        probs = own = None  # the first rule runs the network; the others reuse its outputs
        for decision in settings.decisions:
            if cancel is not None:
                cancel.raise_if_cancelled()
            result = segment_image(
                model,
                image,
                decision=decision,
                pruning_prob=settings.pruning_prob,
                per_slice=settings.per_slice,
                threshold=settings.threshold,
                device=settings.device,
                ground_truth=truth,
                probs=probs,
                model_decision=own,
                on_progress=_labelled(
                    on_progress, label_progress(f"{case.name}, {model_id}, {decision}")
                ),
                cancel=cancel,
            )
            if probs is None:
                outcome.warnings.extend(
                    {"model": model_id, "case": case.name, "warning": w} for w in result.warnings
                )
                outcome.inference.append(
                    {
                        "model": model_id,
                        "backend": result.backend,
                        "case": case.name,
                        "seconds": result.timings.get("inference"),
                        "device": result.device,
                    }
                )
                probs, own = result.probs, result.model_decision
                outcome.calibration.append(_calibration_record(model, model_id, case, probs, truth))
            outcome.decisions.append(
                {
                    "model": model_id,
                    "decision": decision,
                    "case": case.name,
                    "decision_s": result.timings.get("decision"),
                    "metrics_s": result.timings.get("metrics"),
                }
            )
            outcome.per_case.extend(
                {
                    "model": model_id,
                    "backend": result.backend,
                    "decision": decision,
                    "case": case.name,
                    "label": row.label,
                    "class": row.name,
                    "dice": row.dice,
                    "iou": row.iou,
                    "expected_dice": row.expected_dice,
                    "voxels": row.voxels,
                    # A photograph has pixels, not millimetres: its count stands alone.
                    "volume_ml": None if image.is_natural else row.volume_ml,
                    "volume_ml_gt": None if image.is_natural else float(gt_volumes[row.label]),
                    "rule": row.rule,
                }
                for row in result.rows
            )
    # Rounded now, as the report stores them: means computed from these rows are the same
    # whether the rows were just computed, came back from a worker or were read from a report.
    for key in ("record", "per_case", "inference", "decisions", "warnings", "calibration"):
        setattr(outcome, key, json_ready(getattr(outcome, key)))
    return outcome

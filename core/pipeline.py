"""Segment an image end to end: probabilities, a decision rule, and the per-class readouts.

This is the one place where inference, the decision rules of :mod:`core.seg` and the metrics of
:mod:`core.metrics` meet, so the GUI's Segmentation panel and the headless ``segment`` and
``evaluate`` commands produce the same numbers. Probabilities can be passed back in to switch the
decision rule without running the model again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.device import select_device
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.metrics import confusion_counts, scores_from_counts, volume_ml
from core.probability_calibration.guard import (
    guard_for_case,
    guarded_decision,
    model_argmax,
    needs_model_decision,
)
from core.probability_calibration.settings import DecisionGuard
from core.seg import argmax_decision, expected_dice, rankseg_rma, threshold_decision

__all__ = [
    "DECISIONS",
    "DEFAULT_PRUNING_PROB",
    "ClassRow",
    "SegmentationResult",
    "class_rule_names",
    "decide",
    "foreign_labels_warning",
    "summarize_mask",
    "segment_image",
    "result_table_row",
    "unguarded",
]

#: Decision rules by their user-facing names.
DECISIONS: tuple[str, ...] = ("argmax", "threshold", "rma-dice", "rma-iou", "guarded")
#: RankSEG-RMA's default pruning probability (the GUI's and the CLI's default too).
DEFAULT_PRUNING_PROB = 0.5


@dataclass(frozen=True)
class ClassRow:
    """The readouts of one class of a segmentation.

    ``dice`` and ``iou`` are None without a ground truth. Both-empty (no voxel of the class in
    the mask nor in the ground truth) scores 1.0, as in :func:`core.metrics.dice_score`.
    ``expected_dice`` is the exact expected Dice of the mask under the model's own
    probabilities (no ground truth needed). The expected IoU is left out on purpose: each exact
    expectation costs a quadrature pass over the volume, the slowest step of a segmentation.
    ``threshold`` is RankSEG-RMA's t* for the class (None for other rules or pruned classes).
    ``mean_intensity``/``sd_intensity`` are the image values inside the class's mask (HU for a
    CT), None for an empty class or an RGB image. ``rule`` is the rule the 'guarded' decision
    used for the class ("argmax", or "rma" with its pruning level when not the default);
    None for the other decisions.
    """

    label: int
    name: str
    voxels: int
    volume_ml: float
    expected_dice: float
    dice: float | None = None
    iou: float | None = None
    threshold: float | None = None
    mean_intensity: float | None = None
    sd_intensity: float | None = None
    rule: str | None = None


@dataclass
class SegmentationResult:
    """A decided mask with its readouts.

    Attributes
    ----------
    mask : numpy.ndarray
        Label map (I, J, K), uint8 (uint16 beyond 255 classes), aligned with the image array.
    probs : numpy.ndarray or None
        Class probabilities (C, I, J, K) the decision was made from; None once a holder of many
        results has released them (the GUI keeps them once per model variant instead).
    rows : list of ClassRow
        One per class, background included (label 0).
    timings : dict
        Seconds per stage ("inference", "decision", "metrics").
    cutoff : float or None
        The cut-off of the 'threshold' rule (None for the other rules).
    natural : bool
        Made on a natural image (a photograph): sizes are pixel counts, not millilitres.
    warnings : list of str
        What the numbers do not say by themselves, in words (ground-truth labels the model
        does not have).
    backend : {'torch', 'onnxruntime'}
        What ran the network.
    model_decision : numpy.ndarray or None
        The uncalibrated model's argmax, kept beside ``probs`` for the guarded rule of a
        vector-scaled model (:func:`core.probability_calibration.needs_model_decision`);
        None otherwise. Pass it back with ``probs`` to decide again without the network.
    model_bytes : int or None
        Size of the network as it ran (:attr:`core.models.LoadedModel.storage_bytes`).
    """

    model_name: str
    decision: str
    mask: np.ndarray
    probs: np.ndarray | None
    rows: list[ClassRow]
    pruning_prob: float
    per_slice: bool
    device: str
    spacing: tuple[float, float, float]
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = "torch"
    model_bytes: int | None = None
    cutoff: float | None = None
    natural: bool = False
    warnings: list[str] = field(default_factory=list)
    model_decision: np.ndarray | None = None

    @property
    def rule_label(self) -> str:
        """The rule with every setting that changes its mask, e.g. ``"rma-dice, pruning 0.3"``.

        Two results with the same model and label are the same decision; the GUI keys its
        results table by it, so a run with other settings adds a row instead of replacing one.
        """
        if self.decision == "threshold":
            return "threshold" if self.cutoff is None else f"threshold {self.cutoff:g}"
        if self.decision not in ("rma-dice", "rma-iou", "guarded"):
            return self.decision
        parts = [self.decision]
        # A learned guard sets its own pruning per class.
        if self.pruning_prob != DEFAULT_PRUNING_PROB and self.decision != "guarded":
            parts.append(f"pruning {self.pruning_prob:g}")
        if self.per_slice:
            parts.append("per slice")
        return ", ".join(parts)

    @property
    def has_ground_truth(self) -> bool:
        return any(row.dice is not None for row in self.rows)

    def mean_foreground(self, metric: str) -> float | None:
        """Mean of ``metric`` ('dice', 'iou', 'expected_dice', ...) over classes 1..C-1."""
        values = [getattr(row, metric) for row in self.rows if row.label != 0]
        values = [v for v in values if v is not None and np.isfinite(v)]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        return {
            "model": self.model_name,
            "decision": self.decision,
            "rule": self.rule_label,
            "threshold": self.cutoff,
            "pruning_prob": self.pruning_prob,
            "per_slice": self.per_slice,
            "device": self.device,
            "backend": self.backend,
            "model_bytes": self.model_bytes,
            "spacing_mm": list(self.spacing),
            "classes": [asdict(row) for row in self.rows],
            "mean_foreground_dice": self.mean_foreground("dice"),
            "mean_foreground_iou": self.mean_foreground("iou"),
            "mean_foreground_expected_dice": self.mean_foreground("expected_dice"),
            "timings_s": dict(self.timings),
            "warnings": list(self.warnings),
        }


def _check_decision(decision: str) -> None:
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision rule {decision!r}: use one of {', '.join(DECISIONS)}")


def _label_map_from_masks(masks: np.ndarray) -> np.ndarray:
    """Collapse per-class bool masks (C, ...) of a sigmoid model into one label map.

    Where masks overlap the highest class index wins (the most specific structure, by the
    convention that later classes are the smaller ones); pixels in no mask are 0.
    """
    labels = np.zeros(masks.shape[1:], dtype=np.int64)
    for c in range(1, masks.shape[0]):
        labels[masks[c]] = c
    return labels


def decide(
    probs: np.ndarray,
    decision: str,
    *,
    multilabel: bool = False,
    pruning_prob: float = DEFAULT_PRUNING_PROB,
    threshold: float = 0.5,
    per_slice: bool = False,
    guard: DecisionGuard | None = None,
    model_decision: np.ndarray | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a decision rule to probabilities (C, *spatial).

    Parameters
    ----------
    probs : numpy.ndarray, shape (C, I, J, K) or (C, H, W)
    decision : {'argmax', 'threshold', 'rma-dice', 'rma-iou', 'guarded'}
        'guarded' applies ``guard``: per class RankSEG-RMA (at the class's own pruning level)
        or argmax, as learned with the probability calibration.
    multilabel : bool
        True for sigmoid models: per-class masks, collapsed into a label map by
        :func:`_label_map_from_masks`.
    pruning_prob : float
        RankSEG-RMA's pruning threshold (classes whose max probability is at or below it stay
        empty).
    threshold : float
        The cut-off of the 'threshold' rule.
    per_slice : bool
        Optimise RankSEG-RMA per slice along the last axis (k) instead of over the volume.
    guard : DecisionGuard, optional
        The 'guarded' rule's settings; without one every class uses RankSEG-RMA (Dice) at
        ``pruning_prob`` (the same mask as 'rma-dice').
    model_decision : numpy.ndarray, optional
        For 'guarded': the uncalibrated model's argmax (labels (*spatial), or masks
        (C, *spatial) for a sigmoid model), which argmax-ruled classes keep (see
        :func:`core.probability_calibration.model_argmax`). None: the argmax of ``probs``.
    cancel : CancelToken, optional
        Checked by RankSEG-RMA between chunks of its passes.

    Returns
    -------
    mask : int64 label map (*spatial)
    thresholds : float array (C,) of RMA thresholds t* (NaN when pruned), or None for other rules;
        per-slice runs give the median over slices.
    """
    _check_decision(decision)
    batch = np.moveaxis(probs, -1, 0) if per_slice else probs[None]  # (B, C, ...)
    thresholds = None
    if decision == "argmax":
        out = argmax_decision(batch, multilabel=multilabel)
    elif decision == "threshold":
        out = threshold_decision(batch, threshold, multilabel=multilabel)
    elif decision == "guarded":
        guard = guard or unguarded(probs.shape[0], pruning_prob)
        own = None
        if model_decision is not None:
            own = np.moveaxis(model_decision, -1, 0) if per_slice else model_decision[None]
        out, t = guarded_decision(
            batch, guard, multilabel=multilabel, model_decision=own, cancel=cancel
        )
        with np.errstate(all="ignore"):
            thresholds = t[0] if not per_slice else _nanmedian_columns(t)
    else:
        out, info = rankseg_rma(
            batch,
            metric="dice" if decision == "rma-dice" else "iou",
            multilabel=multilabel,
            pruning_prob=pruning_prob,
            return_info=True,
            info_expected=False,  # summarize_mask scores the final label map once
            cancel=cancel,
        )
        t = np.asarray(info.threshold, dtype=np.float64)  # (B, C)
        with np.errstate(all="ignore"):
            thresholds = t[0] if not per_slice else _nanmedian_columns(t)
    out = np.asarray(out)
    if multilabel:
        out = np.stack([_label_map_from_masks(m) for m in out])
    mask = np.moveaxis(out, 0, -1) if per_slice else out[0]
    return mask, thresholds


def unguarded(n_classes: int, pruning_prob: float = DEFAULT_PRUNING_PROB) -> DecisionGuard:
    """The guard of a model that has none: RankSEG-RMA (Dice) for every class."""
    return DecisionGuard(rules=("rma",) * n_classes, pruning=(float(pruning_prob),) * n_classes)


def class_rule_names(guard: DecisionGuard) -> list[str]:
    """Per class, the words for the rule a guard uses: "argmax", "rma" or "rma, pruning 0.9"."""
    names = []
    for rule, pruning in zip(guard.rules, guard.pruning, strict=True):
        if rule == "rma" and pruning != DEFAULT_PRUNING_PROB:
            names.append(f"rma, pruning {pruning:g}")
        else:
            names.append(rule)
    return names


def _nanmedian_columns(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    return np.array(
        [
            np.median(values[finite[:, c], c]) if finite[:, c].any() else np.nan
            for c in range(values.shape[1])
        ]
    )


def foreign_labels_warning(ground_truth: np.ndarray, class_names: list[str]) -> str | None:
    """Say which ground-truth labels the model has no class for, with their voxel counts.

    Such voxels (a lesion labelled 7 for a 4-class model) belong to no class in Dice and IoU:
    the model's own class for them, if any, is scored against nothing. None when every label
    is one of the model's.
    """
    n_classes = len(class_names)
    outside = ground_truth[(ground_truth >= n_classes) | (ground_truth < 0)]
    if outside.size == 0:
        return None
    labels, counts = np.unique(outside, return_counts=True)
    listed = ", ".join(f"{int(v)} ({int(n)} voxels)" for v, n in zip(labels, counts, strict=True))
    return (
        f"ground truth has labels the model does not have: {listed}; the model's classes are "
        f"0-{n_classes - 1} ({', '.join(class_names)}): those voxels belong to no class of "
        "the ground truth, so Dice/IoU count them as false positives of whichever class the "
        "model gives them"
    )


def _smallest_label_dtype(n_classes: int) -> np.dtype:
    # Up to 255 classes the void label (255) fits uint8 too; from 256 on it is C (see
    # core.seg.inputs.void_label_for), which needs uint16.
    return np.dtype(np.uint8) if n_classes <= 255 else np.dtype(np.uint16)


def summarize_mask(
    mask: np.ndarray,
    probs: np.ndarray,
    *,
    spacing: tuple[float, ...],
    class_names: list[str],
    ground_truth: np.ndarray | None = None,
    thresholds: np.ndarray | None = None,
    intensities: np.ndarray | None = None,
    rules: list[str] | None = None,
    cancel: CancelToken | None = None,
) -> list[ClassRow]:
    """Per-class readouts of a label map: voxels, mL, expected Dice, Dice/IoU vs ground truth.

    Parameters
    ----------
    mask : int array (I, J, K)
    probs : float array (C, I, J, K)
    spacing : voxel size in mm per axis of ``mask``
    class_names : one name per class
    ground_truth : int array (I, J, K), optional
        Must have the mask's shape (ValueError naming both shapes otherwise).
    thresholds : RMA thresholds per class, optional
    intensities : array (I, J, K), optional
        The image values, for each class's mean and standard deviation inside its mask.
    rules : list of str, optional
        The rule each class used (the 'guarded' decision).
    cancel : CancelToken, optional
        Checked between chunks of the expected-Dice passes (the slow part on a volume).
    """
    n_classes = probs.shape[0]
    if mask.shape != probs.shape[1:]:
        raise ValueError(f"mask shape {mask.shape} does not match probabilities {probs.shape[1:]}")
    # The label map goes to each readout as it is (uint8 for up to 256 classes): an int64 copy
    # per readout cost 8 bytes a voxel each, about 600 MB apiece on a 512x512x300 CT. Counts
    # and overlaps go chunk by chunk too: whole-volume passes made int64 copies and held the
    # GIL (and with it the GUI thread) for hundreds of milliseconds.
    counts = _label_counts(mask, n_classes)
    # The volume of one voxel (volume_ml checks the spacing) times each class's count.
    volumes = counts * volume_ml(np.ones((1,) * mask.ndim, dtype=bool), spacing)
    exp_dice = np.asarray(expected_dice(probs[None], mask[None], cancel=cancel))[0]
    mean = sd = None
    if intensities is not None:
        mean, sd = _class_intensity_stats(mask, intensities, n_classes, counts)
    dice = iou = None
    if ground_truth is not None:
        if ground_truth.shape != mask.shape:
            raise ValueError(
                f"ground truth shape {ground_truth.shape} does not match the mask {mask.shape}"
            )
        truth = ground_truth if ground_truth.dtype.kind in "iu" else ground_truth.astype(np.int64)
        counts_vs_gt = _confusion_by_chunks(mask, truth, n_classes)
        dice = np.asarray(scores_from_counts(counts_vs_gt, metric="dice"))[0]
        iou = np.asarray(scores_from_counts(counts_vs_gt, metric="iou"))[0]
    rows = []
    for c in range(n_classes):
        t = None if thresholds is None or not np.isfinite(thresholds[c]) else float(thresholds[c])
        rows.append(
            ClassRow(
                label=c,
                name=class_names[c] if c < len(class_names) else f"class {c}",
                voxels=int(counts[c]),
                volume_ml=float(volumes[c]),
                expected_dice=float(exp_dice[c]),
                dice=None if dice is None else float(dice[c]),
                iou=None if iou is None else float(iou[c]),
                threshold=t,
                mean_intensity=None if mean is None or not counts[c] else float(mean[c]),
                sd_intensity=None if sd is None or not counts[c] else float(sd[c]),
                rule=None if rules is None else rules[c],
            )
        )
    return rows


#: Voxels per chunk of the readouts' passes (a few ms of work each).
_READOUT_CHUNK = 1 << 20


def _flat_chunks(*arrays: np.ndarray):
    """Matching chunks of same-shaped arrays, each flattened in the first array's memory order.

    Readouts do not depend on the voxel order, so a Fortran-ordered volume (nibabel) is walked
    slab by slab along its last axis (a C-ordered one along its first), as it lies in memory:
    views when the arrays share that order, slab-sized copies when they do not (never a copy
    of a whole volume).
    """
    first = arrays[0]
    fortran = first.flags.f_contiguous and not first.flags.c_contiguous
    axis = first.ndim - 1 if fortran else 0
    order = "F" if fortran else "C"
    step = max(1, _READOUT_CHUNK // max(1, first.size // max(1, first.shape[axis])))
    for start in range(0, first.shape[axis], step):
        index = (slice(None),) * axis + (slice(start, start + step),)
        yield tuple(np.asarray(a)[index].ravel(order=order) for a in arrays)


def _label_counts(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Voxels per label in ``[0, n_classes)``, int64 (n_classes,)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for (labels,) in _flat_chunks(mask):
        counts += np.bincount(labels, minlength=n_classes)[:n_classes]
    return counts


def _confusion_by_chunks(mask: np.ndarray, truth: np.ndarray, n_classes: int):
    """:func:`core.metrics.confusion_counts` of one item, summed over chunks (same counts)."""
    total = None
    for labels, true in _flat_chunks(mask, truth):
        part = confusion_counts(labels[None], true[None], num_classes=n_classes)
        if total is None:
            total = part
        else:
            total.tp += part.tp
            total.fp += part.fp
            total.fn += part.fn
    return total


def _class_intensity_stats(
    mask: np.ndarray, intensities: np.ndarray, n_classes: int, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the image inside each class, in one chunked pass.

    Sums and sums of squares are taken in float64 around a shift (the image's mean on a sample),
    so the variance formula does not cancel catastrophically on HU values, and chunk by chunk,
    so no volume-sized float64 copy is made (a 512x512x300 CT would need 600 MB for one).
    """
    if intensities.shape != mask.shape:
        raise ValueError(f"image shape {intensities.shape} does not match the mask {mask.shape}")
    sample = np.asarray(intensities).ravel(order="K")
    shift = float(np.mean(sample[:: max(1, sample.size // 4096)], dtype=np.float64))
    total = np.zeros(n_classes)
    squares = np.zeros(n_classes)
    for label_chunk, values in _flat_chunks(mask, intensities):
        chunk = values.astype(np.float64) - shift
        total += np.bincount(label_chunk, weights=chunk, minlength=n_classes)[:n_classes]
        chunk *= chunk
        squares += np.bincount(label_chunk, weights=chunk, minlength=n_classes)[:n_classes]
    safe = np.maximum(counts, 1)
    mean_shifted = total / safe
    variance = np.maximum(squares / safe - mean_shifted**2, 0.0)
    return mean_shifted + shift, np.sqrt(variance)


def segment_image(
    model,
    image,
    *,
    decision: str = "rma-dice",
    pruning_prob: float = DEFAULT_PRUNING_PROB,
    per_slice: bool = False,
    threshold: float = 0.5,
    device: str = "auto",
    ground_truth: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    model_decision: np.ndarray | None = None,
    batch_size: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SegmentationResult:
    """Run ``model`` on ``image`` (unless ``probs`` are given) and decide the mask.

    Parameters
    ----------
    model : core.models.LoadedModel
    image : core.io.Image
    decision : {'argmax', 'threshold', 'rma-dice', 'rma-iou', 'guarded'}
        'guarded' uses the decision guard in the model's probability calibration.
    pruning_prob, per_slice, threshold
        See :func:`decide`.
    device : {'auto', 'cpu', 'cuda'}
    ground_truth : int array (I, J, K), optional
        Adds Dice and IoU per class.
    probs : float array (C, I, J, K), optional
        Probabilities from an earlier run of the same model on the same image: skips inference.
    model_decision : numpy.ndarray, optional
        That run's :attr:`SegmentationResult.model_decision` (the uncalibrated argmax a
        vector-scaled model's guarded rule needs); without it such a rule runs the network
        again to get it.
    batch_size : int, optional
        Slices or patches per forward pass (:func:`core.models.predict`'s default when None);
        smaller batches hold fewer activations at once.

    Returns
    -------
    SegmentationResult
    """
    # Lazy: keeps `import core.pipeline` light for the CLI.
    from core.models import predict
    from core.models.inference import calibrated_probabilities

    _check_decision(decision)
    if not 0.0 <= pruning_prob < 1.0:
        raise ValueError(f"pruning probability must be in [0, 1), got {pruning_prob}")
    choice = select_device(device)
    timings: dict[str, float] = {}
    calibration = model.spec.probability_calibration
    keep_own = needs_model_decision(calibration)
    multilabel = model.spec.activation == "sigmoid"

    def run_network(calibrated: bool) -> np.ndarray:
        start = time.perf_counter()
        out = predict(
            model,
            image,
            device=choice.device,
            batch_size=batch_size,
            on_progress=on_progress,
            cancel=cancel,
            calibrated=calibrated,
        )
        timings["inference"] = time.perf_counter() - start
        return out

    if keep_own and model_decision is None and (probs is None or decision == "guarded"):
        # The uncalibrated probabilities once, for their argmax; then calibrated in place.
        raw = run_network(calibrated=False)
        model_decision = model_argmax(raw, multilabel=multilabel)
        if probs is None:
            probs = calibrated_probabilities(raw, model.spec)
        del raw
    if probs is None:
        probs = run_network(calibrated=True)
    if not keep_own:
        model_decision = None  # the calibrated argmax is the model's own
    if cancel is not None:
        cancel.raise_if_cancelled()
    report(on_progress, Progress(0, 2, f"deciding masks ({decision})", stage="decision"))
    start = time.perf_counter()
    warnings = []
    guard = rules = None
    own = model_decision  # the model's own argmax, where the guard needs it
    if decision == "guarded":
        guard = calibration.guard if calibration is not None else None
        if guard is None:
            warnings.append(
                f"{model.name} has no learned decision guard: 'guarded' used RankSEG-RMA (Dice) "
                "for every class; fit one with `main.py evaluate --fit-calibration`"
            )
            guard = unguarded(model.spec.num_classes, pruning_prob)
        elif guard.min_fraction is not None:
            if own is None:  # a temperature keeps the argmax: the calibrated one is the model's
                own = model_argmax(probs, multilabel=multilabel)
            guard, notes = guard_for_case(
                guard, own, multilabel=multilabel, class_names=list(model.spec.class_names)
            )
            warnings += notes
        rules = class_rule_names(guard)
    labels, thresholds = decide(
        probs,
        decision,
        multilabel=multilabel,
        pruning_prob=pruning_prob,
        threshold=threshold,
        per_slice=per_slice,
        guard=guard,
        model_decision=own,
        cancel=cancel,
    )
    del own
    mask = labels.astype(_smallest_label_dtype(probs.shape[0]))
    del labels  # int64 (8 bytes a voxel): not kept through the readouts
    timings["decision"] = time.perf_counter() - start
    if cancel is not None:
        cancel.raise_if_cancelled()
    report(on_progress, Progress(1, 2, "measuring classes", stage="metrics"))
    start = time.perf_counter()
    rows = summarize_mask(
        mask,
        probs,
        spacing=tuple(image.spacing),
        class_names=list(model.spec.class_names),
        ground_truth=ground_truth,
        thresholds=thresholds,
        intensities=None if image.is_rgb else np.asarray(image.array),
        rules=rules,
        cancel=cancel,
    )
    timings["metrics"] = time.perf_counter() - start
    if ground_truth is not None:
        foreign = foreign_labels_warning(ground_truth, list(model.spec.class_names))
        warnings += [foreign] if foreign else []
    report(on_progress, Progress(2, 2, "done", stage="metrics"))
    return SegmentationResult(
        model_name=model.name,
        decision=decision,
        mask=mask,
        probs=probs,
        rows=rows,
        pruning_prob=pruning_prob,
        per_slice=per_slice,
        device=choice.description,
        cutoff=threshold if decision == "threshold" else None,
        natural=bool(image.is_natural),
        spacing=tuple(float(s) for s in image.spacing),
        timings=timings,
        warnings=warnings,
        backend=model.backend,
        model_bytes=model.storage_bytes,
        model_decision=model_decision,
    )


def result_table_row(variant: str, result: SegmentationResult) -> dict[str, Any]:
    """One flat row (for a table or a CSV) of a result: means, then per-class columns.

    After the model: its backend, its size in MB as it ran and the inference time per slice
    (None when the probabilities came from an earlier run).

    Per foreground class: Dice, IoU, expected Dice, volume (mL; the pixel count instead for a
    natural image, which has no physical size), and the mean and standard deviation of the
    image inside the class's mask (None for an empty class or an RGB image).
    """
    inference = result.timings.get("inference")
    slices = result.mask.shape[2] if result.mask.ndim == 3 else 1
    row: dict[str, Any] = {
        "model": variant,
        "decision": result.rule_label,
        "backend": result.backend,
        "model_mb": None if result.model_bytes is None else result.model_bytes / 1e6,
        "ms_per_slice": None if inference is None else 1000 * inference / slices,
        "mean_dice": result.mean_foreground("dice"),
        "mean_iou": result.mean_foreground("iou"),
        "mean_expected_dice": result.mean_foreground("expected_dice"),
    }
    for cls in result.rows:
        if cls.label == 0:
            continue
        row[f"{cls.name} dice"] = cls.dice
        row[f"{cls.name} iou"] = cls.iou
        row[f"{cls.name} expected_dice"] = cls.expected_dice
        if result.natural:
            row[f"{cls.name} px"] = cls.voxels
        else:
            row[f"{cls.name} ml"] = cls.volume_ml
        row[f"{cls.name} mean_intensity"] = cls.mean_intensity
        row[f"{cls.name} sd_intensity"] = cls.sd_intensity
        if cls.rule is not None:
            row[f"{cls.name} rule"] = cls.rule
    return row

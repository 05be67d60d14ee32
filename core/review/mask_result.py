"""A result row for a mask that no decision rule made: a reviewer's correction or a mask file.

The row has the readouts of :class:`core.pipeline.SegmentationResult` that need no
probabilities: voxels and volume per class, and Dice/IoU against a reference mask. For a
corrected mask the reference is the model's mask, so Dice says how much the reviewer changed
(1.0: nothing); for a prediction read from a file it is the ground truth. The expected Dice is
NaN: there are no probabilities to take it from.
"""

from __future__ import annotations

import numpy as np

from core.metrics import confusion_counts, scores_from_counts
from core.pipeline import ClassRow, SegmentationResult

__all__ = ["class_volumes", "mask_result"]


def _class_count(mask: np.ndarray, names: list[str]) -> int:
    return max(len(names), int(mask.max(initial=0)) + 1)


def mask_result(
    mask: np.ndarray,
    *,
    spacing: tuple[float, float, float],
    class_names: list[str],
    model_name: str,
    decision: str,
    reference: np.ndarray | None = None,
    natural: bool = False,
) -> SegmentationResult:
    """Readouts of ``mask`` (and its Dice/IoU against ``reference`` when given).

    Parameters
    ----------
    mask : numpy.ndarray
        Integer label map ``(I, J, K)``.
    spacing : tuple of float
        Voxel size in mm.
    class_names : list of str
        One name per class (background first); labels past it are named ``class N``.
    model_name, decision : str
        What the row is called in the results table ("corrected", "prediction file").
    reference : numpy.ndarray, optional
        The mask to compare with (same shape).
    natural : bool
        A photograph: sizes are pixel counts.

    Returns
    -------
    core.pipeline.SegmentationResult
        With ``probs`` None and ``expected_dice`` NaN.
    """
    n_classes = _class_count(mask, class_names)
    if reference is not None:
        if reference.shape != mask.shape:
            raise ValueError(f"reference shape {reference.shape} differs from mask {mask.shape}")
        n_classes = max(n_classes, _class_count(reference, class_names))
    counts = np.bincount(mask.ravel(order="K"), minlength=n_classes)[:n_classes]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    dice = iou = None
    if reference is not None:
        confusion = confusion_counts(
            mask.reshape(1, -1).astype(np.int64),
            reference.reshape(1, -1).astype(np.int64),
            num_classes=n_classes,
        )
        dice = np.asarray(scores_from_counts(confusion, metric="dice"))[0]
        iou = np.asarray(scores_from_counts(confusion, metric="iou"))[0]
    rows = [
        ClassRow(
            label=c,
            name=class_names[c] if c < len(class_names) else f"class {c}",
            voxels=int(counts[c]),
            volume_ml=float(counts[c]) * voxel_ml,
            expected_dice=float("nan"),
            dice=None if dice is None else float(dice[c]),
            iou=None if iou is None else float(iou[c]),
        )
        for c in range(n_classes)
    ]
    return SegmentationResult(
        model_name=model_name,
        decision=decision,
        mask=mask,
        probs=None,
        rows=rows,
        pruning_prob=0.0,
        per_slice=False,
        device="",
        spacing=tuple(float(s) for s in spacing),
        natural=natural,
    )


def class_volumes(result: SegmentationResult) -> dict[str, float]:
    """Foreground class name -> volume in mL (pixel count for a photograph)."""
    return {
        row.name: float(row.voxels if result.natural else row.volume_ml)
        for row in result.rows
        if row.label != 0
    }

"""A result row for a mask that no decision rule made: a reviewer's correction or a mask file.

The row has the readouts of :class:`core.pipeline.SegmentationResult` that need no
probabilities: voxels and volume per class, and Dice/IoU against a reference mask. For a
corrected mask the reference is the model's mask, so Dice says how much the reviewer changed
(1.0: nothing); for a prediction read from a file it is the ground truth. The expected Dice is
NaN: there are no probabilities to take it from.

Everything comes from one table of joint counts (voxels with label ``a`` in the mask and ``b``
in the reference). It is counted once, chunk by chunk, and then kept up to date from each
edit's changed voxels (:func:`update_joint`), so a brush stroke on a 512x512x300 CT refreshes
the row in microseconds instead of a pass over the volume.
"""

from __future__ import annotations

import numpy as np

from core.pipeline import ClassRow, SegmentationResult
from core.review.edits import Edit

__all__ = ["class_volumes", "joint_counts", "mask_result", "result_from_joint", "update_joint"]

#: Voxels per chunk of the counting pass (bincount widens its input to 8 bytes a voxel).
_CHUNK = 1 << 22


def _class_count(mask: np.ndarray, names: list[str]) -> int:
    return max(len(names), int(mask.max(initial=0)) + 1)


def _flat(array: np.ndarray) -> np.ndarray:
    # The array's own memory order: a view, no copy, for a C- or Fortran-ordered volume.
    return array.ravel(order="K")


def joint_counts(mask: np.ndarray, reference: np.ndarray | None, n_classes: int) -> np.ndarray:
    """``(n, n)`` int64 counts of voxels labelled ``a`` in ``mask`` and ``b`` in ``reference``.

    Without a reference every voxel counts in column 0. ``mask`` and ``reference`` must share
    their shape and memory order (as label maps prepared for one image do).
    """
    if reference is not None:
        if reference.shape != mask.shape:
            raise ValueError(f"reference shape {reference.shape} differs from mask {mask.shape}")
        if reference.flags.f_contiguous != mask.flags.f_contiguous:
            reference = np.asarray(reference, order="F" if mask.flags.f_contiguous else "C")
    joint = np.zeros(n_classes * n_classes, np.int64)
    flat_mask = _flat(mask)
    flat_ref = None if reference is None else _flat(reference)
    for start in range(0, flat_mask.size, _CHUNK):
        rows = flat_mask[start : start + _CHUNK].astype(np.int64)
        if flat_ref is not None:
            rows = rows * n_classes + flat_ref[start : start + _CHUNK]
        else:
            rows = rows * n_classes
        joint += np.bincount(rows, minlength=n_classes * n_classes)[: n_classes * n_classes]
    return joint.reshape(n_classes, n_classes)


def update_joint(
    joint: np.ndarray, edit: Edit, reference: np.ndarray | None, *, undo: bool = False
) -> None:
    """Move an edit's voxels between cells of ``joint`` (in place); ``undo`` moves them back."""
    if edit.count == 0:
        return
    ref = (
        np.zeros(edit.count, np.int64)
        if reference is None
        else reference[np.unravel_index(edit.flat, reference.shape)].astype(np.int64)
    )
    old, new = (edit.after, edit.before) if undo else (edit.before, edit.after)
    np.add.at(joint, (old.astype(np.int64), ref), -1)
    np.add.at(joint, (new.astype(np.int64), ref), 1)


def result_from_joint(
    joint: np.ndarray,
    *,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    class_names: list[str],
    model_name: str,
    decision: str,
    compared: bool,
    natural: bool = False,
) -> SegmentationResult:
    """The result row of ``mask`` from its joint counts (Dice/IoU only when ``compared``).

    Dice is ``2 TP / (2 TP + FP + FN)`` and IoU ``TP / (TP + FP + FN)`` per class; a class empty
    in both masks scores 1.0, as in :func:`core.metrics.dice_score`.
    """
    n_classes = joint.shape[0]
    counts = joint.sum(axis=1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for c in range(n_classes):
        dice = iou = None
        if compared:
            tp = int(joint[c, c])
            fp, fn = int(counts[c]) - tp, int(joint[:, c].sum()) - tp
            dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
            iou = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
        rows.append(
            ClassRow(
                label=c,
                name=class_names[c] if c < len(class_names) else f"class {c}",
                voxels=int(counts[c]),
                volume_ml=float(counts[c]) * voxel_ml,
                expected_dice=float("nan"),
                dice=dice,
                iou=iou,
            )
        )
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
        n_classes = max(n_classes, _class_count(reference, class_names))
    joint = joint_counts(mask, reference, n_classes)
    return result_from_joint(
        joint,
        mask=mask,
        spacing=spacing,
        class_names=class_names,
        model_name=model_name,
        decision=decision,
        compared=reference is not None,
        natural=natural,
    )


def class_volumes(result: SegmentationResult) -> dict[str, float]:
    """Foreground class name -> volume in mL (pixel count for a photograph)."""
    return {
        row.name: float(row.voxels if result.natural else row.volume_ml)
        for row in result.rows
        if row.label != 0
    }

"""Overlap and volume metrics for comparing decisions with reference masks."""

from core.metrics.overlap import (
    ConfusionCounts,
    confusion_counts,
    dice_score,
    iou_score,
    scores_from_counts,
)
from core.metrics.volume import volume_ml

__all__ = [
    "ConfusionCounts",
    "confusion_counts",
    "dice_score",
    "iou_score",
    "scores_from_counts",
    "volume_ml",
]

"""The worker's half of opening a worklist case: read everything, segment, prepare for the views.

One job reads the case's image, ground truth, existing prediction and saved correction, and,
with a model open, segments the image with the chosen rule. The review controller runs it for
the case being opened and, ahead of time, for the next one, so moving on only hands prepared
arrays to the views. A plain core job (``on_progress`` and ``cancel`` keywords); no Qt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.jobs import CancelToken, ProgressCallback
from core.review import ReviewState, WorklistCase
from gui.display_jobs import (
    OpenedImage,
    OpenedMask,
    SegmentedImage,
    read_image_for_display,
    read_mask_for_display,
    segment_for_display,
)

__all__ = ["LoadedCase", "load_review_case"]


@dataclass
class LoadedCase:
    """A worklist case ready to show."""

    case: WorklistCase
    opened: OpenedImage
    truth: OpenedMask | None = None
    prediction: OpenedMask | None = None
    segmented: SegmentedImage | None = None
    variant: str | None = None
    corrected: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def load_review_case(
    case: WorklistCase,
    state: ReviewState,
    *,
    model: Any = None,
    variant: str | None = None,
    segment_options: dict[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> LoadedCase:
    """Read (and with ``model`` segment) one case.

    Parameters
    ----------
    case : core.review.WorklistCase
    state : core.review.ReviewState
        Where a saved correction of the case is read from.
    model : core.models.LoadedModel, optional
        Segments the image when given (with ``segment_options``: decision, pruning_prob, ...).
    variant : str, optional
        The model variant's name in the session.
    """
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    opened = read_image_for_display(str(case.image))
    image = opened.image
    seconds["read"] = time.perf_counter() - clock
    loaded = LoadedCase(case, opened, variant=variant, seconds=seconds)
    if case.label is not None:
        loaded.truth = read_mask_for_display(str(case.label), image)
    if case.prediction is not None:
        loaded.prediction = read_mask_for_display(str(case.prediction), image)
    loaded.corrected = state.load_corrected(case.name, image)
    if model is not None:
        clock = time.perf_counter()
        truth = None if loaded.truth is None else loaded.truth.labels.array
        loaded.segmented = segment_for_display(
            model,
            image,
            ground_truth=truth,
            on_progress=on_progress,
            cancel=cancel,
            **(segment_options or {}),
        )
        seconds["segment"] = time.perf_counter() - clock
    return loaded

"""Difference overlay: where a prediction agrees and disagrees with the ground truth."""

from __future__ import annotations

import numpy as np

__all__ = ["DIFFERENCE_CLASS_NAMES", "DIFFERENCE_COLORS", "difference_classes", "difference_lut"]

#: Class values returned by :func:`difference_classes` (0 is "nothing to show").
DIFFERENCE_CLASS_NAMES: dict[int, str] = {
    1: "true positive",
    2: "false positive",
    3: "false negative",
    4: "wrong label",
}

#: RGB per class: green agreement, red over-segmentation, blue miss, orange label swap.
DIFFERENCE_COLORS: dict[int, tuple[int, int, int]] = {
    1: (0, 200, 0),
    2: (230, 30, 30),
    3: (30, 110, 255),
    4: (255, 165, 0),
}


def difference_classes(
    prediction: np.ndarray, ground_truth: np.ndarray, *, label: int | None = None
) -> np.ndarray:
    """Classify each voxel as true positive, false positive, false negative or wrong label.

    Parameters
    ----------
    prediction, ground_truth : numpy.ndarray
        Integer label arrays of the same shape (any dimensionality); 0 is background.
    label : int or None
        With a label: binary comparison of ``prediction == label`` against
        ``ground_truth == label`` (classes 1-3 only). With None: every foreground label at
        once; a voxel labelled in both but with different labels is class 4 ("wrong label",
        it is a false positive of one label and a false negative of the other).

    Returns
    -------
    numpy.ndarray
        uint8 array, same shape: 0 background in both, 1 TP, 2 FP, 3 FN, 4 wrong label.
    """
    if prediction.shape != ground_truth.shape:
        raise ValueError(
            f"prediction shape {prediction.shape} differs from ground truth shape "
            f"{ground_truth.shape}"
        )
    if label is not None:
        predicted = prediction == label
        true = ground_truth == label
        classes = np.zeros(prediction.shape, dtype=np.uint8)
        classes[predicted & true] = 1
        classes[predicted & ~true] = 2
        classes[~predicted & true] = 3
        return classes
    predicted = prediction != 0
    true = ground_truth != 0
    classes = np.zeros(prediction.shape, dtype=np.uint8)
    both = predicted & true
    same = prediction == ground_truth
    classes[both & same] = 1
    classes[predicted & ~true] = 2
    classes[~predicted & true] = 3
    classes[both & ~same] = 4
    return classes


def difference_lut(*, opacity: float = 1.0) -> np.ndarray:
    """RGBA lookup table for the difference classes, background transparent.

    Parameters
    ----------
    opacity : float
        Alpha in [0, 1] for every class.

    Returns
    -------
    numpy.ndarray
        ``(5, 4)`` uint8.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"overlay opacity must lie in [0, 1], got {opacity}")
    lut = np.zeros((5, 4), dtype=np.uint8)
    for value, rgb in DIFFERENCE_COLORS.items():
        lut[value, :3] = rgb
        lut[value, 3] = round(opacity * 255)
    return lut

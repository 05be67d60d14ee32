"""Label colour tables: names + RGB colours -> an RGBA lookup indexed by label value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["DEFAULT_LABEL_COLORS", "label_lut"]

# Used for labels beyond the model's colour table (a mask opened from a file may hold more
# labels than the model knows); distinct, saturated, readable over grey.
DEFAULT_LABEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
)


def label_lut(
    colors: Sequence[tuple[int, int, int]],
    *,
    n_labels: int | None = None,
    opacity: float = 1.0,
    label_opacity: Mapping[int, float] | None = None,
    hidden: set[int] | frozenset[int] = frozenset(),
) -> np.ndarray:
    """Build the RGBA lookup table that colours a label image.

    Parameters
    ----------
    colors : sequence of (int, int, int)
        RGB 0-255 per label value, index 0 being background (always transparent).
    n_labels : int or None
        Table length; at least ``len(colors)``. Labels past the colour table cycle through
        ``DEFAULT_LABEL_COLORS``.
    opacity : float
        Global opacity in [0, 1], multiplied into every label's alpha.
    label_opacity : mapping of int to float or None
        Per-label opacity in [0, 1] (default 1).
    hidden : set of int
        Labels drawn fully transparent.

    Returns
    -------
    numpy.ndarray
        ``(n_labels, 4)`` uint8; ``lut[label]`` is that label's RGBA.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"overlay opacity must lie in [0, 1], got {opacity}")
    size = max(len(colors), n_labels or 0, 1)
    lut = np.zeros((size, 4), dtype=np.uint8)
    for label in range(1, size):
        if label < len(colors):
            rgb = colors[label]
        else:
            rgb = DEFAULT_LABEL_COLORS[(label - 1) % len(DEFAULT_LABEL_COLORS)]
        if len(rgb) != 3 or not all(0 <= int(c) <= 255 for c in rgb):
            raise ValueError(f"label {label} colour must be three integers in 0-255, got {rgb}")
        alpha = opacity * (label_opacity or {}).get(label, 1.0)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"label {label} opacity must lie in [0, 1], got {alpha}")
        if label in hidden:
            alpha = 0.0
        lut[label, :3] = rgb
        lut[label, 3] = round(alpha * 255)
    return lut

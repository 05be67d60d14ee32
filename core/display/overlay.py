"""RGBA rendering of a 2-D label slice: filled regions or their 4-neighbour outline."""

from __future__ import annotations

import numpy as np

__all__ = ["composite_outline", "label_boundary", "render_label_overlay"]


def label_boundary(labels: np.ndarray) -> np.ndarray:
    """Mark the foreground pixels that touch a different label.

    A pixel is on the boundary when its label is non-zero and at least one of its four
    neighbours (up, down, left, right) has another label; pixels on the slice border count
    as touching the outside (background).

    Parameters
    ----------
    labels : numpy.ndarray
        2-D integer label slice ``(rows, cols)``.

    Returns
    -------
    numpy.ndarray
        Boolean ``(rows, cols)``.
    """
    if labels.ndim != 2:
        raise ValueError(f"label slice must be 2-D, got shape {labels.shape}")
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[0, :] = True
    edge[-1, :] = True
    edge[:, 0] = True
    edge[:, -1] = True
    edge &= labels != 0
    return edge


def render_label_overlay(labels: np.ndarray, lut: np.ndarray, *, filled: bool = True) -> np.ndarray:
    """Colour a 2-D label slice through an RGBA lookup table.

    Parameters
    ----------
    labels : numpy.ndarray
        2-D integer labels ``(rows, cols)``, values in ``[0, len(lut))``.
    lut : numpy.ndarray
        ``(N, 4)`` uint8 table from :func:`core.display.label_lut`.
    filled : bool
        True colours every labelled pixel; False only the boundary pixels
        (:func:`label_boundary`).

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 4)`` uint8 RGBA, transparent where nothing is drawn.
    """
    if labels.ndim != 2:
        raise ValueError(f"label slice must be 2-D, got shape {labels.shape}")
    if not filled:
        labels = np.where(label_boundary(labels), labels, 0)
    # 'clip' keeps an out-of-table label from raising mid-scroll; callers size the table
    # from the mask's maximum so this never changes a colour in practice.
    return np.take(lut, labels, axis=0, mode="clip")


def composite_outline(base: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """Draw an outline RGBA over another RGBA, in place, where the outline is opaque at all.

    Parameters
    ----------
    base, outline : numpy.ndarray
        ``(rows, cols, 4)`` uint8 images of the same shape.

    Returns
    -------
    numpy.ndarray
        ``base``, modified.
    """
    if base.shape != outline.shape:
        raise ValueError(f"overlay shapes differ: {base.shape} and {outline.shape}")
    drawn = outline[..., 3] > 0
    base[drawn] = outline[drawn]
    return base

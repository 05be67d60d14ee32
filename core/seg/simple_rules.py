"""Plain decision rules (argmax and fixed threshold) with the same conventions as rankseg_rma."""

from __future__ import annotations

from core.seg.inputs import (
    check_ignore_mask,
    check_probabilities,
    numpy_to_torch,
    void_label_for,
)

__all__ = ["argmax_decision", "threshold_decision"]


def _finish(result, info, ignore, multilabel, void_label):
    if ignore is not None:
        if multilabel:
            result = result & ~ignore[:, None, :]
        else:
            result = result.masked_fill(ignore, int(void_label))
    B, C = info.batch, info.classes
    shaped = result.reshape(B, C, *info.spatial) if multilabel else result.reshape(B, *info.spatial)
    return shaped.cpu().numpy() if info.as_numpy else shaped


def _whole(info):
    return info.chunk(0, info.pixels).to(info.device)


def argmax_decision(
    probs, *, multilabel: bool = False, ignore_mask=None, void_label: int | None = None
):
    """Most probable class per pixel.

    Parameters
    ----------
    probs : (B, C, *spatial) float tensor or array
    multilabel : bool
        True: per-class masks ``p > 0.5`` (the argmax of {absent, present} for sigmoid
        outputs), bool (B, C, *spatial). False: int64 (B, *spatial) labels; C == 1 is refused.
    ignore_mask : bool (B, *spatial), optional
        Pixels returned as ``void_label`` (or False).
    void_label : int, optional
        Default 255, or C when there are more than 255 classes (never a class index).

    Returns
    -------
    bool or int64 array; numpy for numpy input. Ties go to the lowest class index.
    """
    info = check_probabilities(probs)
    void_label = void_label_for(void_label, info.classes)
    ignore = check_ignore_mask(ignore_mask, info)
    if multilabel:
        return _finish(_whole(info) > 0.5, info, ignore, True, void_label)
    if info.classes == 1:
        raise ValueError("probs has a single channel (C == 1): use multilabel=True")
    flat = numpy_to_torch(info.flat) if info.as_numpy else info.flat
    # max(dim) gives the first maximum like argmax but is several times faster on the CPU.
    return _finish(flat.max(1).indices, info, ignore, False, void_label)


def threshold_decision(
    probs,
    threshold: float = 0.5,
    *,
    multilabel: bool = True,
    ignore_mask=None,
    void_label: int | None = None,
):
    """Pixels whose probability exceeds ``threshold``.

    Parameters
    ----------
    probs : (B, C, *spatial) float tensor or array
    threshold : float in [0, 1]
        Strict: a pixel needs ``p > threshold``.
    multilabel : bool
        True (default): per-class bool masks (B, C, *spatial). False: int64 labels, the argmax
        class where its probability exceeds the threshold and ``void_label`` elsewhere.
    ignore_mask : bool (B, *spatial), optional
    void_label : int, optional
        Default 255, or C when there are more than 255 classes (never a class index).

    Returns
    -------
    bool or int64 array; numpy for numpy input.
    """
    if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    info = check_probabilities(probs)
    void_label = void_label_for(void_label, info.classes)
    ignore = check_ignore_mask(ignore_mask, info)
    p = _whole(info)
    if multilabel:
        return _finish(p > threshold, info, ignore, True, void_label)
    if info.classes == 1:
        raise ValueError("probs has a single channel (C == 1): use multilabel=True")
    best, labels = p.max(1)
    labels = labels.masked_fill(best <= threshold, int(void_label))
    return _finish(labels, info, ignore, False, void_label)

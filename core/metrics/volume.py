"""Volume of a mask in millilitres from the voxel spacing."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["volume_ml"]


def volume_ml(mask, spacing, *, num_classes: int | None = None):
    """Volume in mL (1 mL = 1000 mm^3) of a mask, or of each class of a label map.

    Parameters
    ----------
    mask : bool or int array, spatial axes only (e.g. (I, J, K))
        Bool: one mask. Integer: a label map, measured per class (needs ``num_classes``).
    spacing : sequence of float
        Voxel size in mm along each axis of ``mask`` (length ``mask.ndim``).
    num_classes : int, optional
        Number of classes of a label map; labels outside ``[0, num_classes)`` are not counted.

    Returns
    -------
    float for a bool mask; float64 numpy array (num_classes,) for a label map.
    """
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    spacing = [float(s) for s in spacing]
    if len(spacing) != m.ndim:
        raise ValueError(f"spacing has {len(spacing)} values but the mask has {m.ndim} axes")
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if m.dtype == bool:
        return float(np.count_nonzero(m)) * voxel_ml
    if not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"mask must be bool or an integer label map, got {m.dtype}")
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("a label map needs num_classes (at least 1)")
    labels = m.reshape(-1)
    labels = labels[(labels >= 0) & (labels < num_classes)]
    return (
        np.bincount(labels.astype(np.int64), minlength=int(num_classes)).astype(np.float64)
        * voxel_ml
    )

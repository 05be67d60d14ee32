"""Applying a probability calibration: rescale the logits, turn them back into probabilities.

The model's output reaches segbench as probabilities (segbench's own inference blends
probabilities across windows; nnU-Net and MONAI return probabilities), so the logits are
recovered from them: ``log p`` for softmax models (softmax ignores the per-pixel constant that
separates them from the network's logits, so ``softmax(log p / T) == softmax(z / T)`` exactly
for one window) and ``log(p / (1 - p))`` for sigmoid models.
"""

from __future__ import annotations

import numpy as np
import torch

from core.probability_calibration.settings import ProbabilityCalibration

__all__ = ["calibrate_probabilities", "logits_from_probabilities", "probabilities_from_logits"]

#: Probabilities are clamped here before the logarithm: 0 (float16 underflow) would give -inf.
_TINY = 1e-12
#: Pixels per chunk: the float32 temporaries of a chunk stay a few MB.
_CHUNK_PIXELS = 1 << 18


def logits_from_probabilities(p: torch.Tensor, activation: str) -> torch.Tensor:
    """float32 logits (up to a per-pixel constant for softmax) of probabilities ``p``."""
    p = p.float().clamp(_TINY, 1.0)
    if activation == "softmax":
        return p.log()
    return p.log() - (1.0 - p).clamp_min(_TINY).log()


def probabilities_from_logits(z: torch.Tensor, activation: str, dim: int = 0) -> torch.Tensor:
    """Softmax over ``dim`` or elementwise sigmoid."""
    return torch.softmax(z, dim=dim) if activation == "softmax" else torch.sigmoid(z)


def calibrate_probabilities(
    probs: np.ndarray,
    calibration: ProbabilityCalibration,
    activation: str,
) -> np.ndarray:
    """Apply ``calibration`` to class probabilities (C, *spatial), in place, chunk by chunk.

    Parameters
    ----------
    probs : numpy.ndarray
        float16/32/64 probabilities with classes on axis 0; overwritten.
    calibration : ProbabilityCalibration
    activation : {'softmax', 'sigmoid'}

    Returns
    -------
    numpy.ndarray
        ``probs`` itself, now calibrated (same dtype; softmax rows still sum to 1 up to the
        dtype's rounding).
    """
    n_classes = probs.shape[0]
    scales, biases = calibration.logit_scales(n_classes)
    scale = torch.tensor(scales, dtype=torch.float32)[:, None]
    bias = torch.tensor(biases, dtype=torch.float32)[:, None]
    # A (C, pixels) view when the array allows it; otherwise slab by slab along axis 1.
    flat = probs.reshape(n_classes, -1) if probs.flags.c_contiguous else None
    if flat is None:
        for index in range(probs.shape[1]):
            slab = np.ascontiguousarray(probs[:, index])
            probs[:, index] = calibrate_probabilities(slab, calibration, activation)
        return probs
    view = torch.from_numpy(flat)
    for start in range(0, flat.shape[1], _CHUNK_PIXELS):
        part = view[:, start : start + _CHUNK_PIXELS]
        z = logits_from_probabilities(part, activation)
        z.mul_(scale).add_(bias)
        part.copy_(probabilities_from_logits(z, activation).to(part.dtype))
    return probs

"""Fitting temperature (or per-class vector) scaling by minimising the negative log-likelihood.

A volume has tens of millions of pixels, nearly all of them confidently right. The fit keeps
every *informative* pixel (the top probability below 0.999, or the argmax wrong) and a uniform
sample of the others with weight ``1 / sampling rate``, so the weighted NLL is an unbiased
estimate of the NLL over every pixel while the sample stays a few hundred thousand rows.
The minimisation itself is torch's L-BFGS on a handful of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.probability_calibration.scaling import logits_from_probabilities
from core.probability_calibration.settings import ProbabilityCalibration

__all__ = ["PixelSample", "fit_scaling", "sample_pixels"]

#: Confident pixels kept per case (uniformly, with weights); informative ones are all kept
#: up to :data:`_MAX_INFORMATIVE`.
_CONFIDENT_SAMPLE = 100_000
_MAX_INFORMATIVE = 1_000_000
_CONFIDENT = 0.999


@dataclass
class PixelSample:
    """Logits, labels and weights of pixels gathered over cases (rows are pixels)."""

    activation: str
    n_classes: int
    logits: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)
    pixels: int = 0  # pixels the sample stands for (the sum of the weights)
    cases: int = 0

    @property
    def rows(self) -> int:
        return sum(len(w) for w in self.weights)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.weights:
            raise ValueError("no labelled pixel to fit the probability calibration on")
        return torch.cat(self.logits), torch.cat(self.labels), torch.cat(self.weights)


def sample_pixels(
    sample: PixelSample, probs: np.ndarray, truth: np.ndarray, *, seed: int = 0
) -> None:
    """Add one case's pixels to ``sample``.

    Parameters
    ----------
    sample : PixelSample
        Gathers rows; updated in place.
    probs : numpy.ndarray, shape (C, *spatial)
        The model's uncalibrated probabilities.
    truth : int array (*spatial)
        Ground-truth labels; pixels with a label outside 0..C-1 are left out.
    seed : int
        Seed of the uniform sample of confident pixels.
    """
    n_classes = probs.shape[0]
    if truth.shape != probs.shape[1:]:
        raise ValueError(f"ground truth shape {truth.shape} does not match {probs.shape[1:]}")
    flat = torch.from_numpy(np.ascontiguousarray(probs).reshape(n_classes, -1))
    labels = np.ascontiguousarray(truth).reshape(-1)
    if labels.dtype not in (np.uint8, np.int16, np.int32, np.int64):
        labels = labels.astype(np.int32)  # what torch compares; int64 would cost 8 B a voxel
    labels = torch.from_numpy(labels)
    known = (labels >= 0) & (labels < n_classes)
    top, winner = flat.max(0)
    informative = known & ((top.float() < _CONFIDENT) | (winner != labels))
    confident = known & ~informative
    rng = np.random.default_rng(seed)
    rows, weights = [], []
    for chosen, cap in ((informative, _MAX_INFORMATIVE), (confident, _CONFIDENT_SAMPLE)):
        index = torch.nonzero(chosen).squeeze(1)
        if len(index) == 0:
            continue
        weight = 1.0
        if len(index) > cap:
            weight = len(index) / cap
            index = index[torch.from_numpy(rng.choice(len(index), cap, replace=False))]
        rows.append(index)
        weights.append(torch.full((len(index),), weight, dtype=torch.float64))
    if not rows:
        return
    index = torch.cat(rows)
    sample.logits.append(logits_from_probabilities(flat[:, index].T, sample.activation))
    sample.labels.append(labels[index].long())
    sample.weights.append(torch.cat(weights))
    sample.pixels += int(known.sum())
    sample.cases += 1


def _nll(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, activation: str) -> torch.Tensor:
    """Weighted mean negative log-likelihood (per pixel; summed over classes for sigmoid)."""
    if activation == "softmax":
        per_pixel = F.cross_entropy(z, y, reduction="none")
    else:
        target = F.one_hot(y, z.shape[1]).to(z.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(z, target, reduction="none").sum(1)
    return (per_pixel.double() * w).sum() / w.sum()


def _minimise(params: list[torch.Tensor], loss_fn) -> None:
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimiser.step(closure)


def fit_scaling(sample: PixelSample, *, vector: bool = False) -> ProbabilityCalibration:
    """Fit the temperature (and, with ``vector``, per-class scales and biases) by NLL.

    Parameters
    ----------
    sample : PixelSample
    vector : bool
        Also fit vector scaling (a scale and a bias per class), started from the temperature.

    Returns
    -------
    ProbabilityCalibration
        With ``fit`` facts: cases, pixels, rows, NLL per pixel before and after.
    """
    z, y, w = sample.tensors()
    activation = sample.activation
    with torch.no_grad():
        before = float(_nll(z, y, w, activation))
    log_inverse_t = torch.zeros((), dtype=torch.float32, requires_grad=True)
    _minimise([log_inverse_t], lambda: _nll(z * log_inverse_t.exp(), y, w, activation))
    temperature = float(torch.exp(-log_inverse_t.detach()))
    with torch.no_grad():
        after_t = float(_nll(z / temperature, y, w, activation))
    fit = {
        "cases": sample.cases,
        "pixels": sample.pixels,
        "rows": sample.rows,
        "nll_before": before,
        "nll_temperature": after_t,
    }
    if not vector:
        fit["nll_after"] = after_t
        return ProbabilityCalibration(temperature=temperature, fit=fit)
    n = sample.n_classes
    scales = torch.full((n,), 1.0 / temperature, dtype=torch.float32, requires_grad=True)
    biases = torch.zeros(n, dtype=torch.float32, requires_grad=True)
    _minimise([scales, biases], lambda: _nll(z * scales + biases, y, w, activation))
    with torch.no_grad():
        after = float(_nll(z * scales + biases, y, w, activation))
    fit["nll_after"] = after
    return ProbabilityCalibration(
        temperature=temperature,
        class_scales=tuple(float(v) for v in scales.detach()),
        class_biases=tuple(float(v) for v in biases.detach()),
        fit=fit,
    )

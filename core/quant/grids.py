"""Initial quantization grids: min/max ranges and the Lp(2.4) shrink search of BRECQ/QDrop.

A grid is a step ``s1`` and an integer zero point ``z``; codes live in ``[0, 2**bits - 1]`` and a
weight is represented as ``s1 * (code - z)``. Per-tensor grids are 0-d tensors, per-channel
grids have shape ``(Cout, 1, ..., 1)`` so they broadcast against the canonical weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Grid", "minmax_grid", "lp_search_grid", "round_to_grid"]

# BRECQ/QDrop shrink the range in 1 % steps down to 20 % and score each candidate by the
# Lp distance with p = 2.4, which weighs large errors a little more than the MSE.
_SHRINK_STEPS = 80
_LP_NORM = 2.4


@dataclass(frozen=True)
class Grid:
    """A uniform quantization grid.

    Attributes
    ----------
    scale : torch.Tensor
        Step ``s1`` (0-d, or ``(Cout, 1, ...)`` per channel), positive.
    zero_point : torch.Tensor
        Integer-valued zero point, same shape as ``scale`` (float dtype, whole numbers).
    bits : int
        Code range ``[0, 2**bits - 1]``.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1


def _reduce(weight: torch.Tensor, per_channel: bool, op: str) -> torch.Tensor:
    if not per_channel:
        return getattr(weight, op)()
    flat = weight.reshape(weight.shape[0], -1)
    values = flat.amin(dim=1) if op == "min" else flat.amax(dim=1)
    return values.reshape(-1, *([1] * (weight.dim() - 1)))


def _grid_from_range(
    low: torch.Tensor, high: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    qmax = 2**bits - 1
    tiny = torch.finfo(torch.float32).tiny * 1e6
    if symmetric:
        half = 2 ** (bits - 1)
        bound = torch.maximum(low.abs(), high.abs())
        scale = torch.clamp(bound / max(half - 1, 1), min=tiny)
        zero = torch.full_like(scale, float(half))
        return scale, zero
    # The range always contains 0 so that 0 is exactly representable (zero-padding, ReLU).
    low = torch.clamp(low, max=0.0)
    high = torch.clamp(high, min=0.0)
    scale = torch.clamp((high - low) / qmax, min=tiny)
    zero = torch.clamp(torch.round(-low / scale), 0, qmax)
    return scale, zero


def round_to_grid(weight: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Integer codes (as float) of round-to-nearest on ``grid``."""
    return torch.clamp(torch.round(weight / grid.scale) + grid.zero_point, 0, grid.qmax)


def minmax_grid(weight: torch.Tensor, bits: int, *, per_channel: bool, symmetric: bool) -> Grid:
    """Grid spanning the weight's full range (the 'rtn-minmax' baseline)."""
    weight = weight.detach().float()
    low = _reduce(weight, per_channel, "min")
    high = _reduce(weight, per_channel, "max")
    scale, zero = _grid_from_range(low, high, bits, symmetric)
    return Grid(scale, zero, bits)


def lp_search_grid(weight: torch.Tensor, bits: int, *, per_channel: bool, symmetric: bool) -> Grid:
    """Grid whose range is the min/max range shrunk to minimise the Lp(2.4) rounding error.

    Candidates shrink both ends by ``i`` % for ``i = 0 .. 79``; per-channel grids pick the best
    shrink for each channel independently.
    """
    weight = weight.detach().float()
    low = _reduce(weight, per_channel, "min")
    high = _reduce(weight, per_channel, "max")
    best_err = None
    best_scale = best_zero = None
    for step in range(_SHRINK_STEPS):
        factor = 1.0 - 0.01 * step
        scale, zero = _grid_from_range(low * factor, high * factor, bits, symmetric)
        codes = torch.clamp(torch.round(weight / scale) + zero, 0, 2**bits - 1)
        err_map = (scale * (codes - zero) - weight).abs().pow(_LP_NORM)
        if per_channel:
            err = err_map.reshape(weight.shape[0], -1).mean(dim=1).reshape(scale.shape)
        else:
            err = err_map.mean()
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return Grid(best_scale, best_zero, bits)

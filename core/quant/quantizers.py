"""Weight quantizers: FlexRound, AdaRound and fixed round-to-nearest, on canonical weights.

Each quantizer owns a copy of one layer's canonical weight ``W`` (``(Cout, Cin_per_group,
*kernel)``, see :mod:`core.quant.layout`) and its initial grid, and returns the fake-quantized
weight ``W_hat`` in :meth:`WeightQuantizer.forward` (differentiable where the method learns) and
the hard integer codes in :meth:`WeightQuantizer.codes`. Written by hand because the methods are
the point of this package: torch.ao has no FlexRound, and AIMET/Brevitas AdaRound cannot share
FlexRound's reconstruction loop, which a fair comparison needs.
"""

from __future__ import annotations

import torch
from torch import nn

from core.quant.grids import Grid, round_to_grid

__all__ = [
    "WeightQuantizer",
    "FixedQuantizer",
    "FlexRoundQuantizer",
    "AdaRoundQuantizer",
    "ActivationQuantizer",
    "ActivationFakeQuant",
    "OutputFakeQuant",
    "round_ste",
    "dequantize",
]

# AdaRound's rectified sigmoid stretches sigmoid(V) to (gamma, zeta) and clips to [0, 1], so
# h reaches exactly 0 and 1 with a non-zero gradient nearby (Nagel et al. 2020, eq. 23).
ADAROUND_ZETA = 1.1
ADAROUND_GAMMA = -0.1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator)."""
    return (torch.round(x) - x).detach() + x


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``scale * (codes - zero_point)`` in float32.

    Every path that turns codes into weights (the result model, :func:`load_quantized`) calls
    this one function, so they agree bit for bit.
    """
    return scale.float() * (codes.float() - zero_point.float())


class WeightQuantizer(nn.Module):
    """Common state: the float weight, the initial grid and the code range.

    Parameters
    ----------
    weight : torch.Tensor
        Canonical float weight (copied).
    grid : Grid
        Initial grid (``s1`` and zero point).
    """

    method = "base"

    def __init__(self, weight: torch.Tensor, grid: Grid) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().float().clone())
        self.register_buffer("scale_init", grid.scale.detach().float().clone())
        self.register_buffer("zero_point", grid.zero_point.detach().float().clone())
        self.bits = grid.bits
        self.qmax = 2**grid.bits - 1

    def scale(self) -> torch.Tensor:
        """Current grid step s1 (learned or fixed)."""
        return self.scale_init

    def codes(self) -> torch.Tensor:
        """Hard integer codes in ``[0, 2**bits - 1]`` (float dtype), without gradient."""
        raise NotImplementedError

    def rtn_codes(self) -> torch.Tensor:
        """Codes of round-to-nearest on the initial grid (the reference for code changes)."""
        return round_to_grid(self.weight, Grid(self.scale_init, self.zero_point, self.bits))

    def hard_weight(self) -> torch.Tensor:
        """Dequantized weight from the hard codes, as inference will use it."""
        with torch.no_grad():
            return dequantize(self.codes(), self.scale(), self.zero_point)

    def lr_scale(self) -> float:
        """Factor from the configured learning rate to this quantizer's own (1 unless FlexRound)."""
        return 1.0

    def regularizer(self, beta: float) -> torch.Tensor:
        """Extra loss term of the method (zero unless AdaRound)."""
        return self.weight.new_zeros(())

    def forward(self) -> torch.Tensor:
        raise NotImplementedError


class FixedQuantizer(WeightQuantizer):
    """Round-to-nearest on a fixed grid: nothing to learn."""

    method = "rtn"

    def codes(self) -> torch.Tensor:
        return self.rtn_codes()

    def forward(self) -> torch.Tensor:
        return self.hard_weight()


class FlexRoundQuantizer(WeightQuantizer):
    """FlexRound: ``W_hat = s1 * (clamp(round(W / (s1 * S2 * s3 * s4)) + z) - z)``.

    All factors are stored as logs (so they stay positive) and start at 0, i.e. at
    round-to-nearest on the initial grid. ``s1`` is kept as ``s1_init * exp(log_s1)``, not
    ``exp(log(s1_init))``, so that at initialisation the quantizer reproduces round-to-nearest
    bit for bit.

    Parameters
    ----------
    weight, grid
        As in :class:`WeightQuantizer`.
    input_factor : bool
        Learn ``s4`` (per input channel); the paper uses it for convolutions only.
    learn_grid : bool
        Learn ``s1`` too (the paper's setting); False keeps it at the range search's value (a
        buffer at 0), so only the element-wise divisor learns. Learning it lowered the
        calibration-split agreement of the dilated FCN at W2 from 93.4 to 91.8 % and left
        the demo's alone (docs/FLEXROUND_IMPL.md, "The learned grid").
    """

    method = "flexround"

    def __init__(
        self, weight: torch.Tensor, grid: Grid, *, input_factor: bool, learn_grid: bool = False
    ) -> None:
        super().__init__(weight, grid)
        shape = self.weight.shape
        ones = [1] * (len(shape) - 2)
        if learn_grid:
            self.log_s1 = nn.Parameter(torch.zeros_like(self.scale_init))
        else:
            self.register_buffer("log_s1", torch.zeros_like(self.scale_init))
        self.log_s2 = nn.Parameter(torch.zeros_like(self.weight))
        self.log_s3 = nn.Parameter(self.weight.new_zeros(shape[0], 1, *ones))
        self.log_s4 = (
            nn.Parameter(self.weight.new_zeros(1, shape[1], *ones)) if input_factor else None
        )

    def scale(self) -> torch.Tensor:
        return self.scale_init * torch.exp(self.log_s1)

    def log_divisor(self) -> torch.Tensor:
        """``log(S2 * s3 * s4)``, the element-wise part of the divisor (same shape as W)."""
        total = self.log_s2 + self.log_s3
        if self.log_s4 is not None:
            total = total + self.log_s4
        return total

    def reach(self) -> float:
        """The largest ``|code - z|`` of round-to-nearest: how many grid steps the largest weight
        lies from zero (about ``2**(bits-1)``), at least 1."""
        with torch.no_grad():
            return max(1.0, float((self.rtn_codes() - self.zero_point).abs().max()))

    def lr_scale(self) -> float:
        """``1 / reach``: the configured learning rate is in grid levels per step.

        Adam moves every log factor by about ``lr`` per step whatever its gradient, and a change
        ``d`` of a log factor moves the code of weight ``w`` by about ``d * |w| / s1`` levels, up
        to ``d * reach``. Without this factor the same ``lr`` moves the largest codes ~64x more
        levels per step at 8 bits than at 2 bits (the 8-bit blow-up, docs/FLEXROUND_IMPL.md).
        """
        return 1.0 / self.reach()

    def _codes(self, scale: torch.Tensor, hard: bool) -> torch.Tensor:
        ratio = self.weight / (scale * torch.exp(self.log_divisor()))
        rounded = torch.round(ratio) if hard else round_ste(ratio)
        return torch.clamp(rounded + self.zero_point, 0, self.qmax)

    def codes(self) -> torch.Tensor:
        with torch.no_grad():
            return self._codes(self.scale(), hard=True)

    def forward(self) -> torch.Tensor:
        scale = self.scale()
        return scale * (self._codes(scale, hard=False) - self.zero_point)


class AdaRoundQuantizer(WeightQuantizer):
    """AdaRound: ``W_hat = s1 * (clamp(floor(W / s1) + h(V) + z) - z)`` with a fixed grid.

    ``h`` is the rectified sigmoid while learning and the hard ``V >= 0`` decision once
    :attr:`hard` is set. ``V`` starts where ``h(V)`` equals the fractional part of ``W / s1``, so
    the hard decision at initialisation is round-to-nearest.
    """

    method = "adaround"

    def __init__(self, weight: torch.Tensor, grid: Grid) -> None:
        super().__init__(weight, grid)
        scaled = self.weight / self.scale_init
        self.register_buffer("floor", torch.floor(scaled))
        rest = (scaled - self.floor).clamp(1e-6, 1 - 1e-6)
        init = -torch.log((ADAROUND_ZETA - ADAROUND_GAMMA) / (rest - ADAROUND_GAMMA) - 1)
        self.alpha = nn.Parameter(init)
        self.hard = False

    def soft_rounding(self) -> torch.Tensor:
        """``h(V)`` in [0, 1]."""
        stretched = torch.sigmoid(self.alpha) * (ADAROUND_ZETA - ADAROUND_GAMMA) + ADAROUND_GAMMA
        return stretched.clamp(0.0, 1.0)

    def _codes(self, hard: bool) -> torch.Tensor:
        up = (self.alpha >= 0).float() if hard else self.soft_rounding()
        return torch.clamp(self.floor + up + self.zero_point, 0, self.qmax)

    def codes(self) -> torch.Tensor:
        with torch.no_grad():
            return self._codes(hard=True)

    def regularizer(self, beta: float) -> torch.Tensor:
        h = self.soft_rounding()
        return (1 - (2 * h - 1).abs().pow(beta)).sum()

    def forward(self) -> torch.Tensor:
        return self.scale_init * (self._codes(self.hard) - self.zero_point)


def _fake_quant(x: torch.Tensor, step: torch.Tensor, low: int, high: int) -> torch.Tensor:
    return torch.clamp(torch.round(x / step), low, high) * step


class ActivationQuantizer(nn.Module):
    """Per-tensor activation fake quantization with a learned step (LSQ, Esser et al. 2020).

    The step is stored as a log (Adam then makes LSQ's gradient scaling unnecessary: its updates
    do not depend on the gradient's scale). It is initialised on the first batch it sees by the
    same Lp(2.4) shrink search as the weight grids; inputs that are never negative on that batch
    (after a ReLU) get the unsigned range ``[0, 2**bits - 1]``, others the signed range.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.log_step = nn.Parameter(torch.zeros(()))
        self.register_buffer("signed", torch.tensor(False))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def bounds(self) -> tuple[int, int]:
        if bool(self.signed):
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Choose the signedness and the initial step from a batch of inputs."""
        sample = x.detach().float().reshape(-1)
        if sample.numel() > 100_000:  # the search needs a sample, not the whole activation
            sample = sample[:: sample.numel() // 100_000 + 1]
        self.signed.fill_(bool(sample.min() < 0))
        low, high = self.bounds
        bound = float(sample.abs().max()) or 1.0
        best = None
        for step_index in range(80):
            step = bound * (1 - 0.01 * step_index) / max(high, 1)
            error = float(
                (_fake_quant(sample, torch.tensor(step), low, high) - sample).abs().pow(2.4).mean()
            )
            if best is None or error < best[0]:
                best = (error, step)
        self.log_step.fill_(float(torch.log(torch.tensor(best[1]))))
        self.initialised.fill_(True)

    def step(self) -> torch.Tensor:
        return torch.exp(self.log_step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            self.initialise(x)
        low, high = self.bounds
        step = self.step()
        return torch.clamp(round_ste(x / step), low, high) * step


class ActivationFakeQuant:
    """A forward pre-hook that fake-quantizes a layer's input with a fixed step.

    Used in the result model (and by :func:`core.quant.load_quantized`) so the quantized model
    keeps plain layers and the same state-dict keys.
    """

    def __init__(self, step: float, low: int, high: int) -> None:
        self.step = torch.tensor(step, dtype=torch.float32)
        self.low, self.high = low, high

    def __call__(self, _module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        return (_fake_quant(x, self.step.to(x.device), self.low, self.high), *rest)


class OutputFakeQuant(ActivationFakeQuant):
    """A forward hook that fake-quantizes a layer's output with a fixed step.

    Puts the quantization of an output that several layers read at its producer
    (:mod:`core.quant.shared_outputs`), with the step of the layer that reads it directly.
    """

    def __call__(self, _module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        return _fake_quant(output, self.step.to(output.device), self.low, self.high)

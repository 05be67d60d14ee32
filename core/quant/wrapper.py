"""The stand-in module that replaces a layer in the working copy while it is being quantized."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from core.quant.layout import from_canonical
from core.quant.quantizers import WeightQuantizer

__all__ = ["QuantLayer", "channel_sum_mse"]

MODES = ("fp", "learn", "hard", "frozen")


def channel_sum_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the channel axis (dim 1) and averaged over the rest."""
    diff = (pred.float() - target.float()).pow(2)
    if diff.dim() >= 2:
        return diff.sum(dim=1).mean()
    return diff.mean()


class QuantLayer(nn.Module):
    """A quantizable layer whose weight comes from a quantizer.

    Modes: ``'fp'`` uses the float weight (the layer is not reached yet), ``'learn'`` the
    differentiable quantizer output, ``'hard'`` the hard codes of the current state, and
    ``'frozen'`` a fixed dequantized weight set by :meth:`freeze`.

    While :attr:`track_error` is on, every call also runs the float layer on the same input and
    accumulates the channel-summed squared output error (the layer's own reconstruction error).
    """

    def __init__(self, layer: nn.Module, quantizer: WeightQuantizer) -> None:
        super().__init__()
        self.layer = layer
        self.quantizer = quantizer
        self.mode = "fp"
        self.frozen_weight: torch.Tensor | None = None
        self.track_error = False
        self.error_sum = 0.0
        self.error_count = 0

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown layer mode {mode!r}")
        if mode == "frozen" and self.frozen_weight is None:
            raise ValueError("freeze() the layer before switching it to 'frozen'")
        self.mode = mode

    def freeze(self) -> None:
        """Fix the weight at the dequantized hard codes and stop learning."""
        self.frozen_weight = from_canonical(self.quantizer.hard_weight(), self.layer)
        self.mode = "frozen"

    def reset_error(self) -> float:
        """Return the mean tracked error since the last reset and start again."""
        value = self.error_sum / self.error_count if self.error_count else float("nan")
        self.error_sum, self.error_count = 0.0, 0
        return value

    def current_weight(self) -> torch.Tensor:
        if self.mode == "fp":
            return self.layer.weight
        if self.mode == "learn":
            return from_canonical(self.quantizer(), self.layer)
        if self.mode == "hard":
            return from_canonical(self.quantizer.hard_weight(), self.layer)
        return self.frozen_weight

    def _run(self, x: torch.Tensor, weight: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        params = {"weight": weight}
        if self.layer.bias is not None:
            params["bias"] = self.layer.bias
        return functional_call(self.layer, params, (x, *args), kwargs)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self._run(x, self.current_weight(), *args, **kwargs)
        if self.track_error and self.mode != "fp":
            with torch.no_grad():
                reference = self._run(x, self.layer.weight, *args, **kwargs)
                self.error_sum += float(channel_sum_mse(out, reference)) * x.shape[0]
                self.error_count += x.shape[0]
        return out

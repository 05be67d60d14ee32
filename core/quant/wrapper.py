"""The stand-in module that replaces a layer in the working copy while it is being quantized."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from core.quant.layout import from_canonical
from core.quant.quantizers import ActivationQuantizer, WeightQuantizer

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

    With an activation quantizer, the input is fake-quantized in every mode but ``'fp'``.

    Two probes measure the layer's reconstruction error against the float model:
    :meth:`record` keeps the outputs of the coming calls (run in ``'fp'`` mode on the float
    block's inputs, they are the float model's outputs of this layer), and :meth:`compare`
    accumulates the channel-summed squared error of the coming calls against given outputs.
    """

    def __init__(
        self,
        layer: nn.Module,
        quantizer: WeightQuantizer,
        act_quantizer: ActivationQuantizer | None = None,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.quantizer = quantizer
        self.act_quantizer = act_quantizer
        self.mode = "fp"
        self.frozen_weight: torch.Tensor | None = None
        self._recorded: list[torch.Tensor] | None = None
        self._references: list[torch.Tensor] | None = None
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

    def learnable_parameters(self) -> list[nn.Parameter]:
        """The quantizers' parameters (the layer's own weights stay fixed)."""
        params = list(self.quantizer.parameters())
        if self.act_quantizer is not None:
            params += list(self.act_quantizer.parameters())
        return params

    def quantizer_state(self) -> dict[str, torch.Tensor]:
        """A copy of the quantizers' state (to restore round-to-nearest after a failed run)."""
        state = {f"w.{k}": v.clone() for k, v in self.quantizer.state_dict().items()}
        if self.act_quantizer is not None:
            state.update({f"a.{k}": v.clone() for k, v in self.act_quantizer.state_dict().items()})
        return state

    def load_quantizer_state(self, state: dict[str, torch.Tensor]) -> None:
        self.quantizer.load_state_dict({k[2:]: v for k, v in state.items() if k[:2] == "w."})
        if self.act_quantizer is not None:
            self.act_quantizer.load_state_dict(
                {k[2:]: v for k, v in state.items() if k[:2] == "a."}
            )

    def record(self, on: bool) -> list[torch.Tensor]:
        """Start (``on``) or stop keeping the outputs of every call; returns those kept."""
        kept = self._recorded or []
        self._recorded = [] if on else None
        return kept

    def compare(self, references: list[torch.Tensor] | None) -> None:
        """Score the coming calls against ``references`` (one per call, in order); None stops."""
        self._references = list(references) if references is not None else None

    def reset_error(self) -> float:
        """Return the mean compared error since the last reset and start again."""
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
        layer_input = x
        if self.act_quantizer is not None and self.mode != "fp":
            layer_input = self.act_quantizer(x)
        out = self._run(layer_input, self.current_weight(), *args, **kwargs)
        if self._recorded is not None:
            self._recorded.append(out.detach())
        if self._references:
            with torch.no_grad():
                error = channel_sum_mse(out, self._references.pop(0))
            self.error_sum += float(error) * x.shape[0]
            self.error_count += x.shape[0]
        return out

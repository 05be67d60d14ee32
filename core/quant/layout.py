"""Which layers can be quantized and how their weights map to an output-channel-first layout.

Every quantizer works on a *canonical* weight of shape ``(Cout, Cin_per_group, *kernel)``:
Linear and Conv weights already have it; ConvTranspose weights are stored as
``(Cin, Cout_per_group, *kernel)`` and are regrouped here, so "per output channel" and the s3/s4
factors mean the same thing for every layer kind. The conversions only reshape and permute, so
they are exact and reversible.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "QUANTIZABLE_TYPES",
    "is_quantizable",
    "is_transposed",
    "to_canonical",
    "from_canonical",
    "out_channels",
]

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def is_quantizable(module: nn.Module) -> bool:
    """True for the layer types whose weight this package quantizes."""
    return isinstance(module, QUANTIZABLE_TYPES)


def is_transposed(module: nn.Module) -> bool:
    """True for ConvTranspose layers (weights stored input-channel first)."""
    return isinstance(module, nn.modules.conv._ConvTransposeNd)


def _groups(module: nn.Module) -> int:
    return int(getattr(module, "groups", 1))


def to_canonical(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Return ``weight`` in the ``(Cout, Cin_per_group, *kernel)`` layout.

    Parameters
    ----------
    weight : torch.Tensor
        The layer's weight in its own layout.
    module : nn.Module
        The layer (decides the layout).
    """
    if not is_transposed(module):
        return weight
    groups = _groups(module)
    cin, cout_g, *kernel = weight.shape
    # (g, Cin/g, Cout/g, k) -> (g, Cout/g, Cin/g, k) -> (Cout, Cin/g, k)
    grouped = weight.reshape(groups, cin // groups, cout_g, *kernel).transpose(1, 2)
    return grouped.reshape(groups * cout_g, cin // groups, *kernel)


def from_canonical(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Inverse of :func:`to_canonical`: back to the layer's own weight layout."""
    if not is_transposed(module):
        return weight
    groups = _groups(module)
    cout, cin_g, *kernel = weight.shape
    grouped = weight.reshape(groups, cout // groups, cin_g, *kernel).transpose(1, 2)
    return grouped.reshape(groups * cin_g, cout // groups, *kernel).contiguous()


def out_channels(module: nn.Module) -> int:
    """Number of output channels (features) of a quantizable layer."""
    if isinstance(module, nn.Linear):
        return module.out_features
    return int(module.out_channels)

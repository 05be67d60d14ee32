"""Built-in network architectures, found by name in a registry.

A model spec names its architecture (``"unet"``) and the keyword arguments of its builder; the
loader looks the name up here and calls the builder. New architectures are added with
:func:`register_architecture`, never with if/elif chains in the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "ArchitectureBuilder",
    "UNet",
    "build_architecture",
    "known_architectures",
    "register_architecture",
]

ArchitectureBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ArchitectureBuilder] = {}


def register_architecture(name: str, builder: ArchitectureBuilder) -> None:
    """Make ``builder`` available to model specs under ``name``.

    Parameters
    ----------
    name : str
        Architecture name used in ``model.json`` (lower case, no spaces).
    builder : callable
        ``builder(in_channels=..., out_channels=..., **arguments) -> torch.nn.Module``.

    Raises
    ------
    ValueError
        If the name is already registered with a different builder.
    """
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not builder:
        raise ValueError(f"architecture {name!r} is already registered")
    _REGISTRY[name] = builder


def known_architectures() -> tuple[str, ...]:
    """Names of the registered architectures, sorted."""
    return tuple(sorted(_REGISTRY))


def build_architecture(
    name: str, *, in_channels: int, out_channels: int, arguments: dict[str, Any]
) -> nn.Module:
    """Build a registered architecture.

    Parameters
    ----------
    name : str
        Registered architecture name.
    in_channels, out_channels : int
        Input channels and number of classes.
    arguments : dict
        Further keyword arguments of the builder (from the spec).

    Returns
    -------
    torch.nn.Module
        The network with freshly initialised weights.

    Raises
    ------
    ValueError
        Unknown name, or arguments the builder does not accept.
    """
    builder = _REGISTRY.get(name)
    if builder is None:
        raise ValueError(
            f"unknown architecture {name!r} (known: {', '.join(known_architectures())})"
        )
    try:
        return builder(in_channels=in_channels, out_channels=out_channels, **arguments)
    except TypeError as error:
        raise ValueError(f"architecture {name!r}: bad arguments {arguments}: {error}") from None


_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_NORMS: dict[str, dict[int, Callable[[int], nn.Module]]] = {
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    # affine=True so instance-norm layers carry weights a quantizer and a state dict can see.
    "instance": {
        2: lambda c: nn.InstanceNorm2d(c, affine=True),
        3: lambda c: nn.InstanceNorm3d(c, affine=True),
    },
    "none": {2: lambda c: nn.Identity(), 3: lambda c: nn.Identity()},
}


class _ConvBlock(nn.Module):
    """Two 3x3(x3) convolutions with normalisation and ReLU, optionally residual."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, norm: str, residual: bool) -> None:
        super().__init__()
        conv, make_norm = _CONV[dims], _NORMS[norm][dims]
        bias = norm == "none"
        self.conv1 = conv(in_ch, out_ch, kernel_size=3, padding=1, bias=bias)
        self.norm1 = make_norm(out_ch)
        self.conv2 = conv(out_ch, out_ch, kernel_size=3, padding=1, bias=bias)
        self.norm2 = make_norm(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.skip: nn.Module | None = None
        if residual:
            # A 1x1 projection when channel counts differ, identity otherwise.
            self.skip = (
                conv(in_ch, out_ch, kernel_size=1, bias=False) if in_ch != out_ch else nn.Identity()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.skip is not None:
            out = out + self.skip(x)
        return self.act(out)


class UNet(nn.Module):
    """A configurable 2-D or 3-D U-Net (encoder-decoder with skip connections).

    Parameters
    ----------
    in_channels : int
        Input channels (1 for CT/MR, 3 for RGB).
    out_channels : int
        Number of classes (logits out; the activation is applied by the caller).
    dims : {2, 3}
        Spatial dimensionality.
    base_channels : int
        Channels of the first level; each deeper level doubles them.
    depth : int
        Number of down-sampling steps (input sizes must be divisible by ``2 ** depth``).
    norm : {'batch', 'instance', 'none'}
        Normalisation after each convolution.
    residual : bool
        Residual (skip-added) convolution blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        dims: int = 2,
        base_channels: int = 16,
        depth: int = 3,
        norm: str = "batch",
        residual: bool = False,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"U-Net dims must be 2 or 3, got {dims}")
        if norm not in _NORMS:
            raise ValueError(f"U-Net norm must be one of {sorted(_NORMS)}, got {norm!r}")
        if depth < 1 or base_channels < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("U-Net depth, base_channels and channel counts must be positive")
        self.dims = dims
        self.size_divisor = 2**depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(_ConvBlock(dims, previous, width, norm, residual))
            previous = width
        self.pool = _POOL[dims](kernel_size=2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(
                _CONV_TRANSPOSE[dims](widths[level + 1], widths[level], kernel_size=2, stride=2)
            )
            self.decoders.append(_ConvBlock(dims, 2 * widths[level], widths[level], norm, residual))
        self.head = _CONV[dims](widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for index, encoder in enumerate(self.encoders):
            x = encoder(x)
            if index < len(self.encoders) - 1:
                skips.append(x)
                x = self.pool(x)
        for upsample, decoder, skip in zip(
            self.upsamplers, self.decoders, reversed(skips), strict=True
        ):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


register_architecture("unet", UNet)

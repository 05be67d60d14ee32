"""Blocks whose inputs are lists of tensors (a U-Net decoder fed the encoder's skips)."""

from __future__ import annotations

import torch
from torch import nn

from core.quant import QuantConfig, quantize_model


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 3, padding=1, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skip = torch.relu(self.first(x))
        return [skip, torch.relu(self.second(skip))]


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.up(skips[1]), skips[0]], dim=1))


class _SkipNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = _Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def test_block_fed_a_list_of_skips_is_reconstructed() -> None:
    torch.manual_seed(0)
    model = _SkipNet().eval()
    calib = torch.randn(8, 1, 16, 16)
    config = QuantConfig(
        method="flexround", bits=3, iters=40, batch_size=4, first_last_bits=None,
        blocks=("encoder", "decoder"), device="cpu",
    )  # fmt: skip
    result = quantize_model(model, calib, config)
    assert result.blocks == ["encoder", "decoder"]
    before, after = result.block_losses["decoder"]
    assert after < before, "the decoder block, fed a list of skips, learned nothing"
    with torch.no_grad():
        error = ((result.model(calib) - model(calib)) ** 2).mean()
    assert torch.isfinite(error)

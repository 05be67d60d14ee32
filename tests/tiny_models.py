"""Tiny models built in memory for tests that need a real network but not a trained one."""

from __future__ import annotations

import torch

from core.models import LoadedModel, ModelSpec, UNet


def tiny_unet(name: str = "tiny") -> LoadedModel:
    """A seeded 2-D U-Net with one level and 4 base channels (2 classes: background, organ)."""
    torch.manual_seed(0)
    spec = ModelSpec(
        architecture="unet",
        class_names=("background", "organ"),
        arguments={"dims": 2, "depth": 1, "base_channels": 4},
        size_divisor=2,
        name=name,
    )
    return LoadedModel(UNet(1, 2, dims=2, depth=1, base_channels=4), spec)

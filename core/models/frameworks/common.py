"""Helpers every framework module shares: JSON files, window shapes, calibration patches.

Kept here so that :mod:`.nnunet` and :mod:`.monai_bundle` read their files, pad their inputs
and cut calibration patches the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "background_for_multilabel",
    "load_member_state",
    "padded_shape",
    "random_patches",
    "read_json",
    "stack_foreground_patches",
]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or non-object file is a ValueError.

    Raises
    ------
    ValueError
        In one line naming ``path`` and the problem.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def padded_shape(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with its trailing axes grown to at least ``patch`` (how sliding windows pad)."""
    lead = len(shape) - len(patch)
    return tuple(shape[:lead]) + tuple(max(s, p) for s, p in zip(shape[lead:], patch, strict=True))


def random_patches(
    volume: np.ndarray, patch: Sequence[int], count: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``count`` random windows ``(C, *patch)`` of a ``(C, ...)`` volume.

    The volume is zero-padded at the end of each spatial axis to at least ``patch`` first, so a
    volume smaller than the network's patch still gives full-sized inputs.
    """
    target = padded_shape(volume.shape[1:], patch)
    padded = np.pad(
        volume, [(0, 0)] + [(0, t - s) for s, t in zip(volume.shape[1:], target, strict=True)]
    )
    patches = []
    for _ in range(count):
        starts = [
            int(rng.integers(0, s - p + 1)) for s, p in zip(padded.shape[1:], patch, strict=True)
        ]
        window = tuple(slice(o, o + p) for o, p in zip(starts, patch, strict=True))
        patches.append(np.ascontiguousarray(padded[(slice(None), *window)]))
    return patches


def stack_foreground_patches(
    candidates: Sequence[np.ndarray], n: int, rng: np.random.Generator
) -> torch.Tensor:
    """``n`` of ``candidates`` stacked into a float batch, foreground-rich ones first.

    Uses :func:`core.models.calibration.choose_foreground_samples`, as segbench's own models
    do, so calibration sees anatomy rather than air.
    """
    from core.models.calibration import choose_foreground_samples

    chosen = choose_foreground_samples(candidates, n, rng)
    return torch.from_numpy(np.stack([candidates[i] for i in chosen])).float()


def background_for_multilabel(probs: np.ndarray) -> np.ndarray:
    """Sigmoid outputs with a background channel in front: ``1 -`` the largest probability.

    Channel ``c >= 1`` is then output ``c - 1``, and argmax or a threshold rule finds the voxels
    where some output is on, as segbench's decisions expect of a multilabel model.
    """
    background = 1.0 - probs.max(axis=0, keepdims=True)
    return np.concatenate([background, probs], axis=0)


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def load_member_state(network: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a member's weights into ``network``, BatchNorms folded away by quantization included.

    Quantization folds each BatchNorm into the layer before it and drops it, so a quantized
    member's state dict lacks those BatchNorms' entries. The framework's network still has them
    (and its own loader wants them), so they are set to the identity: running mean 0, running
    variance 1, bias 0 and weight ``sqrt(1 + eps)``, which cancels the normalisation.

    Raises
    ------
    ValueError
        Entries that fit no layer, or missing entries outside BatchNorms; ``where`` names the
        model in the message.
    """
    missing, unexpected = network.load_state_dict(state, strict=False)
    modules = dict(network.named_modules())
    owners = {key.rpartition(".")[0] for key in missing}
    stray = [
        key for key in missing if not isinstance(modules.get(key.rpartition(".")[0]), _BATCHNORMS)
    ]
    if unexpected or stray:
        problem = f"unexpected {unexpected[:3]}" if unexpected else f"missing {stray[:3]}"
        raise ValueError(f"{where}: the member's weights do not fit the network ({problem})")
    for name in owners:
        norm = modules[name]
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
        if norm.bias is not None:
            norm.bias.zero_()
        if norm.weight is not None:
            norm.weight.fill_(float(torch.sqrt(torch.tensor(1.0 + norm.eps))))

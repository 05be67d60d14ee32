"""How much memory running a model on an image will take, estimated before any of it is taken.

A picture just below Pillow's decompression-bomb limit (89 M pixels) decodes to a few hundred
megabytes, but a network's activations multiply that by the channels of its layers. The
estimate here runs the network once on a small probe input, adds up the bytes every layer
returns per input voxel, and scales that to the window the real inference will feed it. The
sum over all layers is more than the peak a forward pass holds (most layer outputs are freed as
it goes), so the estimate errs on the side of refusing a little early, never late.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["activation_bytes_per_voxel", "inference_bytes"]

#: Side of the probe input (2-D: 32 x 32, 3-D: 16 x 16 x 16), raised to the size divisor.
_PROBE_SIDE = {2: 32, 3: 16}


def activation_bytes_per_voxel(
    module: nn.Module, in_channels: int, dims: int, divisor: int = 1
) -> float | None:
    """Bytes all layer outputs take per input voxel, measured on a small probe input on the CPU.

    Returns None when the module cannot be probed this way (TorchScript modules take no hooks,
    a module may reject the probe's size): the caller then counts inputs and outputs only.
    """
    side = max(_PROBE_SIDE[dims], 2 * divisor)
    side = math.ceil(side / divisor) * divisor
    probe = torch.zeros((1, in_channels, *([side] * dims)))
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    try:
        # A copy: the caller's module may be running on another thread (the GUI quantizes
        # while it segments), and hooks added under it would change what that run calls.
        module = copy.deepcopy(module)
        leaves = [m for m in module.modules() if not any(True for _ in m.children())]
        handles = [leaf.register_forward_hook(count) for leaf in leaves]
    except (RuntimeError, AttributeError, TypeError, copy.Error):  # TorchScript: no hooks
        return None
    try:
        with torch.no_grad():
            module(probe)
    except Exception:  # noqa: BLE001 - an estimate only: a module that rejects the probe is run as is
        return None
    finally:
        for handle in handles:
            handle.remove()
    return total / side**dims


def inference_bytes(
    *,
    shape: Sequence[int],
    in_channels: int,
    num_classes: int,
    output_itemsize: int,
    window_voxels: int,
    per_voxel_activations: float | None,
) -> int:
    """Bytes a prediction holds at its peak: probabilities, model input, one batch's activations.

    Parameters
    ----------
    shape : sequence of int
        The image's spatial shape.
    in_channels, num_classes : int
        Of the model.
    output_itemsize : int
        Bytes per probability (2 for float16, 4 for float32).
    window_voxels : int
        Voxels fed to the network at once (a batch of slices or patches, padded).
    per_voxel_activations : float or None
        From :func:`activation_bytes_per_voxel`; None leaves the activations out.
    """
    voxels = math.prod(int(n) for n in shape)
    probabilities = num_classes * voxels * output_itemsize
    model_input = 2 * in_channels * voxels * 4  # the float32 input and its channel-first copy
    activations = (per_voxel_activations or 0.0) * window_voxels
    return int(probabilities + model_input + activations)

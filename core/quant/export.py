"""Writing and reading quantized weights as safetensors.

File layout (all tensors contiguous, CPU):

- ``q.<layer>.codes``: integer codes in ``[0, 2**bits - 1]`` in the layer's own weight layout,
  stored in the smallest integer dtype that holds them (uint8 for up to 8 bits);
- ``q.<layer>.s1`` and ``q.<layer>.zero_point``: float32, 1 value or one per output channel;
- ``a.<layer>.step``: float32 step of the layer's input fake quantization (with ``act_bits``);
- ``fp.<key>``: every other parameter and buffer of the quantized model (biases with BatchNorm
  folded in, skipped layers), so the rebuilt model is exact;
- metadata (strings): ``format``, ``method``, ``granularity``, ``bits`` (JSON layer -> bits),
  ``layers`` (JSON list), ``architecture``, ``folded_batchnorm`` (JSON pairs), ``config`` (JSON),
  ``transposed`` (JSON list of ConvTranspose layers, whose output channels run along dim 1),
  ``activations`` (JSON layer -> [bits, low, high] of the input fake quantization),
  ``shared_outputs`` (JSON producer layer -> the layer whose input grid quantizes its output;
  absent in files written before it existed, which then have none).

Dequantization is ``s1 * (codes - zero_point)`` per output channel in the canonical
``(Cout, Cin_per_group, *kernel)`` layout (see :mod:`core.quant.layout`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from core.quant.batchnorm import fold_batchnorm
from core.quant.layout import from_canonical, to_canonical
from core.quant.pipeline import (
    ActivationGrid,
    QuantizedWeight,
    QuantResult,
    attach_activation_quantizers,
    attach_output_quantizers,
)
from core.quant.quantizers import dequantize

__all__ = [
    "FORMAT",
    "save_quantized",
    "load_quantized",
    "read_integer_form",
    "read_metadata",
    "smallest_int_dtype",
]

FORMAT = "segbench-quant-v1"


def smallest_int_dtype(low: int, high: int) -> torch.dtype:
    """The narrowest torch integer dtype that holds every value in ``[low, high]``."""
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return dtype
    raise ValueError(f"no integer dtype holds the range [{low}, {high}]")


def save_quantized(result: QuantResult, path: str | Path) -> Path:
    """Write the integer codes, grids, remaining float tensors and metadata of ``result``.

    Parameters
    ----------
    result : QuantResult
        What :func:`core.quant.quantize_model` returned.
    path : str or Path
        Target ``.safetensors`` file (parent folders are created).

    Returns
    -------
    Path
    """
    path = Path(path)
    if not isinstance(result, QuantResult):
        raise ValueError(f"{path}: expected a QuantResult, got {type(result).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    for name, qw in result.weights.items():
        high = int(qw.codes.max()) if qw.codes.numel() else 0
        low = int(qw.codes.min()) if qw.codes.numel() else 0
        dtype = smallest_int_dtype(low, high)
        tensors[f"q.{name}.codes"] = qw.codes.to(dtype).contiguous()
        tensors[f"q.{name}.s1"] = qw.scale.float().contiguous()
        tensors[f"q.{name}.zero_point"] = qw.zero_point.float().contiguous()
    for name, grid in result.activations.items():
        tensors[f"a.{name}.step"] = torch.tensor(grid.step, dtype=torch.float32)
    quantized_keys = {f"{name}.weight" if name else "weight" for name in result.weights}
    for key, value in result.model.state_dict().items():
        if key not in quantized_keys:
            tensors[f"fp.{key}"] = value.detach().cpu().contiguous().clone()
    metadata = {
        "format": FORMAT,
        "method": result.config.method,
        "granularity": result.config.granularity,
        "symmetric": json.dumps(result.config.symmetric),
        "bits": json.dumps({n: qw.bits for n, qw in result.weights.items()}),
        "layers": json.dumps(list(result.weights)),
        "transposed": json.dumps([n for n, qw in result.weights.items() if qw.transposed]),
        "architecture": result.architecture,
        "folded_batchnorm": json.dumps([list(p) for p in result.folded_batchnorm]),
        "config": json.dumps(result.config.to_dict()),
        "activations": json.dumps(
            {n: [g.bits, g.low, g.high] for n, g in result.activations.items()}
        ),
        "shared_outputs": json.dumps(result.shared_outputs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata strings of a file written by :func:`save_quantized`."""
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of a quantized-weights file, or a ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: quantized weights file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a segbench quantized-weights file (format {FORMAT!r})")
    return metadata, tensors


def _activation_grids(
    metadata: dict[str, str], tensors: dict[str, torch.Tensor]
) -> dict[str, ActivationGrid]:
    return {
        name: ActivationGrid(float(tensors[f"a.{name}.step"]), low, high, bits)
        for name, (bits, low, high) in json.loads(metadata.get("activations", "{}")).items()
    }


class IntegerForm(NamedTuple):
    """What an integer runtime needs of a quantized model (the ONNX export reads it).

    Attributes
    ----------
    weights : dict of str to QuantizedWeight
        As ``QuantResult.weights`` (codes as int64).
    activations : dict of str to ActivationGrid
        As ``QuantResult.activations``.
    shared_outputs : dict of str to str
        As ``QuantResult.shared_outputs``.
    """

    weights: dict[str, QuantizedWeight]
    activations: dict[str, ActivationGrid]
    shared_outputs: dict[str, str]

    @classmethod
    def of(cls, result: QuantResult) -> IntegerForm:
        return cls(result.weights, result.activations, result.shared_outputs)


def _shared_outputs(metadata: dict[str, str], path: Path) -> dict[str, str]:
    """``QuantResult.shared_outputs`` as saved; files written before it existed have none.

    Raises
    ------
    ValueError
        Not a JSON object of quantized layer names (the file is named).
    """
    try:
        shared = json.loads(metadata.get("shared_outputs", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the shared_outputs metadata is not JSON ({error})") from None
    layers = set(json.loads(metadata["layers"]))
    if not isinstance(shared, dict) or not all(
        isinstance(name, str) and name in layers for pair in shared.items() for name in pair
    ):
        raise ValueError(
            f"{path}: the shared_outputs metadata must map quantized layers of the file to "
            "quantized layers"
        )
    return shared


def read_integer_form(path: str | Path) -> IntegerForm:
    """The codes, grids and input steps of a file written by :func:`save_quantized`."""
    metadata, tensors = _read_file(Path(path))
    bits = json.loads(metadata["bits"])
    transposed = set(json.loads(metadata.get("transposed", "[]")))
    weights = {
        name: QuantizedWeight(
            codes=tensors[f"q.{name}.codes"].to(torch.int64),
            scale=tensors[f"q.{name}.s1"].float().reshape(-1),
            zero_point=tensors[f"q.{name}.zero_point"].float().reshape(-1),
            bits=int(bits[name]),
            transposed=name in transposed,
        )
        for name in json.loads(metadata["layers"])
    }
    return IntegerForm(
        weights, _activation_grids(metadata, tensors), _shared_outputs(metadata, Path(path))
    )


def load_quantized(path: str | Path, base_model: nn.Module) -> nn.Module:
    """Rebuild the quantized model from ``path`` and the float model it was made from.

    The BatchNorms listed in the file are folded into a copy of ``base_model`` (they become
    ``nn.Identity``), the quantized weights are set to ``s1 * (codes - zero_point)`` and every
    other tensor is taken from the file (and the input fake quantization, if any, is attached as
    forward pre-hooks), so the outputs equal ``QuantResult.model``'s exactly.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save_quantized`.
    base_model : nn.Module
        The float model that was quantized (or a ``LoadedModel``); not modified.

    Returns
    -------
    nn.Module
        In eval mode, on the CPU.
    """
    path = Path(path)
    metadata, tensors = _read_file(path)
    module = getattr(base_model, "module", base_model)
    model = copy.deepcopy(module).cpu().eval()
    fold_batchnorm(model)
    expected = {tuple(p) for p in json.loads(metadata["folded_batchnorm"])}
    modules = dict(model.named_modules())
    for layer_name, bn_name in expected:
        if layer_name not in modules or not isinstance(modules.get(bn_name), nn.Identity):
            raise ValueError(
                f"{path}: BatchNorm {bn_name!r} was folded into {layer_name!r} when quantizing, "
                "but the given base model does not fold the same way"
            )
    state = {key[3:]: value for key, value in tensors.items() if key.startswith("fp.")}
    for name in json.loads(metadata["layers"]):
        if name not in modules:
            raise ValueError(f"{path}: layer {name!r} does not exist in the base model")
        layer = modules[name]
        codes = tensors[f"q.{name}.codes"]
        if tuple(codes.shape) != tuple(layer.weight.shape):
            raise ValueError(
                f"{path}: layer {name!r} has weight shape {tuple(layer.weight.shape)} in the base "
                f"model but {tuple(codes.shape)} in the file"
            )
        canonical = to_canonical(codes.to(torch.int64), layer)
        shape = (-1, *([1] * (canonical.dim() - 1)))
        scale = tensors[f"q.{name}.s1"]
        zero = tensors[f"q.{name}.zero_point"]
        if scale.numel() == 1:
            scale, zero = scale.reshape(()), zero.reshape(())
        else:
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        state[f"{name}.weight" if name else "weight"] = from_canonical(
            dequantize(canonical, scale, zero), layer
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: the file does not match the base model (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    grids = _activation_grids(metadata, tensors)
    attach_activation_quantizers(model, grids)
    attach_output_quantizers(model, _shared_outputs(metadata, path), grids)
    return model.eval()

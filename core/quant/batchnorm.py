"""Folding BatchNorm layers into the convolution or linear layer that feeds them.

Rules (see docs/FLEXROUND_IMPL.md):

- A BatchNorm is folded when its only input is the output of a quantizable layer (Linear, Conv,
  ConvTranspose) that feeds nothing else, both modules are called exactly once, the channel
  counts match, and the BatchNorm tracks running statistics. The graph comes from
  ``torch.fx.symbolic_trace``; models fx cannot trace fall back to adjacency inside
  ``nn.Sequential`` containers (a layer directly followed by a BatchNorm).
- Folding uses the running statistics (eval-mode BatchNorm):
  ``w' = w * gamma / sqrt(var + eps)`` per output channel,
  ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BatchNorm becomes ``nn.Identity``.
- Folding happens on the CPU in float32 before quantization, so the quantized weights include
  the BatchNorm scale (as any integer runtime needs) and the folded model is deterministic.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from core.quant.layout import from_canonical, is_quantizable, out_channels, to_canonical

__all__ = ["find_batchnorm_pairs", "fold_batchnorm"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _pairs_from_graph(model: nn.Module) -> list[tuple[str, str]]:
    graph = fx.symbolic_trace(model).graph
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BN_TYPES):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        if not is_quantizable(modules[source.target]) or len(source.users) != 1:
            continue
        if calls[source.target] != 1 or calls[node.target] != 1:
            continue
        pairs.append((str(source.target), str(node.target)))
    return pairs


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:], strict=False):
            if is_quantizable(a) and isinstance(b, _BN_TYPES):
                dot = f"{prefix}." if prefix else ""
                pairs.append((dot + name_a, dot + name_b))
    return pairs


def find_batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names ``(layer, batchnorm)`` of the BatchNorms that can be folded into their layer."""
    try:
        candidates = _pairs_from_graph(model)
    except Exception:  # fx fails in many ways on dynamic models; fall back
        candidates = _pairs_from_sequentials(model)
    modules = dict(model.named_modules())
    pairs = []
    for layer_name, bn_name in candidates:
        layer, bn = modules[layer_name], modules[bn_name]
        if bn.running_mean is None or bn.num_features != out_channels(layer):
            continue
        pairs.append((layer_name, bn_name))
    return pairs


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable BatchNorm of ``model`` in place.

    Returns
    -------
    list of (str, str)
        The ``(layer, batchnorm)`` names that were folded; each BatchNorm is now ``nn.Identity``.
    """
    pairs = find_batchnorm_pairs(model)
    modules = dict(model.named_modules())
    for layer_name, bn_name in pairs:
        layer, bn = modules[layer_name], modules[bn_name]
        std = torch.sqrt(bn.running_var.float() + bn.eps)
        gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        weight = to_canonical(layer.weight.float(), layer)
        shape = (-1, *([1] * (weight.dim() - 1)))
        layer.weight.copy_(from_canonical(weight * factor.reshape(shape), layer))
        bias = layer.bias.float() if layer.bias is not None else torch.zeros_like(std)
        new_bias = (bias - bn.running_mean.float()) * factor + beta
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
        else:
            layer.bias.copy_(new_bias)
        _set_submodule(model, bn_name, nn.Identity())
    return pairs

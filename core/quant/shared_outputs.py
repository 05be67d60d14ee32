"""Layer outputs that several quantized layers read: quantize them once, where they are made.

With quantized inputs (W*A8), every quantized layer fake-quantizes its own input with its own
learned step. A tensor that several layers read, such as a U-Net encoder's output (read by the
next encoder through the pooling and by the decoder through the skip connection), is then
quantized twice, with two steps. An integer runtime has no single output step for the layer
that makes it, so ONNX Runtime ran those convolutions in float, 29 % of the W8A8 time on the
CT demo (docs/DEPLOY_IMPL.md).

The fix quantizes such an output once, at its producer, with the step of the one reader that
reads it directly (through order-preserving operations only: pooling, identity, dropout). For
that reader nothing changes, since ``Q(maxpool(Q(x))) == maxpool(Q(x))``. Readers that reach
it through a concatenation quantize the concatenation with their own step as before, now of
an already quantized value (what an integer runtime's concatenation does when its inputs
have other steps). A ReLU between the producer and the tensor is no obstacle: it commutes
with any quantizer whose grid holds 0, so the output can be quantized before it.

Found on the ``torch.fx`` graph of the (BatchNorm-folded) model, as the BatchNorm folding
does. Models fx cannot trace get no shared outputs: their W*A8 variant is as before.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional

__all__ = ["find_shared_outputs"]

#: Modules and functions between a producer and its output tensor that commute with a
#: quantizer whose grid holds 0 (and have one tensor input).
_ELEMENTWISE_MODULES = (nn.Identity, nn.ReLU, nn.Dropout, nn.Dropout2d, nn.Dropout3d)
_ELEMENTWISE_FUNCTIONS = {torch.relu, functional.relu, functional.dropout}

#: Order-preserving single-input modules and functions on the way from a tensor to a reader:
#: ``Q(op(x)) == op(Q(x))`` for a monotone quantizer.
_PATH_MODULES = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
)
_PATH_FUNCTIONS = {
    functional.max_pool1d,
    functional.max_pool2d,
    functional.max_pool3d,
    functional.dropout,
}
_CONCATENATIONS = {torch.cat, torch.concat}


def _is(node: fx.Node, modules: dict[str, nn.Module], kinds: tuple, functions: set) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], kinds)
    return node.op == "call_function" and node.target in functions


def _readers(
    node: fx.Node,
    modules: dict[str, nn.Module],
    layers: set[str],
    through_concat: bool,
    found: list[tuple[str, bool]],
) -> bool:
    """Add the quantized layers reading ``node`` to ``found`` as ``(name, through_concat)``.

    Returns False when some use of ``node`` leads anywhere else (then quantizing it would
    change that use)."""
    for user in node.users:
        if user.op == "call_module" and str(user.target) in layers:
            if user.args[:1] != (node,) or len(user.all_input_nodes) != 1:
                return False
            found.append((str(user.target), through_concat))
        elif _is(user, modules, _PATH_MODULES, _PATH_FUNCTIONS) and user.args[:1] == (node,):
            if not _readers(user, modules, layers, through_concat, found):
                return False
        elif user.op == "call_function" and user.target in _CONCATENATIONS:
            if not _readers(user, modules, layers, True, found):
                return False
        else:
            return False
    return True


def _producer(node: fx.Node, modules: dict[str, nn.Module], layers: set[str]) -> str | None:
    """The quantized layer whose output becomes ``node`` through elementwise steps only, each
    read by nothing else; None if there is none."""
    current = node
    while True:
        if current.op == "call_module" and str(current.target) in layers:
            return str(current.target)
        if not _is(current, modules, _ELEMENTWISE_MODULES, _ELEMENTWISE_FUNCTIONS):
            return None
        source = current.args[0] if current.args else None
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            return None
        current = source


def find_shared_outputs(model: nn.Module, layers: list[str]) -> dict[str, str]:
    """Producer layer -> the layer whose input step quantizes the producer's output.

    Parameters
    ----------
    model : nn.Module
        The model as it will be quantized (BatchNorm folded, so a folded norm is an Identity).
    layers : list of str
        The quantized layers, each with a learned input step.

    Returns
    -------
    dict of str to str
        Only outputs read by at least two of ``layers``, used by nothing else, with exactly
        one direct reader (not through a concatenation); empty when fx cannot trace ``model``
        or a layer runs more than once.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # fx fails in many ways on dynamic models; then nothing is shared
        return {}
    modules = dict(model.named_modules())
    names = set(layers)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    if any(calls.get(name, 0) > 1 for name in names):
        return {}  # a hook on a layer that runs twice would quantize both of its outputs
    shared: dict[str, str] = {}
    for node in graph.nodes:
        if len(node.users) == 0:
            continue
        producer = _producer(node, modules, names)
        if producer is None or producer in shared:
            continue
        found: list[tuple[str, bool]] = []
        if not _readers(node, modules, names, False, found) or len(found) < 2:
            continue
        direct = {name for name, through_concat in found if not through_concat}
        if len(direct) == 1 and producer not in direct:
            shared[producer] = direct.pop()
    return shared

"""Rewriting an exported float ONNX graph into QDQ form with the quantizer's exact integers.

The float network is exported first (its quantized layers hold the dequantized weights
``s1 * (codes - z)``); this module then replaces each quantized weight initializer by

* an integer initializer holding the quantizer's codes as they are (uint8, or UINT4 for 4 bits
  and below where the opset has it),
* its scale ``s1`` and zero point ``z`` (one value, or one per output channel with ``axis``),
* a ``DequantizeLinear`` node whose output keeps the old initializer's name, so every consumer
  of the weight is untouched,

and, for layers with quantized inputs (W*A8), puts a ``QuantizeLinear`` / ``DequantizeLinear``
pair with the learned step on the layer node's data input. ONNX Runtime fuses
``DQ -> Conv -> Q`` into integer kernels when both sides are quantized.

Written with the plain ``onnx`` API because the quantizer's codes and steps already exist:
onnxruntime.quantization would recompute its own grids from calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.quant.pipeline import ActivationGrid, QuantizedWeight

__all__ = ["INT4_OPSET", "QdqReport", "insert_qdq"]

#: First opset with the INT4/UINT4 tensor types (QuantizeLinear/DequantizeLinear 21).
INT4_OPSET = 21


@dataclass
class QdqReport:
    """What the rewrite did, layer by layer (the export summary lists it).

    Attributes
    ----------
    integer_layers : dict of str to str
        Layer name -> stored integer type of its weight (``"uint8"``, ``"uint4"``).
    activation_layers : dict of str to str
        Layer name -> integer type of its input's QuantizeLinear.
    float_layers : dict of str to str
        Quantized layers whose weight stayed float in the file, with the reason.
    notes : list of str
        Other things the reader of the summary should know (4-bit weights widened to 8 bits).
    code_offsets : dict of str to int
        Layers with symmetric grids, stored signed: the file holds ``code - offset`` with zero
        point 0 (``offset = 2**(bits-1)``).
    """

    integer_layers: dict[str, str] = field(default_factory=dict)
    activation_layers: dict[str, str] = field(default_factory=dict)
    float_layers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    code_offsets: dict[str, int] = field(default_factory=dict)


def _integer_type(bits: int, signed: bool, opset: int) -> tuple[int, str]:
    """The ONNX integer type for codes of ``bits`` bits, and its name."""
    if bits <= 4 and opset >= INT4_OPSET:
        return (TensorProto.INT4, "int4") if signed else (TensorProto.UINT4, "uint4")
    return (TensorProto.INT8, "int8") if signed else (TensorProto.UINT8, "uint8")


#: numpy dtype of each integer type (ml_dtypes, an onnx dependency, has the 4-bit ones).
_NUMPY_TYPES = {
    TensorProto.INT4: ml_dtypes.int4,
    TensorProto.UINT4: ml_dtypes.uint4,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
}


def _tensor(name: str, values: np.ndarray, onnx_type: int) -> TensorProto:
    """An initializer of ``onnx_type`` holding ``values`` exactly (raw bytes, 4-bit packed)."""
    return numpy_helper.from_array(np.asarray(values).astype(_NUMPY_TYPES[onnx_type]), name)


def _weight_axis(weight: QuantizedWeight, groups: int) -> tuple[int | None, str | None]:
    """The weight axis that holds the output channels, or a reason it cannot be expressed."""
    if weight.scale.numel() == 1:
        return None, None
    if not weight.transposed:
        return 0, None
    if groups == 1:
        return 1, None
    # A grouped ConvTranspose stores (Cin, Cout/g, k): output channel g*Cout/g + j sits at a
    # different (row block, column) pair per group, which no single DequantizeLinear axis spans.
    return None, "grouped ConvTranspose with per-channel scales has no single channel axis"


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _weight_key(layer: str) -> str:
    """The name of ``layer``'s weight in the exported graph (``""`` is the whole model)."""
    return f"{layer}.weight" if layer else "weight"


def _layer_nodes(graph: onnx.GraphProto, weight_key: str) -> list[onnx.NodeProto]:
    """The nodes that use the weight ``weight_key`` as a weight (not as their data input)."""
    return [node for node in _consumers(graph, weight_key) if node.input[0] != weight_key]


def _groups(node: onnx.NodeProto) -> int:
    for attribute in node.attribute:
        if attribute.name == "group":
            return int(attribute.i)
    return 1


def _replace_weight(
    graph: onnx.GraphProto,
    initializers: dict[str, TensorProto],
    key: str,
    weight: QuantizedWeight,
    opset: int,
    report: QdqReport,
    layer: str,
) -> list[onnx.NodeProto]:
    """Swap the float initializer ``key`` for integer codes + DequantizeLinear; returns the node."""
    users = _consumers(graph, key)
    groups = _groups(users[0]) if users else 1
    axis, problem = _weight_axis(weight, groups)
    if problem:
        report.float_layers[layer] = problem
        return []
    codes = weight.codes.cpu().numpy().astype(np.int64)
    if int(codes.min()) < 0 or int(codes.max()) > 2**weight.bits - 1:
        report.float_layers[layer] = "codes outside the unsigned range of their bit width"
        return []
    scale = weight.scale.detach().cpu().float().numpy().reshape(-1)
    zero = weight.zero_point.detach().cpu().numpy().reshape(-1).astype(np.int64)
    # A symmetric grid (zero point 2**(bits-1) everywhere) is stored signed: code - 2**(bits-1)
    # with zero point 0, the same weights; ONNX Runtime's fast integer kernels (u8 inputs times
    # s8 weights, VNNI) need signed weights with a zero point of 0.
    offset = 2 ** (weight.bits - 1) if bool(np.all(zero == 2 ** (weight.bits - 1))) else 0
    codes, zero = codes - offset, zero - offset
    onnx_type, type_name = _integer_type(weight.bits, signed=offset > 0, opset=opset)
    if offset:
        report.code_offsets[layer] = offset
    if axis is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    graph.initializer.remove(initializers.pop(key))
    graph.initializer.extend(
        [
            _tensor(f"{key}_quantized", codes, onnx_type),
            numpy_helper.from_array(scale.astype(np.float32), f"{key}_scale"),
            _tensor(f"{key}_zero_point", zero, onnx_type),
        ]
    )
    extra = {"axis": axis} if axis is not None else {}
    report.integer_layers[layer] = type_name
    return [
        helper.make_node(
            "DequantizeLinear",
            [f"{key}_quantized", f"{key}_scale", f"{key}_zero_point"],
            [key],
            name=f"{key}_DequantizeLinear",
            **extra,
        )
    ]


def _activation_nodes(
    graph: onnx.GraphProto,
    weight_key: str,
    grid: ActivationGrid,
    opset: int,
    report: QdqReport,
    layer: str,
) -> list[onnx.NodeProto]:
    """A QuantizeLinear/DequantizeLinear pair on the data input of the layer using ``weight_key``.

    The pair computes ``(saturate(round(x / step)) - 0) * step``, the learned fake
    quantization ``clamp(round(x / step), low, high) * step`` (both round half to even), when
    the integer type's range is ``[low, high]``; other bit widths clip first.
    """
    users = _layer_nodes(graph, weight_key)
    if len(users) != 1:
        report.notes.append(f"{layer}: input kept in float (its layer node was not found)")
        return []
    node = users[0]
    source = node.input[0]
    signed = grid.low < 0
    onnx_type, type_name = _integer_type(grid.bits if grid.bits <= 4 else 8, signed, opset)
    low, high = (-128, 127) if type_name == "int8" else (0, 255)
    if type_name in ("int4", "uint4"):
        low, high = (-8, 7) if signed else (0, 15)
    prefix = f"{weight_key}_input"
    step = np.float32(grid.step)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(step, dtype=np.float32), f"{prefix}_scale"),
            _tensor(f"{prefix}_zero_point", np.array(0, dtype=np.int64), onnx_type),
        ]
    )
    nodes = []
    quantize_input = source
    if (grid.low, grid.high) != (low, high):
        # A range narrower than the stored type (5-7 bits, or 4 bits before opset 21): clip to it.
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(step * grid.low, np.float32), f"{prefix}_min"),
                numpy_helper.from_array(np.array(step * grid.high, np.float32), f"{prefix}_max"),
            ]
        )
        quantize_input = f"{prefix}_clipped"
        nodes.append(
            helper.make_node(
                "Clip",
                [source, f"{prefix}_min", f"{prefix}_max"],
                [quantize_input],
                name=f"{prefix}_Clip",
            )
        )
        report.notes.append(
            f"{layer}: {grid.bits}-bit input stored as {type_name} with a Clip to "
            f"[{grid.low}, {grid.high}] steps"
        )
    nodes += [
        helper.make_node(
            "QuantizeLinear",
            [quantize_input, f"{prefix}_scale", f"{prefix}_zero_point"],
            [f"{prefix}_quantized"],
            name=f"{prefix}_QuantizeLinear",
        ),
        helper.make_node(
            "DequantizeLinear",
            [f"{prefix}_quantized", f"{prefix}_scale", f"{prefix}_zero_point"],
            [f"{prefix}_dequantized"],
            name=f"{prefix}_DequantizeLinear",
        ),
    ]
    node.input[0] = f"{prefix}_dequantized"
    report.activation_layers[layer] = type_name
    return nodes


def insert_qdq(
    model: onnx.ModelProto,
    weights: dict[str, QuantizedWeight],
    activations: dict[str, ActivationGrid],
    opset: int,
    *,
    shared_outputs: dict[str, str] | None = None,
) -> QdqReport:
    """Rewrite ``model`` in place: integer weights with DequantizeLinear, QDQ on inputs.

    Parameters
    ----------
    model : onnx.ModelProto
        The exported float network whose weight initializers are named ``<layer>.weight``.
    weights : dict of str to QuantizedWeight
        The quantizer's codes and grids per layer.
    activations : dict of str to ActivationGrid
        The learned input steps per layer (empty for weight-only variants).
    opset : int
        The model's default-domain opset (decides whether 4-bit types exist).
    shared_outputs : dict of str to str, optional
        Producer layer -> the layer whose input quantization also quantizes the producer's
        output (``QuantResult.shared_outputs``).

    Returns
    -------
    QdqReport
    """
    graph = model.graph
    report = QdqReport()
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    for layer, weight in weights.items():
        key = _weight_key(layer)
        if key not in initializers:
            report.float_layers[layer] = (
                "its weight is not an initializer of the exported graph (the forward pass "
                "does not use it, or computes it)"
            )
            continue
        stored = numpy_helper.to_array(initializers[key])
        if tuple(stored.shape) != tuple(weight.codes.shape):
            report.float_layers[layer] = "the graph stores its weight in another layout"
            continue
        new_nodes += _replace_weight(graph, initializers, key, weight, opset, report, layer)
        if layer in activations:
            new_nodes += _activation_nodes(graph, key, activations[layer], opset, report, layer)
    for layer in activations:
        if layer not in report.activation_layers and layer not in report.float_layers:
            report.notes.append(f"{layer}: input kept in float")
    if any(bits <= 4 for bits in (w.bits for w in weights.values())) and opset < INT4_OPSET:
        report.notes.append(
            f"weights of 4 bits and below stored as uint8: opset {opset} has no 4-bit type "
            f"(use --opset {INT4_OPSET} or later)"
        )
    # Dequantize nodes first: a valid topological order, since they only read initializers
    # and graph inputs come before every node anyway.
    _insert_nodes(graph, new_nodes)
    # Both need the input QuantizeLinear nodes in the graph: they are what they copy.
    _insert_nodes(graph, _quantize_shared_outputs(graph, shared_outputs or {}, report))
    _insert_nodes(graph, _quantize_concat_inputs(graph, report))
    return report


def _insert_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Add ``nodes`` to ``graph`` and put every node in a valid order."""
    if not nodes:
        return
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(_topological(nodes + existing, graph))


def _quantize_shared_outputs(
    graph: onnx.GraphProto, shared_outputs: dict[str, str], report: QdqReport
) -> list[onnx.NodeProto]:
    """Quantize each shared output where it is produced, with its direct reader's nodes.

    The torch variant quantizes these outputs with forward hooks
    (:mod:`core.quant.shared_outputs`); this puts a copy of the reader's own
    (Clip,) QuantizeLinear, DequantizeLinear after the producer (after its ReLU, which commutes
    with them), read by everything that read the output. The reader's own pair, after the
    pooling, then changes nothing, and ONNX Runtime can give the producer an integer output.
    """
    nodes: list[onnx.NodeProto] = []
    by_name = {node.name: node for node in graph.node}
    for producer, reader in shared_outputs.items():
        prefix = f"{_weight_key(reader)}_input"  # as _activation_nodes names the reader's nodes
        quantize = by_name.get(f"{prefix}_QuantizeLinear")
        layer_nodes = _layer_nodes(graph, _weight_key(producer))
        if quantize is None or len(layer_nodes) != 1:
            report.notes.append(
                f"{producer}: its output is quantized in the torch variant but could not be in "
                "the file (its layer or its reader's input quantization is not in the graph); "
                "the runtime's numbers differ from the variant's there"
            )
            continue
        output = layer_nodes[0].output[0]
        readers = _consumers(graph, output)
        if len(readers) == 1 and readers[0].op_type == "Relu":
            output = readers[0].output[0]
            readers = _consumers(graph, output)
        copies = [quantize, by_name[f"{prefix}_DequantizeLinear"]]
        if f"{prefix}_Clip" in by_name:
            copies.insert(0, by_name[f"{prefix}_Clip"])
        source = output
        for original in copies:
            node = onnx.NodeProto()
            node.CopyFrom(original)
            node.name = f"{output}_shared_{original.op_type}"
            node.input[0] = source
            node.output[0] = f"{output}_shared_{original.op_type}_out"
            source = node.output[0]
            nodes.append(node)
        for node in readers:
            node.input[:] = [source if name == output else name for name in node.input]
        report.notes.append(
            f"{producer}: output quantized once where it is made, with the input step of "
            f"{reader} (which reads it directly); other readers requantize it with their own"
        )
    return nodes


def _quantize_concat_inputs(graph: onnx.GraphProto, report: QdqReport) -> list[onnx.NodeProto]:
    """Copy the QuantizeLinear that reads a Concat onto each of the Concat's inputs.

    ``Q(concat(a, b)) == concat(Q(a), Q(b))`` for one scale and zero point, and quantizing an
    already quantized value again gives it back, so the network computes exactly what it did.
    ONNX Runtime then fuses the Concat into ``QLinearConcat`` on integers (the U-Net's skip
    connections): W8A8 on the CT demo went from 0.703x to 0.681x ORT FP32 on one thread and
    from 0.879x to 0.840x on two. A Clip between the two (5-7-bit inputs) leaves it as it is.
    """
    nodes: list[onnx.NodeProto] = []
    for concat in [node for node in graph.node if node.op_type == "Concat"]:
        readers = _consumers(graph, concat.output[0])
        if len(readers) != 1 or readers[0].op_type != "QuantizeLinear":
            continue
        _, scale, zero_point = readers[0].input
        inputs = []
        for index, source in enumerate(concat.input):
            prefix = f"{concat.output[0]}_input{index}"
            nodes += [
                helper.make_node(
                    "QuantizeLinear",
                    [source, scale, zero_point],
                    [f"{prefix}_quantized"],
                    name=f"{prefix}_QuantizeLinear",
                ),
                helper.make_node(
                    "DequantizeLinear",
                    [f"{prefix}_quantized", scale, zero_point],
                    [f"{prefix}_dequantized"],
                    name=f"{prefix}_DequantizeLinear",
                ),
            ]
            inputs.append(f"{prefix}_dequantized")
        concat.input[:] = inputs
        report.notes.append(
            f"{concat.name or concat.output[0]}: inputs quantized with the step of the layer "
            "that reads it (the same numbers; lets the runtime concatenate integers)"
        )
    return nodes


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """``nodes`` in an order where every input is produced before it is read."""
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        for node in list(pending):
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                pending.remove(node)
                progressed = True
        if not progressed:
            raise ValueError("the rewritten ONNX graph has a cycle or a missing input")
    return ordered

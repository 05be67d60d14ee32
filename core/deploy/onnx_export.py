"""Exporting a model (FP32 or a quantized variant) to one ONNX file that ONNX Runtime runs.

The network is exported in float with ``torch.onnx.export(dynamo=True)`` (the maintained
torch.export-based exporter; the TorchScript one is deprecated since torch 2.9), with dynamic
batch and spatial axes. A quantized variant is exported without its input fake quantization
and then rewritten by :func:`core.deploy.qdq.insert_qdq`: integer weights with
DequantizeLinear, QuantizeLinear/DequantizeLinear pairs on quantized inputs. The model spec
(preprocessing, classes, colours, mode, patch size, quantization) and the export summary travel
in ``metadata_props`` so :func:`core.deploy.onnx_runtime.open_onnx_model` reopens the file as
a model.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import warnings
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from core.atomic_files import atomic_write
from core.deploy.qdq import INT4_OPSET, QdqReport, insert_qdq
from core.models.loaded import LoadedModel
from core.quant.export import IntegerForm, read_integer_form
from core.quant.quantizers import ActivationFakeQuant

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_KEY",
    "MEMBER_KEY",
    "MIN_OPSET",
    "SPEC_KEY",
    "ExportSummary",
    "build_member_onnx",
    "build_onnx",
    "export_onnx",
    "precision_label",
]

#: Opset 21 is the first with INT4/UINT4, which 4-bit weights need to be stored in 4 bits.
DEFAULT_OPSET = INT4_OPSET
#: Opset 13 is the first with per-axis QuantizeLinear/DequantizeLinear.
MIN_OPSET = 13
#: ``metadata_props`` keys: the model spec (JSON) and the export summary (JSON).
SPEC_KEY = "segbench.spec"
EXPORT_KEY = "segbench.export"
#: ``metadata_props`` key of a framework model's member network: its framework and name (JSON).
MEMBER_KEY = "segbench.member"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass
class ExportSummary:
    """What an export wrote, in words and figures.

    Attributes
    ----------
    model : str
        Display name of the exported model.
    precision : str
        ``"FP32"`` or the variant's label (``"rtn W8A8"``).
    opset : int
    bytes : int
        Size of the ONNX file (0 until written).
    integer_layers, activation_layers, float_layers : dict of str to str
        See :class:`core.deploy.qdq.QdqReport`.
    notes : list of str
    dynamic_axes : list of str
        Input axes left dynamic (``"batch"``, ``"spatial 1"`` ...).
    code_offsets : dict of str to int
        Symmetric layers stored signed: file value = code - offset, zero point 0.
    """

    model: str
    precision: str
    opset: int
    bytes: int = 0
    integer_layers: dict[str, str] = field(default_factory=dict)
    activation_layers: dict[str, str] = field(default_factory=dict)
    float_layers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dynamic_axes: list[str] = field(default_factory=list)
    code_offsets: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The summary as sentences, one per line."""
        kinds = sorted(set(self.integer_layers.values()))
        lines = [
            f"{self.model}: {self.precision}, opset {self.opset}, "
            f"{self.bytes / 1e6:.3f} MB"
            + (f", dynamic {', '.join(self.dynamic_axes)}" if self.dynamic_axes else ""),
        ]
        if self.integer_layers:
            lines.append(
                f"{len(self.integer_layers)} layer(s) with integer weights ({', '.join(kinds)}) "
                "and DequantizeLinear"
            )
        if self.activation_layers:
            lines.append(
                f"{len(self.activation_layers)} layer input(s) with QuantizeLinear/"
                "DequantizeLinear pairs"
            )
        if self.code_offsets:
            lines.append(
                f"{len(self.code_offsets)} symmetric layer(s) stored signed: code - 2^(bits-1), "
                "zero point 0"
            )
        lines += [f"kept in float: {name} ({why})" for name, why in self.float_layers.items()]
        lines += self.notes
        return lines


def _integer_form(model: LoadedModel, quant_result: Any) -> IntegerForm | None:
    """The quantizer's codes and steps: from the run's result, else the variant's own file."""
    if quant_result is not None:
        return IntegerForm.of(quant_result)
    if not model.is_quantized:
        return None
    from core.models.loading import QUANTIZED_WEIGHTS_FILE

    source = model.path / QUANTIZED_WEIGHTS_FILE if model.path is not None else None
    if source is None or not source.is_file():
        raise ValueError(
            f"{model.name}: a quantized variant without its integer codes (no QuantResult and "
            f"no {QUANTIZED_WEIGHTS_FILE}); save or re-create it first"
        )
    return read_integer_form(source)


def _float_network(module: nn.Module) -> nn.Module:
    """A copy of ``module`` without the fake quantization hooks (QDQ replaces them)."""
    network = copy.deepcopy(module).cpu().eval()
    for layer in network.modules():
        for hooks in (layer._forward_pre_hooks, layer._forward_hooks):
            for key, hook in list(hooks.items()):
                if isinstance(hook, ActivationFakeQuant):  # OutputFakeQuant is one too
                    del hooks[key]
    return network


def _example_input(model: LoadedModel) -> torch.Tensor:
    """A batch of 2 inputs at the patch size (or 64 / 32 per side), a multiple of the divisor.

    torch.export specialises axes of size 0 or 1, so neither the batch nor a side is 1.
    """
    spec = model.spec
    divisor = max(spec.size_divisor, int(getattr(model.module, "size_divisor", 1)))
    sides = spec.patch_size or [64 if spec.spatial_dims == 2 else 32] * spec.spatial_dims
    sides = [max(2 * divisor, math.ceil(side / divisor) * divisor, 2) for side in sides]
    return torch.zeros((2, spec.in_channels, *sides))


def _dynamic_axes(proto: onnx.ModelProto) -> list[str]:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    names = ["batch", "channels", *(f"spatial {i}" for i in range(1, len(dims) - 1))]
    return [name for name, dim in zip(names, dims, strict=False) if dim.dim_param]


def _export_float(network: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    auto = torch.export.Dim.AUTO
    axes = {0: auto, **{axis: auto for axis in range(2, example.dim())}}
    # The exporter prints its steps and logs warnings about opset conversions: keep the
    # terminal (and the GUI's stdout) quiet, errors still raise.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            network,
            (example,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=(axes,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def _export_or_explain(
    network: nn.Module, example: torch.Tensor, opset: int, model_name: str, part: str
) -> onnx.ModelProto:
    """:func:`_export_float`, or a ValueError naming the model, the part and the reason."""
    try:
        return _export_float(network, example, opset)
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; say which
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ValueError(
            f"{model_name}: torch.onnx.export could not export {part} "
            f"({type(error).__name__}: {reason})"
        ) from error


def _member_integer_forms(model: LoadedModel, quant_result: Any) -> list[IntegerForm | None]:
    """Each member's codes and steps: from the run's results (the first member's result and
    its ``members``), else each member folder's ``quantized.safetensors``; None for float."""
    framework = model.framework
    count = len(framework.member_names())
    if quant_result is not None:
        results = [quant_result, *quant_result.members]
        if len(results) != count:
            raise ValueError(
                f"{model.name}: the quantization run has {len(results)} result(s) for "
                f"{count} member network(s)"
            )
        return [IntegerForm.of(result) for result in results]
    if not model.is_quantized:
        return [None] * count
    from core.models.loading import QUANTIZED_WEIGHTS_FILE

    if model.path is None:
        raise ValueError(
            f"{model.name}: a quantized variant without its integer codes (no QuantResult and "
            f"no {QUANTIZED_WEIGHTS_FILE}); save or re-create it first"
        )
    sources = [folder / QUANTIZED_WEIGHTS_FILE for folder in framework.member_folders(model.path)]
    missing = [str(source) for source in sources if not source.is_file()]
    if missing:
        raise ValueError(f"{model.name}: no integer codes in {', '.join(missing)}")
    return [read_integer_form(source) for source in sources]


def _use_first_parameter_names(proto: onnx.ModelProto, network: nn.Module) -> None:
    """Rename initializers to each tensor's first name in ``network``.

    A module reachable by several paths (nnU-Net's decoder holds its encoder, and each of its
    convolution blocks lists its conv twice) has one tensor under several names. torch.export
    may name the initializer by any of them; the quantizer names a layer by the first one
    (``named_modules`` order), which :func:`core.deploy.qdq.insert_qdq` looks for.
    """
    first_names: dict[int, str] = {}
    renames: dict[str, str] = {}
    named = [
        *network.named_parameters(remove_duplicate=False),
        *network.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        first = first_names.setdefault(id(tensor), name)
        if name != first:
            renames[name] = first
    graph = proto.graph
    present = {tensor.name for tensor in graph.initializer}
    renames = {old: new for old, new in renames.items() if old in present and new not in present}
    if not renames:
        return
    for tensor in graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renames:
                node.input[index] = renames[name]
    for value in (*graph.input, *graph.value_info):
        value.name = renames.get(value.name, value.name)


def _network_onnx(
    network: nn.Module,
    example: torch.Tensor,
    form: IntegerForm | None,
    opset: int,
    *,
    model_name: str,
    part: str,
    precision: str,
) -> tuple[onnx.ModelProto, ExportSummary]:
    """One network in ONNX (integer weights and QDQ activations when ``form`` is given) and
    its summary; the metadata is the caller's to add."""
    network = _float_network(network)
    proto = _export_or_explain(network, example, opset, model_name, part)
    _use_first_parameter_names(proto, network)
    report = QdqReport()
    if form is not None:
        report = insert_qdq(
            proto, form.weights, form.activations, opset, shared_outputs=form.shared_outputs
        )
    summary = ExportSummary(
        model=model_name,
        precision=precision,
        opset=opset,
        integer_layers=report.integer_layers,
        activation_layers=report.activation_layers,
        float_layers=report.float_layers,
        notes=report.notes,
        dynamic_axes=_dynamic_axes(proto),
        code_offsets=report.code_offsets,
    )
    return proto, summary


def _require_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is too old: per-channel DequantizeLinear needs {MIN_OPSET}"
        )


def _set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "segbench"
    onnx.checker.check_model(proto, full_check=True)


def _stored_summary(summary: ExportSummary) -> str:
    # The file's own size cannot be inside it: the summary's bytes stay out of the metadata.
    return json.dumps({key: value for key, value in summary.to_dict().items() if key != "bytes"})


def precision_label(model: LoadedModel) -> str:
    """``"FP32"``, or the quantized variant's label (``"rtn W8A8"``) as summaries name it."""
    quant = model.spec.quantization
    return "FP32" if quant is None else str(quant.get("label") or "quantized")


def build_member_onnx(
    model: LoadedModel, *, quant_result: Any = None, opset: int = DEFAULT_OPSET
) -> list[tuple[onnx.ModelProto, ExportSummary]]:
    """Each member network of a framework model (nnU-Net folds, a MONAI bundle's network) in
    ONNX, for ONNX Runtime to run inside the framework's own pipeline.

    A quantized variant's members keep the quantizer's integer codes with DequantizeLinear, as
    :func:`build_onnx` stores them (framework models are quantized weights only). Batch and
    spatial axes are dynamic; the example input has the framework's patch size (32 per side
    when it has none). Each member's ``metadata_props`` name the framework and the member
    (:data:`MEMBER_KEY`) but hold no model spec: a member alone is not a model (its
    framework's pipeline runs around it).

    Parameters
    ----------
    model : LoadedModel
        A framework model or a quantized variant of one.
    quant_result : core.quant.QuantResult, optional
        The run that made the variant; without it the codes are read from each member folder's
        ``quantized.safetensors``.
    opset : int

    Raises
    ------
    ValueError
        Not a framework model, a quantized variant without codes, or a member the exporter
        cannot trace (its reason in words).
    """
    framework = model.framework
    if framework is None:
        raise ValueError(f"{model.name}: not a framework model (use build_onnx)")
    _require_opset(opset)
    patch = getattr(framework, "patch_size", None) or (32,) * model.spec.spatial_dims
    channels = int(getattr(framework, "input_channels", model.spec.in_channels))
    example = torch.zeros((2, channels, *patch))
    forms = _member_integer_forms(model, quant_result)
    precision = precision_label(model)
    built = []
    for name, network, form in zip(
        framework.member_names(), framework.members(), forms, strict=True
    ):
        proto, summary = _network_onnx(
            network,
            example,
            form,
            opset,
            model_name=f"{model.name} {name}",
            part=name,
            precision=precision,
        )
        member = {"framework": framework.framework, "member": name}
        _set_metadata(proto, {MEMBER_KEY: json.dumps(member), EXPORT_KEY: _stored_summary(summary)})
        built.append((proto, summary))
    return built


def build_onnx(
    model: LoadedModel, *, quant_result: Any = None, opset: int = DEFAULT_OPSET
) -> tuple[onnx.ModelProto, ExportSummary]:
    """The ONNX model of ``model`` (checked by ``onnx.checker``) and its summary.

    Parameters
    ----------
    model : LoadedModel
        A float model or a quantized variant of one of segbench's own architectures (or a
        TorchScript/pickled module that torch.export can trace).
    quant_result : core.quant.QuantResult, optional
        The run that made the variant; without it a quantized variant's codes are read from
        its ``quantized.safetensors``.
    opset : int
        ONNX opset, 13 or later; 21 (the default) and later store 4-bit weights in 4 bits.

    Raises
    ------
    ValueError
        A framework model (nnU-Net, MONAI bundle: their pipeline is the framework's; see
        :func:`core.deploy.framework_package.export_framework_onnx`), an ONNX model, a
        quantized variant without codes, an opset below 13, or a network the exporter cannot
        trace (its reason in words).
    """
    if model.framework is not None:
        raise ValueError(
            f"{model.name}: {model.framework.framework} models run in their framework's own "
            "pipeline (preprocessing, mirroring, fold ensembling), which one ONNX file cannot "
            "hold; export it to a folder (an --out without .onnx) that keeps the framework's "
            "files with one ONNX network per member, or run its networks in ONNX Runtime with "
            "--backend onnxruntime"
        )
    if getattr(model.module, "is_onnx", False):
        raise ValueError(f"{model.name}: is already an ONNX model")
    _require_opset(opset)
    form = _integer_form(model, quant_result)
    proto, summary = _network_onnx(
        model.module,
        _example_input(model),
        form,
        opset,
        model_name=model.name,
        part="the network",
        precision=precision_label(model),
    )
    _set_metadata(proto, {SPEC_KEY: model.spec.to_json(), EXPORT_KEY: _stored_summary(summary)})
    return proto, summary


def export_onnx(
    model: LoadedModel,
    path: str | Path,
    *,
    quant_result: Any = None,
    opset: int = DEFAULT_OPSET,
) -> ExportSummary:
    """Write ``model`` as one ONNX file (atomically) and return the summary with its size.

    Parameters are as for :func:`build_onnx`; ``path`` is the ``.onnx`` file to write.
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: ONNX files end in .onnx")
    proto, summary = build_onnx(model, quant_result=quant_result, opset=opset)
    atomic_write(path, lambda temp: onnx.save_model(proto, str(temp)), suffix=".onnx")
    summary.bytes = path.stat().st_size
    return summary

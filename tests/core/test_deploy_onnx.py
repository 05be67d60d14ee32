"""ONNX export with integer QDQ weights and the ONNX Runtime backend, checked against torch.

References: the quantizer's own codes/scales/zero points (read back with onnx.numpy_helper),
the torch variant's outputs and masks on the same inputs, and onnx.checker.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from core.cli.describe import describe_model
from core.deploy.onnx_export import EXPORT_KEY, SPEC_KEY, export_onnx
from core.deploy.onnx_runtime import OnnxRuntimeNetwork, with_backend
from core.io import Image
from core.models import LoadedModel, ModelSpec, UNet, load_model, predict, quantized_variant
from core.quant import QuantConfig, quantize_loaded_model, quantize_model

torch.manual_seed(0)


def tiny_model(dims: int) -> LoadedModel:
    torch.manual_seed(dims)
    spec = ModelSpec(
        architecture="unet",
        class_names=("background", "organ", "lesion"),
        arguments={"dims": dims, "depth": 1, "base_channels": 4, "norm": "batch"},
        mode=f"{dims}d",
        size_divisor=2,
        patch_size=(8, 8, 8) if dims == 3 else None,
        preprocessing=({"name": "zscore"},),
        name=f"tiny{dims}d",
    )
    network = UNet(1, 3, dims=dims, depth=1, base_channels=4, norm="batch")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding matters
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return LoadedModel(network.eval(), spec)


def variant(model: LoadedModel, **config) -> tuple[LoadedModel, object]:
    dims = model.spec.spatial_dims
    calib = torch.randn(6, 1, *([12] * dims))
    result = quantize_model(model, calib, QuantConfig(method="rtn", **config))
    return quantized_variant(result, model), result


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice between two label maps over their foreground: ``sum_c 2|A_c & B_c| / sum_c
    (|A_c| + |B_c|)`` for labels c >= 1 (a voxel counts as agreeing only with the same label)."""
    labels = [c for c in np.union1d(np.unique(a), np.unique(b)) if c != 0]
    overlap = sum(2 * int(np.sum((a == c) & (b == c))) for c in labels)
    total = sum(int(np.sum(a == c)) + int(np.sum(b == c)) for c in labels)
    return 1.0 if total == 0 else overlap / total


def stored_form(weight) -> tuple[str, int]:
    """The type and code offset a weight is stored with: signed (code - 2**(bits-1), zero point
    0) when its zero point is 2**(bits-1) everywhere, else the codes as they are; 4-bit types
    at 4 bits and below."""
    midpoint = 2 ** (weight.bits - 1)
    signed = bool((weight.zero_point == midpoint).all())
    width = "4" if weight.bits <= 4 else "8"
    return ("int" if signed else "uint") + width, midpoint if signed else 0


def onnx_logits(path, batch: torch.Tensor) -> np.ndarray:
    network = OnnxRuntimeNetwork(path.read_bytes(), str(path))
    return network(batch).numpy()


def torch_logits(model: LoadedModel, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.module(batch).numpy()


@pytest.fixture(scope="module")
def exported_3d(tmp_path_factory):
    """A 3-D tiny U-Net, its W4A8 per-channel variant, and both exported (opset 21)."""
    folder = tmp_path_factory.mktemp("onnx3d")
    model = tiny_model(3)
    quantized, result = variant(model, bits=4, act_bits=8, granularity="channel")
    fp_path, q_path = folder / "fp32.onnx", folder / "w4a8.onnx"
    fp_summary = export_onnx(model, fp_path)
    q_summary = export_onnx(quantized, q_path, quant_result=result)
    return model, quantized, result, fp_path, q_path, fp_summary, q_summary


def test_fp32_export_matches_torch_at_other_batch_and_size(exported_3d):
    model, _, _, fp_path, _, summary, _ = exported_3d
    onnx.checker.check_model(onnx.load(str(fp_path)), full_check=True)
    assert summary.dynamic_axes == ["batch", "spatial 1", "spatial 2", "spatial 3"]
    batch = torch.randn(3, 1, 10, 6, 14)  # neither the example's batch nor its sizes
    assert relative_error(onnx_logits(fp_path, batch), torch_logits(model, batch)) <= 1e-5


def test_integer_codes_in_the_file_are_the_quantizers(exported_3d):
    _, _, result, _, q_path, _, summary = exported_3d
    proto = onnx.load(str(q_path))
    onnx.checker.check_model(proto, full_check=True)
    tensors = {t.name: t for t in proto.graph.initializer}
    assert set(summary.integer_layers) == set(result.weights) == set(summary.activation_layers)
    assert not summary.float_layers
    for layer, weight in result.weights.items():
        key = f"{layer}.weight"
        assert key not in tensors  # the float weight is gone: its DequantizeLinear makes it
        codes = tensors[f"{key}_quantized"]
        kind, offset = stored_form(weight)
        assert codes.data_type == getattr(TensorProto, kind.upper())
        assert summary.integer_layers[layer] == kind
        np.testing.assert_array_equal(
            numpy_helper.to_array(codes).astype(np.int64) + offset, weight.codes.numpy()
        )
        np.testing.assert_array_equal(
            numpy_helper.to_array(tensors[f"{key}_scale"]).reshape(-1), weight.scale.numpy()
        )
        zero = numpy_helper.to_array(tensors[f"{key}_zero_point"]).astype(np.int64) + offset
        np.testing.assert_array_equal(zero.reshape(-1), weight.zero_point.numpy())
    dequantizers = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    axes = {n.output[0]: [a.i for a in n.attribute if a.name == "axis"] for n in dequantizers}
    # Per channel: Conv weights along axis 0, ConvTranspose weights (Cin, Cout, k) along 1.
    for layer, weight in result.weights.items():
        assert axes[f"{layer}.weight"] == [1 if weight.transposed else 0]
    quantizers = [
        n
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and n.name.endswith(".weight_input_QuantizeLinear")
    ]
    assert len(quantizers) == len(result.activations)
    steps = {float(numpy_helper.to_array(tensors[n.input[1]])) for n in quantizers}
    assert steps == {float(np.float32(g.step)) for g in result.activations.values()}


def test_quantized_export_runs_like_the_torch_variant(exported_3d):
    _, quantized, _, _, q_path, _, _ = exported_3d
    batch = torch.randn(2, 1, 12, 10, 8)
    got, want = onnx_logits(q_path, batch), torch_logits(quantized, batch)
    # Quantized activations are a step function: a value on a rounding boundary may land one
    # step apart after float reordering, so compare the masks and the overall error.
    assert dice(got.argmax(1), want.argmax(1)) >= 0.999
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-2


def test_weight_only_variant_is_within_1e3_and_4_bit_file_is_small(tmp_path):
    model = tiny_model(2)
    quantized, result = variant(model, bits=4, granularity="tensor")
    fp_summary = export_onnx(model, tmp_path / "fp.onnx")
    summary = export_onnx(quantized, tmp_path / "w4.onnx", quant_result=result)
    assert summary.integer_layers == {
        layer: stored_form(weight)[0] for layer, weight in result.weights.items()
    }
    assert {"uint4", "int4"} & set(summary.integer_layers.values())
    batch = torch.randn(3, 1, 20, 14)
    got, want = onnx_logits(tmp_path / "w4.onnx", batch), torch_logits(quantized, batch)
    assert relative_error(got, want) <= 1e-3
    assert summary.bytes < fp_summary.bytes


def test_opset_without_int4_stores_uint8_and_says_so(tmp_path):
    model = tiny_model(2)
    quantized, result = variant(model, bits=3, granularity="channel")
    summary = export_onnx(quantized, tmp_path / "w3.onnx", quant_result=result, opset=17)
    assert set(summary.integer_layers.values()) <= {"uint8", "int8"}
    assert any("opset 17 has no 4-bit type" in note for note in summary.notes)
    tensors = {t.name: t for t in onnx.load(str(tmp_path / "w3.onnx")).graph.initializer}
    for layer, weight in result.weights.items():
        stored = numpy_helper.to_array(tensors[f"{layer}.weight_quantized"])
        kind, offset = stored_form(weight)
        assert stored.dtype == np.dtype(kind.replace("4", "8"))
        np.testing.assert_array_equal(stored.astype(np.int64) + offset, weight.codes.numpy())


def test_symmetric_grids_are_stored_signed_with_zero_point_0(tmp_path):
    model = tiny_model(2)
    quantized, result = variant(model, bits=4, granularity="channel", symmetric=True)
    summary = export_onnx(quantized, tmp_path / "sym.onnx", quant_result=result)
    tensors = {t.name: t for t in onnx.load(str(tmp_path / "sym.onnx")).graph.initializer}
    for layer, weight in result.weights.items():
        offset = 2 ** (weight.bits - 1)
        assert summary.code_offsets[layer] == offset
        assert summary.integer_layers[layer] == ("int4" if weight.bits <= 4 else "int8")
        stored = numpy_helper.to_array(tensors[f"{layer}.weight_quantized"]).astype(np.int64)
        np.testing.assert_array_equal(stored + offset, weight.codes.numpy())
        zero = numpy_helper.to_array(tensors[f"{layer}.weight_zero_point"]).astype(np.int64)
        np.testing.assert_array_equal(zero, 0)
    batch = torch.randn(2, 1, 18, 22)
    got, want = onnx_logits(tmp_path / "sym.onnx", batch), torch_logits(quantized, batch)
    assert relative_error(got, want) <= 1e-3


class _GroupedUp(nn.Module):
    """A conv and a grouped ConvTranspose: per-channel scales of the latter have no DQ axis."""

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.avg_pool2d(self.up(torch.relu(self.conv(x))), 2))


def test_grouped_conv_transpose_is_kept_in_float_and_listed(tmp_path):
    torch.manual_seed(3)
    spec = ModelSpec(architecture="pickled-module", class_names=("a", "b"), name="grouped")
    model = LoadedModel(_GroupedUp().eval(), spec)
    result = quantize_model(
        model, torch.randn(4, 1, 8, 8), QuantConfig(method="rtn", bits=8, granularity="channel")
    )
    quantized = quantized_variant(result, model)
    summary = export_onnx(quantized, tmp_path / "g.onnx", quant_result=result)
    assert "up" in summary.float_layers and "ConvTranspose" in summary.float_layers["up"]
    assert "up" not in summary.integer_layers and summary.integer_layers
    assert any("kept in float: up" in line for line in summary.lines())
    batch = torch.randn(2, 1, 6, 10)
    got, want = onnx_logits(tmp_path / "g.onnx", batch), torch_logits(quantized, batch)
    assert relative_error(got, want) <= 1e-3


def test_onnx_file_reopens_as_a_model_and_predicts_like_torch(exported_3d):
    model, quantized, _, fp_path, q_path, _, _ = exported_3d
    image = Image(np.random.default_rng(1).normal(size=(14, 11, 9)).astype(np.float32), np.eye(4))
    for source, path in ((model, fp_path), (quantized, q_path)):
        reopened = load_model(path)
        assert reopened.backend == "onnxruntime" and reopened.path == path
        spec = reopened.spec
        assert spec.with_changes(quantization=source.spec.quantization) == source.spec
        assert reopened.is_quantized == source.is_quantized
        assert reopened.name == source.name
        got = predict(reopened, image, device="cpu")
        want = predict(source, image, device="cpu")
        assert dice(got.argmax(0), want.argmax(0)) >= 0.999
    meta = {p.key for p in onnx.load(str(q_path)).metadata_props}
    assert {SPEC_KEY, EXPORT_KEY} <= meta
    described = describe_model(load_model(q_path))
    assert described["backend"] == "onnxruntime"
    assert described["size_mb"] == pytest.approx(q_path.stat().st_size / 1e6)
    assert set(described["quantization"]["export"]["integer_layers"]) == set(exported_3d[2].weights)


def test_onnx_models_are_refused_where_they_cannot_go(exported_3d):
    _, _, _, fp_path, _, _, _ = exported_3d
    reopened = load_model(fp_path)
    with pytest.raises(ValueError, match="runs only with the onnxruntime backend"):
        with_backend(reopened, "torch")
    with pytest.raises(ValueError, match="ONNX file, which cannot be quantized"):
        quantize_loaded_model(reopened, torch.randn(2, 1, 8, 8, 8), QuantConfig(method="rtn"))
    with pytest.raises(ValueError, match="already an ONNX model"):
        export_onnx(reopened, fp_path.with_name("again.onnx"))


def test_torch_model_on_onnxruntime_backend_matches(exported_3d):
    model = exported_3d[0]
    on_ort = with_backend(model, "onnxruntime")
    assert on_ort.backend == "onnxruntime" and model.backend == "torch"
    batch = torch.randn(2, 1, 8, 8, 8)
    assert relative_error(on_ort.module(batch).numpy(), torch_logits(model, batch)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("natural", [False, True], ids=["ct-demo", "natural-demo"])
def test_demo_masks_match_between_backends(natural):
    """FP32 and W8A8 of each bundled demo: ONNX Runtime's argmax mask against torch's."""
    from core.demo import demo_paths
    from core.io import read_image
    from core.models import calibration_inputs

    paths = demo_paths()
    model = load_model(paths.natural_model if natural else paths.model)
    image = read_image(paths.natural_image if natural else paths.image)
    calib = calibration_inputs(model, [image], n=8, crop=None if natural else 64)
    config = QuantConfig(method="rtn", bits=8, act_bits=8, granularity="channel", symmetric=True)
    result = quantize_model(model, calib, config)
    for source, quant_result in ((model, None), (quantized_variant(result, model), result)):
        on_ort = with_backend(source, "onnxruntime", quant_result=quant_result)
        want = predict(source, image, device="cpu")
        got = predict(on_ort, image, device="cpu")
        assert dice(got.argmax(0), want.argmax(0)) >= 0.999
        if quant_result is None:
            assert float(np.abs(got - want).max()) <= 1e-5  # probabilities, FP32


def test_concat_inputs_take_the_readers_step_and_change_no_number(tmp_path, monkeypatch):
    import onnxruntime as ort

    import core.deploy.qdq as qdq

    model = tiny_model(2)
    quantized, result = variant(model, bits=8, act_bits=8, granularity="channel", symmetric=True)
    path, plain = tmp_path / "w8a8.onnx", tmp_path / "w8a8_plain.onnx"
    summary = export_onnx(quantized, path, quant_result=result)
    with monkeypatch.context() as patch:
        patch.setattr(qdq, "_quantize_concat_inputs", lambda graph, report: [])
        export_onnx(quantized, plain, quant_result=result)
    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    concats = [n for n in graph.node if n.op_type == "Concat"]
    assert concats and any("concatenate integers" in note for note in summary.notes)
    for concat in concats:
        reader = next(n for n in graph.node if concat.output[0] in n.input)
        assert reader.op_type == "QuantizeLinear"
        for source in concat.input:
            dq = producers[source]
            q = producers[dq.input[0]]
            assert (dq.op_type, q.op_type) == ("DequantizeLinear", "QuantizeLinear")
            assert list(q.input[1:]) == list(reader.input[1:])  # the reader's step and zero

    batch = np.random.default_rng(0).normal(size=(2, 1, 16, 12)).astype(np.float32)

    def run(file, level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch})[0]

    # Evaluated as written (no fusion): exactly the numbers of the graph without the copies.
    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    np.testing.assert_array_equal(run(path, off), run(plain, off))
    # Optimized, ONNX Runtime concatenates integers.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "QLinearConcat" in fused and "Concat" not in fused


def test_shared_encoder_outputs_run_as_integer_convolutions(tmp_path, monkeypatch):
    """The encoder output read by the pooling and the skip is quantized once where it is
    made, so ONNX Runtime gives that convolution an integer output too; only the head (float
    logits) and the ConvTranspose (no integer kernel) stay float."""
    import onnxruntime as ort

    import core.deploy.qdq as qdq

    model = tiny_model(2)
    quantized, result = variant(model, bits=8, act_bits=8, granularity="channel", symmetric=True)
    assert result.shared_outputs == {"encoders.0.conv2": "encoders.1.conv1"}
    path, without = tmp_path / "w8a8.onnx", tmp_path / "w8a8_unshared.onnx"
    summary = export_onnx(quantized, path, quant_result=result)
    assert any(note.startswith("encoders.0.conv2: output quantized once") for note in summary.notes)
    with monkeypatch.context() as patch:
        patch.setattr(qdq, "_quantize_shared_outputs", lambda graph, shared, report: [])
        export_onnx(quantized, without, quant_result=result)

    def fused_ops(file) -> list[str]:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(file.with_suffix(".optimized.onnx"))
        ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]

    convolutions = sum(isinstance(m, nn.Conv2d) for m in model.module.modules())
    assert fused_ops(path).count("QLinearConv") == convolutions - 1  # all but the head
    assert fused_ops(without).count("QLinearConv") == convolutions - 2  # and the shared one

    batch = torch.randn(2, 1, 16, 12)
    got, want = onnx_logits(path, batch), torch_logits(quantized, batch)
    assert dice(got.argmax(1), want.argmax(1)) >= 0.999
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-2


class _Untraceable(nn.Module):
    """Data-dependent control flow, which torch.export cannot turn into a graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 0:
            return self.conv(x)
        return -self.conv(x)


def test_a_network_the_exporter_cannot_trace_fails_in_words(tmp_path):
    spec = tiny_model(2).spec
    model = LoadedModel(_Untraceable().eval(), spec)
    with pytest.raises(ValueError, match="could not export the network") as error:
        export_onnx(model, tmp_path / "x.onnx")
    assert spec.name in str(error.value)
    assert not (tmp_path / "x.onnx").exists()

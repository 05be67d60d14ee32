"""End-to-end tests of quantize_model, save/load and the diagnostics on toy networks."""

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.jobs import CancelToken, JobCancelled
from core.quant import (
    LayerReport,
    QuantConfig,
    load_quantized,
    quantize_model,
    read_metadata,
    save_quantized,
)
from core.quant.batchnorm import fold_batchnorm


class ResidualDoubleConv(nn.Module):
    """conv-BN-ReLU, depthwise conv-BN-ReLU, 1x1 conv, plus a residual connection."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.depthwise = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pointwise = nn.Conv2d(cout, cout, 1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.pointwise(F.relu(self.bn2(self.depthwise(y)))) + y)


class ToyUNet(nn.Module):
    """A two-level U-Net: encoder block, strided conv, middle block, ConvTranspose, decoder."""

    def __init__(self, cin: int = 1, classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.enc = ResidualDoubleConv(cin, width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = ResidualDoubleConv(2 * width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e = self.enc(x)
        m = self.mid(F.relu(self.down(e)))
        return self.head(self.dec(torch.cat([self.up(m), e], dim=1)))


def _toy(seed: int = 0) -> ToyUNet:
    torch.manual_seed(seed)
    model = ToyUNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics so folding matters
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _calib(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def _output_error(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) - reference(x)) ** 2).sum(dim=1).mean())


@pytest.fixture(scope="module")
def toy_results():
    """One run per method at 2 bits on the same toy and calibration data."""
    model, calib = _toy(), _calib()
    before = copy.deepcopy(model.state_dict())
    results = {
        method: quantize_model(
            model, calib, QuantConfig(method=method, bits=2, iters=100, batch_size=8, device="cpu")
        )
        for method in ("rtn", "adaround", "flexround")
    }
    return model, calib, before, results


def test_batchnorm_folding_preserves_outputs_and_replaces_bn():
    model = _toy()
    folded = copy.deepcopy(model)
    pairs = fold_batchnorm(folded)
    assert set(pairs) == {
        ("enc.conv1", "enc.bn1"),
        ("enc.depthwise", "enc.bn2"),
        ("mid.conv1", "mid.bn1"),
        ("mid.depthwise", "mid.bn2"),
        ("dec.0", "dec.1"),
    }
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = _calib(4)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_batchnorm_after_conv_transpose_is_folded_per_output_channel():
    torch.manual_seed(3)
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2), nn.BatchNorm2d(6))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.2, 3)
    model[1].weight.data.uniform_(0.5, 2)
    model.eval()
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == [("0", "1")]
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


@pytest.mark.slow
def test_learned_methods_beat_round_to_nearest_and_keep_the_input_model(toy_results):
    model, calib, before, results = toy_results
    # the input model is untouched: same tensors, still with its BatchNorms
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5
    errors = {m: _output_error(r.model, model, calib) for m, r in results.items()}
    assert errors["flexround"] < errors["rtn"]
    assert errors["adaround"] < errors["rtn"]
    rtn_losses = results["rtn"].block_losses
    for method in ("flexround", "adaround"):
        result = results[method]
        assert all(len(h) == 100 for h in result.history.values())
        losses = result.block_losses
        assert losses.keys() == rtn_losses.keys()
        # the first block sees the same input in every method: its start is round-to-nearest
        assert losses["enc"][0] == pytest.approx(rtn_losses["enc"][0])
        assert all(after <= before for before, after in losses.values())
        assert sum(a for _, a in losses.values()) < sum(a for _, a in rtn_losses.values())
        assert any(r.frac_changed > 0 for r in result.layers)


def test_codes_in_range_and_model_weights_are_the_dequantized_codes(toy_results):
    _model, _calib_data, _before, results = toy_results
    result = results["flexround"]
    modules = dict(result.model.named_modules())
    for name, qw in result.weights.items():
        assert int(qw.codes.min()) >= 0 and int(qw.codes.max()) <= 2**qw.bits - 1
        layer = modules[name]
        if not qw.transposed:  # output channels on dim 0: dequantize by hand
            expected = qw.scale.reshape(-1, *[1] * (qw.codes.dim() - 1)) * (
                qw.codes.float() - qw.zero_point.reshape(-1, *[1] * (qw.codes.dim() - 1))
            )
            assert torch.equal(layer.weight, expected)
        levels = torch.unique(layer.weight)
        assert len(levels) <= 2**qw.bits
    # first and last layers in execution order use 8 bits, the rest 2
    bits = {r.name: r.bits for r in result.layers}
    assert bits["enc.conv1"] == 8 and bits["head"] == 8
    assert {bits[n] for n in bits if n not in ("enc.conv1", "head")} == {2}
    assert [r.name for r in result.layers][0] == "enc.conv1"


def test_layer_reports_are_numpy_and_consistent(toy_results):
    _model, _calib_data, _before, results = toy_results
    flex = results["flexround"]
    assert result_names(flex) == result_names(results["rtn"])
    for report in flex.layers:
        assert isinstance(report, LayerReport)
        assert isinstance(report.divisor_log, np.ndarray)
        out_dim = 1 if report.kind.startswith("ConvTranspose") else 0
        assert report.s3.shape == (report.weight_shape[out_dim],)
        assert report.s4 is not None
        assert report.grid_levels.shape == (1, 2**report.bits)
        assert report.scatter_abs_w_over_s1.shape == report.scatter_delta_q.shape
        assert 0 <= report.frac_moved_2plus <= report.frac_changed <= 1
        assert report.loss_after <= report.loss_before
        assert report.kept_reason
    for report in results["rtn"].layers:
        assert report.divisor_log is None and report.frac_changed == 0.0
        assert report.loss_before == report.loss_after
        assert report.weight_rel_error == pytest.approx(report.weight_rel_error_rtn)
    assert flex.architecture == "ToyUNet"
    assert flex.blocks == ["enc", "down", "mid", "up", "dec", "head"]
    assert flex.config.method == "flexround"


def result_names(result):
    return [r.name for r in result.layers]


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_save_load_round_trip_is_exact(tmp_path, toy_results, granularity):
    model, calib, _before, results = toy_results
    if granularity == "tensor":
        result = results["flexround"]
    else:
        result = quantize_model(
            model, calib, QuantConfig(bits=3, granularity="channel", iters=5, device="cpu")
        )
    path = save_quantized(result, tmp_path / "q" / "weights.safetensors")
    rebuilt = load_quantized(path, model)
    with torch.no_grad():
        assert torch.equal(rebuilt(calib), result.model(calib))
    meta = read_metadata(path)
    assert meta["method"] == "flexround" and meta["architecture"] == "ToyUNet"
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    assert tensors["q.mid.conv1.codes"].dtype == torch.uint8
    assert not any(key.startswith("fp.") and key.endswith("conv1.weight") for key in tensors)


def test_load_rejects_a_different_base_model(tmp_path, toy_results):
    _model, _calib_data, _before, results = toy_results
    path = save_quantized(results["rtn"], tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="w.safetensors"):
        load_quantized(path, nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_conv_transpose_and_depthwise_match_hand_computed_quantization():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4),  # depthwise
        nn.ReLU(),
        nn.ConvTranspose2d(4, 6, 2, stride=2),  # weight (Cin=4, Cout=6, 2, 2)
    ).eval()
    config = QuantConfig(
        method="rtn-minmax", bits=3, granularity="channel", first_last_bits=None, device="cpu"
    )
    result = quantize_model(model, torch.randn(4, 4, 6, 6), config)

    def hand(weight: np.ndarray) -> np.ndarray:
        lo, hi = min(weight.min(), 0.0), max(weight.max(), 0.0)
        scale = np.float32((hi - lo) / 7)
        zero = np.clip(np.round(-lo / scale), 0, 7)
        return scale * (np.clip(np.round(weight / scale) + zero, 0, 7) - zero)

    depthwise = model[0].weight.detach().numpy()
    expected = np.stack([hand(depthwise[c]) for c in range(4)])
    np.testing.assert_allclose(result.model[0].weight.detach().numpy(), expected, atol=1e-6)
    transposed = model[2].weight.detach().numpy()
    expected_t = np.stack([hand(transposed[:, c]) for c in range(6)], axis=1)
    np.testing.assert_allclose(result.model[2].weight.detach().numpy(), expected_t, atol=1e-6)
    assert result.weights["2"].transposed and result.weights["2"].scale.shape == (6,)


def test_flexround_on_conv_transpose_and_depthwise_learns_and_round_trips(tmp_path):
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.ConvTranspose2d(8, 6, 2, stride=2)
    ).eval()
    calib = torch.randn(16, 8, 6, 6)
    config = QuantConfig(bits=2, first_last_bits=None, iters=100, reconstruction="layer")
    result = quantize_model(model, calib, config)
    rtn = quantize_model(model, calib, QuantConfig(method="rtn", bits=2, first_last_bits=None))
    # the ConvTranspose layer's reconstruction improves on round-to-nearest; a block never ends
    # worse than it started (learning that did not help falls back to round-to-nearest)
    before, after = result.block_losses["2"]
    assert after < before
    assert all(a <= b for b, a in result.block_losses.values())
    assert _output_error(result.model, model, calib) < _output_error(rtn.model, model, calib)
    dw = next(r for r in result.layers if r.name == "0")
    assert dw.s4.shape == (1,)
    rebuilt = load_quantized(save_quantized(result, tmp_path / "t.safetensors"), model)
    with torch.no_grad():
        assert torch.equal(rebuilt(calib), result.model(calib))


def test_cancel_stops_within_an_iteration():
    model, calib = _toy(), _calib(8)
    token = CancelToken()
    calls_after_cancel = []

    def on_progress(progress):
        token.cancel()

    def count(_module, _args, _output):
        if token.cancelled:
            calls_after_cancel.append(1)

    config = QuantConfig(iters=10_000, batch_size=4, device="cpu")
    # count every module call made after the cancel request (the first progress report)
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        with pytest.raises(JobCancelled):
            quantize_model(model, calib, config, on_progress=on_progress, cancel=token)
    finally:
        handle.remove()
    # at most the rest of the current iteration ran, not the remaining 9999 iterations
    assert len(calls_after_cancel) <= 8


def test_cancel_from_another_thread():
    token = CancelToken()
    timer = threading.Timer(0.2, token.cancel)
    timer.start()
    try:
        with pytest.raises(JobCancelled):
            quantize_model(
                _toy(), _calib(8), QuantConfig(iters=100_000, device="cpu"), cancel=token
            )
    finally:
        timer.cancel()


def test_progress_reports_block_iteration_and_loss():
    reports = []
    quantize_model(
        _toy(),
        _calib(8),
        QuantConfig(iters=20, batch_size=4, device="cpu"),
        on_progress=reports.append,
    )
    assert reports and reports[-1].step == reports[-1].total == 6 * 20
    assert any("block mid" in r.message and "loss" in r.values for r in reports)
    assert all(r.stage == "reconstruction" for r in reports)


def test_skip_patterns_layerwise_and_batches_iterable():
    model, calib = _toy(), _calib(8)
    config = QuantConfig(
        method="rtn", bits=4, reconstruction="layer", skip=("head", "mid.*"), device="cpu"
    )
    result = quantize_model(model, [calib[:3], calib[3:]], config)
    names = [r.name for r in result.layers]
    assert "head" not in names and not any(n.startswith("mid.") for n in names)
    assert result.blocks == names
    assert names[-1] == "dec.0" and result.layers[-1].bits == 8  # last quantized layer
    folded = copy.deepcopy(model)
    fold_batchnorm(folded)
    assert torch.equal(result.model.head.weight, folded.head.weight)  # skipped: float
    same = quantize_model(model, calib, config)
    with torch.no_grad():
        assert torch.equal(same.model(calib), result.model(calib))


def test_qdrop_and_adaround_layerwise_run_and_stay_in_range():
    result = quantize_model(
        _toy(),
        _calib(8),
        QuantConfig(
            method="adaround",
            bits=3,
            iters=30,
            qdrop_prob=0.5,
            batch_size=4,
            symmetric=True,
            device="cpu",
        ),
    )
    for qw in result.weights.values():
        assert 0 <= int(qw.codes.min()) and int(qw.codes.max()) <= 2**qw.bits - 1
        assert torch.all(qw.zero_point == 2 ** (qw.bits - 1))


def test_bad_inputs_raise_value_error():
    model = _toy()
    with pytest.raises(ValueError, match="empty"):
        quantize_model(model, torch.empty(0, 1, 8, 8), QuantConfig())
    with pytest.raises(ValueError, match="quantizable"):
        quantize_model(model, _calib(2), QuantConfig(skip=("*",)))
    with pytest.raises(ValueError, match="tensor"):
        quantize_model(model, 3.0, QuantConfig())
    with pytest.raises(ValueError, match="block"):
        quantize_model(model, _calib(2), QuantConfig(blocks=("nope",)))


def test_activation_quantization_is_on_grid_learned_and_round_trips(tmp_path):
    model, calib = _toy(), _calib(12)
    config = QuantConfig(bits=4, act_bits=4, iters=80, batch_size=6, device="cpu")
    flex = quantize_model(model, calib, config)
    rtn = quantize_model(model, calib, QuantConfig(method="rtn", bits=4, act_bits=4))
    assert set(flex.activations) == {r.name for r in flex.layers}
    assert flex.activations["enc.conv1"].bits == 8 and flex.activations["head"].bits == 8
    grid = flex.activations["mid.pointwise"]
    assert grid.bits == 4 and (grid.low, grid.high) == (0, 15)  # after a ReLU: unsigned
    # the result model feeds each quantized layer an input on its grid
    seen = []
    handle = flex.model.mid.pointwise.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].detach())
    )
    with torch.no_grad():
        flex.model(calib[:2])
    handle.remove()
    levels = seen[0] / grid.step
    assert torch.allclose(levels, torch.round(levels), atol=1e-3)
    assert float(levels.min()) >= -1e-3 and float(levels.max()) <= 15 + 1e-3
    assert torch.unique(seen[0]).numel() <= 16
    assert _output_error(flex.model, model, calib) < _output_error(rtn.model, model, calib)
    rebuilt = load_quantized(save_quantized(flex, tmp_path / "a.safetensors"), model)
    with torch.no_grad():
        assert torch.equal(rebuilt(calib), flex.model(calib))


def test_three_d_one_d_and_linear_layers_quantize_and_round_trip(tmp_path):
    torch.manual_seed(7)

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv3 = nn.Conv3d(2, 4, 3, padding=1)
            self.bn3 = nn.BatchNorm3d(4)
            self.up3 = nn.ConvTranspose3d(4, 2, 2, stride=2, groups=2)
            self.conv1 = nn.Conv1d(2, 3, 3)
            self.fc = nn.Linear(3, 5)
            self.bn1 = nn.BatchNorm1d(5)

        def forward(self, x):
            y = self.up3(F.relu(self.bn3(self.conv3(x))))  # (N, 2, 8, 8, 8)
            z = self.conv1(y.flatten(2))  # (N, 3, 510)
            return self.bn1(self.fc(z.mean(dim=2)))

    model = Mixed().eval()
    model.bn3.running_var.uniform_(0.5, 2)
    model.bn1.running_mean.uniform_(-1, 1)
    calib = torch.randn(6, 2, 4, 4, 4)
    config = QuantConfig(bits=4, granularity="channel", iters=20, batch_size=3, device="cpu")
    result = quantize_model(model, calib, config)
    assert set(result.folded_batchnorm) == {("conv3", "bn3"), ("fc", "bn1")}
    assert [r.name for r in result.layers] == ["conv3", "up3", "conv1", "fc"]
    up = next(r for r in result.layers if r.name == "up3")
    assert up.s1_init.shape == (2,) and up.grid_levels.shape == (2, 16)
    fc = next(r for r in result.layers if r.name == "fc")
    assert fc.s4 is None and fc.s3.shape == (5,)
    with torch.no_grad():
        assert _output_error(result.model, model, calib) < 0.5 * float(
            (model(calib) ** 2).sum(dim=1).mean()
        )
    rebuilt = load_quantized(save_quantized(result, tmp_path / "m.safetensors"), model)
    with torch.no_grad():
        assert torch.equal(rebuilt(calib), result.model(calib))


def test_a_block_that_learning_made_worse_falls_back_to_round_to_nearest():
    # A far too large learning rate (3 grid levels per step) on an easy 4-bit layer: the STE
    # updates flip many codes and the loss rises; the block must end exactly at round-to-nearest.
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(32, 16)).eval()
    calib = torch.randn(64, 32)
    common = {"bits": 4, "first_last_bits": None, "device": "cpu"}
    flex = quantize_model(model, calib, QuantConfig(lr=3.0, iters=100, **common))
    rtn = quantize_model(model, calib, QuantConfig(method="rtn", **common))
    assert flex.layers[0].kept_nearest
    assert max(flex.history["0"]) > flex.block_losses["0"][0]  # learning did go wrong
    assert torch.equal(flex.weights["0"].codes, rtn.weights["0"].codes)
    assert torch.equal(flex.model[0].weight, rtn.model[0].weight)


def test_flexround_keeps_the_range_search_grid_unless_asked_to_learn_it(toy_results):
    """By default only the element-wise divisor learns: every layer's s1 is round-to-nearest's
    (the Lp range search); with ``learn_grid`` the grid sizes move too."""
    model, calib, _, results = toy_results
    nearest, fixed = results["rtn"].weights, results["flexround"].weights
    for name, weight in fixed.items():
        assert torch.equal(weight.scale, nearest[name].scale), name
    learned = quantize_model(
        model,
        calib,
        QuantConfig(method="flexround", bits=2, iters=100, batch_size=8, learn_grid=True),
    )
    moved = [n for n, w in learned.weights.items() if not torch.equal(w.scale, nearest[n].scale)]
    assert moved  # the learned blocks' grids changed
    with pytest.raises(ValueError, match="learn_grid"):
        QuantConfig(learn_grid="yes")

"""Unit tests of the quantizers, grids and weight layouts against hand-computed references."""

import numpy as np
import pytest
import torch
from torch import nn

from core.quant import QuantConfig
from core.quant.grids import Grid, lp_search_grid, minmax_grid, round_to_grid
from core.quant.layout import from_canonical, to_canonical
from core.quant.quantizers import (
    ActivationQuantizer,
    AdaRoundQuantizer,
    FixedQuantizer,
    FlexRoundQuantizer,
)


def _rtn_reference(weight: np.ndarray, scale, zero, bits: int) -> np.ndarray:
    codes = np.clip(np.round(weight / scale) + zero, 0, 2**bits - 1)
    return (scale * (codes - zero)).astype(np.float32)


def test_minmax_grid_hand_worked():
    weight = torch.tensor([-1.0, 0.5, 3.0])
    grid = minmax_grid(weight, 2, per_channel=False, symmetric=False)
    # range [-1, 3] over 3 steps: s1 = 4/3, z = round(1 / (4/3)) = round(0.75) = 1
    assert float(grid.scale) == pytest.approx(4 / 3)
    assert float(grid.zero_point) == 1.0
    codes = round_to_grid(weight, grid)
    assert codes.tolist() == [0.0, 1.0, 3.0]


def test_minmax_grid_symmetric_and_positive_only_range_contains_zero():
    weight = torch.tensor([0.5, 2.0])
    grid = minmax_grid(weight, 3, per_channel=False, symmetric=False)
    assert float(grid.zero_point) == 0.0  # range extended down to 0
    sym = minmax_grid(torch.tensor([-0.3, 1.5]), 3, per_channel=False, symmetric=True)
    assert float(sym.zero_point) == 4.0
    assert float(sym.scale) == pytest.approx(1.5 / 3)


def test_lp_search_matches_brute_force_per_channel():
    torch.manual_seed(1)
    weight = torch.randn(3, 20) * torch.tensor([[1.0], [0.1], [3.0]])
    weight[0, 0] = 8.0  # an outlier that the search should clip
    grid = lp_search_grid(weight, 3, per_channel=True, symmetric=False)
    w = weight.numpy().astype(np.float64)
    for c in range(3):
        lo, hi = min(w[c].min(), 0), max(w[c].max(), 0)
        best = None
        for i in range(80):
            f = 1 - 0.01 * i
            s = (hi * f - lo * f) / 7
            z = np.clip(np.round(-lo * f / s), 0, 7)
            err = np.mean(np.abs(_rtn_reference(w[c], s, z, 3) - w[c]) ** 2.4)
            if best is None or err < best[0] - 1e-9:
                best = (err, s)
        assert float(grid.scale[c]) == pytest.approx(best[1], rel=1e-4)
    assert float(grid.scale[0]) < (8.0 - float(weight[0].min())) / 7  # the outlier was clipped


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_flexround_at_init_equals_round_to_nearest_exactly(granularity, symmetric, bits):
    torch.manual_seed(bits)
    weight = torch.randn(6, 4, 3, 3)
    grid = lp_search_grid(weight, bits, per_channel=granularity == "channel", symmetric=symmetric)
    flex = FlexRoundQuantizer(weight, grid, input_factor=True)
    rtn = FixedQuantizer(weight, grid)
    assert torch.equal(flex.codes(), rtn.codes())
    assert torch.equal(flex(), rtn())
    scale = grid.scale.numpy().astype(np.float32)
    zero = grid.zero_point.numpy()
    reference = _rtn_reference(weight.numpy(), scale, zero, bits)
    assert np.array_equal(flex().detach().numpy(), reference)


def test_flexround_gradient_of_log_s2_is_minus_w_times_upstream_at_init():
    torch.manual_seed(0)
    weight = torch.randn(5, 7)
    grid = lp_search_grid(weight, 3, per_channel=False, symmetric=False)
    flex = FlexRoundQuantizer(weight, grid, input_factor=False)
    upstream = torch.randn(5, 7)
    (flex() * upstream).sum().backward()
    ratio = weight / grid.scale + grid.zero_point
    unclipped = (torch.round(ratio) >= 0) & (torch.round(ratio) <= 7)
    assert unclipped.sum() > 20 and (~unclipped).sum() > 0  # both cases are exercised
    expected = -weight * upstream
    assert torch.allclose(flex.log_s2.grad[unclipped], expected[unclipped], atol=1e-5)
    assert torch.all(flex.log_s2.grad[~unclipped] == 0)


def test_flexround_factor_shapes_for_conv_linear_and_depthwise():
    conv = FlexRoundQuantizer(
        torch.randn(6, 4, 3, 3), Grid(torch.tensor(0.1), torch.tensor(8.0), 4), input_factor=True
    )
    assert conv.log_s3.shape == (6, 1, 1, 1) and conv.log_s4.shape == (1, 4, 1, 1)
    depthwise = FlexRoundQuantizer(
        torch.randn(6, 1, 3, 3), Grid(torch.tensor(0.1), torch.tensor(8.0), 4), input_factor=True
    )
    assert depthwise.log_s4.numel() == 1  # s4 is one scalar next to s1 for depthwise convs
    linear = FlexRoundQuantizer(
        torch.randn(3, 5), Grid(torch.tensor(0.1), torch.tensor(8.0), 4), input_factor=False
    )
    assert linear.log_s4 is None and linear.log_s3.shape == (3, 1)


def test_adaround_hard_rounding_at_init_is_round_to_nearest():
    torch.manual_seed(2)
    weight = torch.randn(8, 16)
    grid = lp_search_grid(weight, 4, per_channel=True, symmetric=False)
    ada = AdaRoundQuantizer(weight, grid)
    frac = weight / grid.scale - torch.floor(weight / grid.scale)
    clear = (frac - 0.5).abs() > 1e-3  # away from ties, where the two may break differently
    assert torch.equal(ada.codes()[clear], round_to_grid(weight, grid)[clear])
    # the soft rounding starts at the fractional part
    assert torch.allclose(ada.soft_rounding(), frac.clamp(1e-6, 1 - 1e-6), atol=1e-4)
    # the regulariser is 0 once every h is exactly 0 or 1
    with torch.no_grad():
        ada.alpha.copy_(torch.where(ada.alpha >= 0, 10.0, -10.0))
    assert float(ada.regularizer(2.0).detach()) == 0.0


def test_conv_transpose_canonical_layout_is_output_channel_first():
    layer = nn.ConvTranspose2d(4, 6, 3, groups=2)  # weight (4, 3, 3, 3)
    weight = layer.weight.detach()
    canonical = to_canonical(weight, layer)
    assert canonical.shape == (6, 2, 3, 3)
    # output channel o = g * 3 + j reads input channels g * 2 + i from weight[g*2+i, j]
    for o in range(6):
        g, j = divmod(o, 3)
        for i in range(2):
            assert torch.equal(canonical[o, i], weight[g * 2 + i, j])
    assert torch.equal(from_canonical(canonical, layer), weight)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="method"):
        QuantConfig(method="gptq")
    with pytest.raises(ValueError, match="bits"):
        QuantConfig(bits=9)
    with pytest.raises(ValueError, match="granularity"):
        QuantConfig(granularity="group")
    with pytest.raises(ValueError, match="qdrop_prob"):
        QuantConfig(qdrop_prob=1.5)
    with pytest.raises(ValueError, match="skip"):
        QuantConfig(skip="head")
    config = QuantConfig(skip=["head*"])
    assert config.skip == ("head*",)
    with pytest.raises(AttributeError):
        config.bits = 3


def test_activation_quantizer_initialises_sign_and_step_from_the_first_batch():
    torch.manual_seed(0)
    positive = torch.rand(4, 3, 5, 5) * 2.0
    act = ActivationQuantizer(4)
    out = act(positive)
    assert not bool(act.signed) and act.bounds == (0, 15)
    step = float(act.step().detach())
    assert 0 < step <= 2.0 / 15 + 1e-6  # at most the full range over 15 steps
    levels = out.detach() / step
    assert torch.allclose(levels, torch.round(levels), atol=1e-4)
    assert float(levels.max()) <= 15 + 1e-4
    signed = ActivationQuantizer(3)
    signed(torch.randn(100))
    assert bool(signed.signed) and signed.bounds == (-4, 3)
    with pytest.raises(ValueError, match="act_bits"):
        QuantConfig(act_bits=1)

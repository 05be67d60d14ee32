"""FlexRound never ends worse than round-to-nearest, and its learning rate is set in grid levels.

The held-out selection is checked against round-to-nearest runs of the same model (an
independent pipeline with nothing to learn); the learning-rate scale against the analytic code
move of one Adam step.
"""

import pytest
import torch
from torch import nn

from core.demo import demo_paths
from core.models import calibration_inputs, load_model
from core.phantom import make_phantom
from core.quant import QuantConfig, quantize_model
from core.quant.config import DEFAULT_LR, default_lr
from core.quant.grids import lp_search_grid
from core.quant.quantizers import AdaRoundQuantizer, FlexRoundQuantizer
from core.quant.reconstruction import checkpoint_iterations, split_holdout

DEMO = demo_paths()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_one_adam_step_moves_the_largest_code_by_about_lr_levels_at_every_bit_width(bits):
    # Adam's first step moves every parameter by exactly its learning rate (sign of the
    # gradient), so a log-S2 step of lr * lr_scale moves the code of weight w by
    # |w| / s1 * (1 - exp(-lr * lr_scale)) levels: at most ~lr for the largest weight.
    torch.manual_seed(0)
    weight = torch.randn(16, 8, 3, 3)
    grid = lp_search_grid(weight, bits, per_channel=False, symmetric=False)
    quantizer = FlexRoundQuantizer(weight, grid, input_factor=True)
    largest = float((quantizer.rtn_codes() - grid.zero_point).abs().max())
    assert quantizer.reach() == largest
    assert 2 ** (bits - 1) - 1 <= largest <= 2**bits - 1
    lr = 0.05
    before = weight / (grid.scale * torch.exp(quantizer.log_divisor().detach()))
    optimizer = torch.optim.Adam([quantizer.log_s2], lr=lr * quantizer.lr_scale())
    quantizer.log_s2.grad = -torch.ones_like(quantizer.log_s2)  # every S2 grows
    optimizer.step()
    after = weight / (grid.scale * torch.exp(quantizer.log_divisor().detach()))
    # weights the grid represents (clipped ones keep their code): |w| / s1 <= largest + 1/2
    in_range = ((before + grid.zero_point) >= -0.5) & ((before + grid.zero_point) <= 2**bits - 0.5)
    moved = float((before - after).abs()[in_range].max())
    assert moved <= lr * (largest + 0.5) / largest * (1 + 1e-3)
    assert moved >= 0.6 * lr  # and not much less: the step is the same at every bit width


def test_adaround_learning_rate_is_not_rescaled():
    weight = torch.randn(4, 4)
    grid = lp_search_grid(weight, 8, per_channel=False, symmetric=False)
    assert AdaRoundQuantizer(weight, grid).lr_scale() == 1.0


def test_one_learning_rate_default_per_method_shared_by_the_api():
    assert QuantConfig(method="flexround").effective_lr == DEFAULT_LR["flexround"]
    assert QuantConfig(method="adaround").effective_lr == DEFAULT_LR["adaround"]
    assert default_lr("rtn") is None
    assert QuantConfig(method="flexround", lr=1e-3).effective_lr == 1e-3


def test_holdout_split_is_disjoint_and_covers_every_sample():
    train, held = split_holdout(64, 0.25, torch.Generator().manual_seed(3))
    assert len(held) == 16 and len(train) == 48
    assert sorted(torch.cat([train, held]).tolist()) == list(range(64))
    assert split_holdout(2, 0.9, torch.Generator())[1].numel() == 1  # train keeps one
    lone_train, lone_held = split_holdout(1, 0.25, torch.Generator())
    assert lone_train.tolist() == lone_held.tolist() == [0]
    assert checkpoint_iterations(100, 10) == set(range(10, 101, 10))
    assert checkpoint_iterations(3, 10) == {1, 2, 3}


def _assert_never_worse_than_round_to_nearest(flex, rtn):
    for report in flex.layers:
        assert report.loss_after <= report.loss_before, report.name
        if report.kept_nearest:
            # round-to-nearest codes do not depend on the data: an RTN run must match exactly
            assert torch.equal(flex.weights[report.name].codes, rtn.weights[report.name].codes)
    for block, (before, after) in flex.block_losses.items():
        assert after <= before, block
        assert flex.checkpoints[block][0].loss == before
    # the first block sees the same inputs in both runs, so its start is the RTN run's loss
    first = flex.blocks[0]
    assert flex.block_losses[first][0] == pytest.approx(rtn.block_losses[first][0], rel=1e-6)


@pytest.mark.skipif(bool(DEMO.missing()), reason="demo files missing")
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_demo_no_layer_ends_above_its_round_to_nearest_start_on_held_out_samples(bits):
    model = load_model(DEMO.model)
    image, _ = make_phantom(1, shape=(96, 96, 16))
    calib = calibration_inputs(model, image, n=24, seed=0, crop=32)
    common = {"bits": bits, "batch_size": 8, "device": "cpu", "seed": 0}
    flex = quantize_model(model, calib, QuantConfig(method="flexround", iters=60, **common))
    rtn = quantize_model(model, calib, QuantConfig(method="rtn", **common))
    _assert_never_worse_than_round_to_nearest(flex, rtn)
    # at 2 bits learning must pay off on the held-out samples somewhere
    if bits == 2:
        assert any(not r.kept_nearest for r in flex.layers)
        assert sum(a for _, a in flex.block_losses.values()) < sum(
            b for b, _ in flex.block_losses.values()
        )


def test_8_bit_layers_learned_at_the_old_unscaled_rate_still_end_at_or_below_the_start(monkeypatch):
    # The blow-up of the issue: every log factor at 1e-2 moves an 8-bit layer's largest codes
    # ~1.3 levels per step; whatever the iterate does, the kept result may not be worse.
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 6)).eval()
    calib = torch.randn(96, 24)
    monkeypatch.setattr(FlexRoundQuantizer, "lr_scale", lambda self: 1.0)
    common = {"bits": 8, "reconstruction": "layer", "device": "cpu", "batch_size": 16}
    flex = quantize_model(model, calib, QuantConfig(lr=1e-2, iters=200, **common))
    rtn = quantize_model(model, calib, QuantConfig(method="rtn", **common))
    _assert_never_worse_than_round_to_nearest(flex, rtn)
    last = {n: flex.checkpoints[n][-1].layer_losses[n] for n in ("0", "2")}
    assert any(last[r.name] > r.loss_before for r in flex.layers)  # learning did go wrong

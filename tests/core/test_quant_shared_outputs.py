"""Outputs read by several quantized layers are quantized once, at their producer (W*A8).

References: the U-Net's own wiring (which encoder feeds which pooling and skip), the reader's
learned grid (the shared output must lie on it), and the same model with the producer's hook
removed (the direct reader must see exactly the same input).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from core.models import UNet
from core.quant import QuantConfig, load_quantized, quantize_model, save_quantized
from core.quant.batchnorm import fold_batchnorm
from core.quant.export import read_integer_form
from core.quant.layout import is_quantizable
from core.quant.quantizers import OutputFakeQuant
from core.quant.shared_outputs import find_shared_outputs


def unet(**changes) -> nn.Module:
    torch.manual_seed(0)
    arguments = {"dims": 2, "depth": 2, "base_channels": 4, "norm": "batch"} | changes
    return UNet(1, 3, **arguments).eval()


def folded(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    fold_batchnorm(model)
    return model


def layers_of(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if is_quantizable(module)]


def test_each_encoder_output_is_shared_with_the_encoder_that_reads_it_through_the_pooling():
    model = folded(unet())
    assert find_shared_outputs(model, layers_of(model)) == {
        "encoders.0.conv2": "encoders.1.conv1",
        "encoders.1.conv2": "encoders.2.conv1",
    }


def test_nothing_is_shared_where_quantizing_the_output_would_change_another_use():
    # Unfolded: a BatchNorm sits between the convolution and the shared tensor.
    model = unet()
    assert find_shared_outputs(model, layers_of(model)) == {}
    # Residual blocks: the shared tensor is a sum, not a layer's output.
    model = folded(unet(residual=True))
    assert find_shared_outputs(model, layers_of(model)) == {}


class TwoHeads(nn.Module):
    """One convolution read by two convolutions directly, and optionally returned as well."""

    def __init__(self, also_return: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 2, 1)
        self.right = nn.Conv2d(4, 2, 1)
        self.also_return = also_return

    def forward(self, x: torch.Tensor):
        y = torch.relu(self.stem(x))
        out = torch.cat([self.left(y), self.right(y)], dim=1)
        if self.also_return:
            return out, y
        return out


class PooledAndConcatenated(nn.Module):
    """The U-Net pattern without the U-Net: read through a pooling and through a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.merge = nn.Conv2d(8, 2, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu(self.stem(x))
        deep = self.up(self.down(self.pool(y)))
        return self.merge(torch.cat([deep, y], dim=1))


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:  # data-dependent: fx cannot trace it
            x = -x
        return self.head(torch.relu(self.stem(x)))


def test_two_direct_readers_or_another_use_or_an_untraceable_model_share_nothing():
    for model in (TwoHeads(also_return=False), TwoHeads(also_return=True), Branching()):
        assert find_shared_outputs(model, layers_of(model)) == {}
    model = PooledAndConcatenated()
    assert find_shared_outputs(model, layers_of(model)) == {"stem": "down"}


@pytest.fixture(scope="module")
def w8a8():
    model = unet()
    with torch.no_grad():  # non-trivial statistics, so folding matters
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    calib = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    config = QuantConfig(method="rtn", bits=8, act_bits=8, granularity="channel", symmetric=True)
    return model, quantize_model(model, calib, config)


def outputs_of(model: nn.Module, names: list[str], batch: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _a, out, name=name: seen.__setitem__(name, out.detach().clone())
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_shared_output_lies_on_the_readers_grid_and_the_reader_sees_what_it_saw(w8a8):
    _, result = w8a8
    assert result.shared_outputs == {
        "encoders.0.conv2": "encoders.1.conv1",
        "encoders.1.conv2": "encoders.2.conv1",
    }
    batch = torch.randn(2, 1, 16, 20, generator=torch.Generator().manual_seed(2))
    encoders = ["encoders.0", "encoders.1", "encoders.1.conv1", "encoders.2.conv1"]
    seen = outputs_of(result.model, encoders, batch)
    for producer, reader in result.shared_outputs.items():
        grid = result.activations[reader]
        codes = seen[producer.rsplit(".", 1)[0]] / grid.step  # the encoder block's output
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert codes.min() >= grid.low - 1e-3 and codes.max() <= grid.high + 1e-3
    # Without the producers' hooks the direct readers compute exactly the same.
    plain = copy.deepcopy(result.model)
    for producer in result.shared_outputs:
        hooks = plain.get_submodule(producer)._forward_hooks
        for key in [k for k, h in hooks.items() if isinstance(h, OutputFakeQuant)]:
            del hooks[key]
    before = outputs_of(plain, encoders, batch)
    for reader in result.shared_outputs.values():
        assert torch.equal(seen[reader], before[reader])
    # ... while the decoder, which reads the skip through the concatenation, does not.
    with torch.no_grad():
        assert not torch.equal(result.model(batch), plain(batch))


def test_shared_outputs_survive_saving_and_loading(w8a8, tmp_path):
    model, result = w8a8
    path = save_quantized(result, tmp_path / "w8a8.safetensors")
    assert read_integer_form(path).shared_outputs == result.shared_outputs
    loaded = load_quantized(path, model)
    batch = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(batch).numpy(), result.model(batch).numpy())


def test_weight_only_results_share_nothing():
    model = unet()
    result = quantize_model(model, torch.randn(4, 1, 16, 16), QuantConfig(method="rtn", bits=8))
    assert result.shared_outputs == {}
    hooks = [h for m in result.model.modules() for h in m._forward_hooks.values()]
    assert not any(isinstance(h, OutputFakeQuant) for h in hooks)


@pytest.mark.parametrize(
    "bad", ['{"nope.conv": "encoders.1.conv1"}', "[1, 2]", '{"encoders.0.conv2": 3}', "{not json"]
)
def test_a_broken_shared_outputs_entry_is_an_error_naming_the_file(w8a8, tmp_path, bad):
    from safetensors import safe_open
    from safetensors.torch import save_file

    model, result = w8a8
    good = save_quantized(result, tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=metadata | {"shared_outputs": bad})
    for read in (lambda: load_quantized(broken, model), lambda: read_integer_form(broken)):
        with pytest.raises(ValueError, match="broken.safetensors.*shared_outputs"):
            read()

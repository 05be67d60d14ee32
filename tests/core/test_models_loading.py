"""load_model / save_model round trips: safetensors, TorchScript, state dicts, pickled modules."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.models import LoadedModel, ModelSpec, UNet, load_model, save_model

# torch.jit.trace is deprecated upstream but TorchScript files are what users bring.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _spec(**changes):
    fields = dict(
        architecture="unet",
        arguments={"dims": 2, "base_channels": 2, "depth": 2},
        class_names=("background", "organ", "lesion"),
        name="tiny",
    )
    fields.update(changes)
    return ModelSpec(**fields)


def _net(seed=0):
    torch.manual_seed(seed)
    net = UNet(1, 3, dims=2, base_channels=2, depth=2)
    # Non-default batch-norm statistics so a loader that forgets buffers is caught.
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _same_outputs(a, b):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_folder_round_trip_keeps_weights_buffers_and_spec(tmp_path):
    net = _net()
    written = save_model(net, _spec(), tmp_path / "m")
    assert sorted(p.name for p in written.iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(written)
    assert isinstance(loaded, LoadedModel)
    assert loaded.spec == _spec(size_divisor=4)  # taken from the U-Net's depth
    assert loaded.name == "tiny (FP32)"
    assert not loaded.module.training
    stored = load_file(str(written / "model.safetensors"))
    for key, value in net.state_dict().items():
        torch.testing.assert_close(stored[key], value)
    _same_outputs(net, loaded.module)


def test_single_safetensors_file_with_json_beside_it(tmp_path):
    net = _net(1)
    save_model(net, _spec(name=""), tmp_path / "liver_v2.safetensors")
    assert (tmp_path / "liver_v2.json").exists()
    loaded = load_model(tmp_path / "liver_v2.safetensors")
    assert loaded.name == "liver_v2 (FP32)"
    _same_outputs(net, loaded.module)


def test_saving_twice_needs_overwrite(tmp_path):
    save_model(_net(), _spec(), tmp_path / "m")
    with pytest.raises(ValueError, match="already saved there"):
        save_model(_net(), _spec(), tmp_path / "m")
    save_model(_net(2), _spec(), tmp_path / "m", overwrite=True)
    _same_outputs(_net(2), load_model(tmp_path / "m").module)


def test_torchscript_folder_and_file_with_embedded_spec(tmp_path):
    net = _net(3)
    traced = torch.jit.trace(net, torch.zeros(1, 1, 16, 16))
    folder = save_model(traced, _spec(), tmp_path / "ts")
    assert (folder / "model.pt").exists()
    loaded = load_model(folder)
    assert loaded.spec.architecture == "torchscript"
    assert loaded.spec.class_names == ("background", "organ", "lesion")
    _same_outputs(net, loaded.module)
    # The same file alone: the spec comes from inside the archive.
    alone = tmp_path / "alone.pt"
    (folder / "model.pt").rename(alone)
    loaded = load_model(alone)
    assert loaded.spec.class_names == ("background", "organ", "lesion")
    _same_outputs(net, loaded.module)


def test_torchscript_without_any_spec_is_refused(tmp_path):
    path = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.trace(_net(), torch.zeros(1, 1, 8, 8)), str(path))
    with pytest.raises(ValueError, match="bare.pt: TorchScript file without a spec"):
        load_model(path)


def test_state_dict_pt_file_loads_into_registered_architecture(tmp_path):
    net = _net(4)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(_spec().to_json())
    _same_outputs(net, load_model(tmp_path / "m.pt").module)


def test_pickled_module_refused_without_trust(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    net = _net(5)
    torch.save(net, folder / "model.pt")
    (folder / "model.json").write_text(_spec(architecture="pickled-module").to_json())
    with pytest.raises(ValueError) as error:
        load_model(folder)
    message = str(error.value)
    assert "model.pt is a pickled Python module" in message
    assert "runs code from the file" in message and "trust=True" in message
    trusted = load_model(folder, trust=True)
    _same_outputs(net, trusted.module)


def test_weights_that_do_not_fit_the_spec_name_the_file(tmp_path):
    save_model(_net(), _spec(), tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    spec["arguments"]["base_channels"] = 3
    (tmp_path / "m" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"model.safetensors: weight .* has shape"):
        load_model(tmp_path / "m")
    spec["arguments"]["base_channels"] = 2
    spec["arguments"]["depth"] = 1
    (tmp_path / "m" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"model.safetensors: the weights do not match"):
        load_model(tmp_path / "m")


def test_missing_and_unreadable_files_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such model file or folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model folder"):
        load_model(tmp_path / "empty")
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no model spec found: expected w.json"):
        load_model(tmp_path / "w.safetensors")
    (tmp_path / "w.json").write_text(_spec().to_json())
    with pytest.raises(ValueError, match="w.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "w.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="model.onnx: ONNX Runtime cannot load the model"):
        load_model(tmp_path / "model.onnx")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown model format '.h5'"):
        load_model(tmp_path / "model.h5")
    only_spec = tmp_path / "only_spec"
    only_spec.mkdir()
    (only_spec / "model.json").write_text(_spec().to_json())
    with pytest.raises(ValueError, match="no weights found"):
        load_model(only_spec)


def test_quantized_name_from_metadata():
    net = _net()
    spec = _spec(quantization={"method": "flexround", "weight_bits": 4, "label": "flexround W4"})
    model = LoadedModel(net, spec)
    assert model.is_quantized and model.name == "tiny (flexround W4)"
    assert LoadedModel(net, _spec(quantization={"weight_bits": 8})).name == "tiny (W8A32)"


def test_quantized_model_round_trip(tmp_path):
    quant = pytest.importorskip("core.quant")
    if not all(hasattr(quant, n) for n in ("quantize_model", "save_quantized", "load_quantized")):
        pytest.skip("core.quant does not provide quantize_model/save_quantized/load_quantized yet")
    from core.models import save_quantized_model

    base = LoadedModel(_net(6), _spec(size_divisor=4), path=None)
    calib = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    config = quant.QuantConfig(method="rtn", bits=4, device="cpu")
    result = quant.quantize_model(base.module, calib, config)
    folder = save_quantized_model(result, base, tmp_path / "q")
    assert {"model.json", "model.safetensors", "quantized.safetensors"} <= {
        p.name for p in folder.iterdir()
    }
    loaded = load_model(folder)
    assert loaded.is_quantized and "W4" in loaded.name
    assert loaded.spec.quantization["config"]["bits"] == 4
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = result.model.eval()(x)
        torch.testing.assert_close(loaded.module(x), expected, atol=1e-5, rtol=1e-4)
        # The quantized network really differs from the float one.
        assert not torch.allclose(base.module(x), expected, atol=1e-4)
    np.testing.assert_equal(loaded.spec.class_names, base.spec.class_names)


@pytest.mark.parametrize("problem", ["int32", "nan", "inf"])
def test_weights_of_the_wrong_type_or_not_finite_are_refused(tmp_path, problem):
    from safetensors.torch import save_file

    folder = save_model(_net(), _spec(), tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k in state if k.endswith("weight"))
    if problem == "int32":
        state[key] = state[key].round().to(torch.int32)
        match = rf"{key}' is torch.int32 but the architecture needs torch.float32"
    else:
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float(problem)
        match = rf"{key}' holds 1 NaN or infinite values"
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=match):
        load_model(folder)


def test_quantization_with_nan_losses_or_weights_is_never_kept(tmp_path):
    quant = pytest.importorskip("core.quant")
    from core.models import quantized_variant, save_quantized_model

    base = LoadedModel(_net(6), _spec(size_divisor=4), path=None)
    calib = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    result = quant.quantize_model(base.module, calib, quant.QuantConfig(method="rtn", bits=4))
    name = next(iter(result.block_losses))
    result.block_losses[name] = (float("nan"), float("nan"))
    with pytest.raises(ValueError, match=rf"q: quantization gave NaN .* block\(s\) {name}"):
        save_quantized_model(result, base, tmp_path / "q")
    with pytest.raises(ValueError, match="NaN or infinite losses"):
        quantized_variant(result, base, "W4")
    result.block_losses[name] = (1.0, 0.5)
    weight = next(p for p in result.model.parameters() if p.ndim > 1)
    with torch.no_grad():
        weight.view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match="holds 1 NaN or infinite values"):
        save_quantized_model(result, base, tmp_path / "q")
    assert list(tmp_path.iterdir()) == []


def test_a_spec_whose_weights_cannot_fit_in_memory_is_refused_before_building(tmp_path):
    folder = save_model(_net(), _spec(), tmp_path / "m")
    spec = json.loads((folder / "model.json").read_text())
    spec["in_channels"] = 10**9
    (folder / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"building 'unet' with [\d,]+ weights needs [\d.]+ GiB"):
        load_model(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 16, "not a PyTorch file (neither TorchScript, a checkpoint nor"),
        (b"", "not a readable PyTorch file (the file is empty)"),
        (b"PK\x03\x04" + bytes(400), "not a readable PyTorch file (PytorchStreamReader"),
    ],
)
def test_unreadable_torch_files_say_so_in_one_line(tmp_path, content, message):
    (tmp_path / "m.pt").write_bytes(content)
    (tmp_path / "m.json").write_text(_spec().to_json())
    with pytest.raises(ValueError) as error:
        load_model(tmp_path / "m.pt")
    text = str(error.value)
    assert text.startswith(f"{tmp_path / 'm.pt'}: ") and "\n" not in text
    assert "pickled" not in text and message in text

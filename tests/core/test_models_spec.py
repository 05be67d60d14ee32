"""ModelSpec validation and JSON round trips, preprocessing transforms, architecture registry."""

import json

import numpy as np
import pytest
import torch

from core.models import ModelSpec, UNet, apply_preprocessing, build_architecture
from core.models.architectures import known_architectures, register_architecture


def _spec(**changes):
    fields = dict(
        architecture="unet",
        class_names=("background", "organ"),
        arguments={"dims": 2, "base_channels": 4, "depth": 1},
        preprocessing=({"name": "ct_window", "center": 40, "width": 400},),
    )
    fields.update(changes)
    return ModelSpec(**fields)


def test_spec_json_round_trip_keeps_every_field():
    spec = _spec(
        class_colors=((0, 0, 0), (255, 10, 20)),
        mode="3d",
        patch_size=(16, 32, 32),
        name="x",
        quantization={"weight_bits": 4},
    )
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["patch_size"] == [16, 32, 32]


def test_spec_default_colours_one_per_class_and_black_background():
    spec = _spec(class_names=("bg", "a", "b", "c"))
    assert len(spec.class_colors) == 4
    assert spec.class_colors[0] == (0, 0, 0)
    assert len(set(spec.class_colors)) == 4


def test_unknown_architecture_names_file_and_known_ones(tmp_path):
    path = tmp_path / "model.json"
    data = json.loads(_spec().to_json())
    data["architecture"] = "foo"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as error:
        ModelSpec.read(path)
    message = str(error.value)
    assert message.startswith(str(path))
    assert "unknown architecture 'foo' (known: " in message
    assert "unet" in message


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"class_colors": [[0, 0, 0]]}, "class_colors has 1 entries but there are 2 classes"),
        ({"class_colors": [[0, 0, 0], [0, 0, 300]]}, "not three values in 0-255"),
        ({"mode": "4d"}, "mode must be '2d' or '3d'"),
        ({"patch_size": [32, 32, 32]}, "patch_size [32, 32, 32] needs 2 values"),
        ({"activation": "relu"}, "activation must be one of softmax, sigmoid"),
        ({"in_channels": 0}, "in_channels must be a positive integer"),
        ({"class_names": []}, "class_names is empty"),
        ({"class_names": ["a", "a"]}, "class_names has duplicates"),
        ({"preprocessing": [{"name": "gamma"}]}, "preprocessing[0] has unknown transform 'gamma'"),
        ({"colour": 1}, "unknown field(s) colour"),
        ({"format_version": 99}, "format_version 99 is not supported"),
    ],
)
def test_invalid_field_is_named(change, words):
    data = json.loads(_spec().to_json())
    data.update(change)
    with pytest.raises(ValueError) as error:
        ModelSpec.from_dict(data, source="some/model.json")
    assert str(error.value).startswith("some/model.json: ")
    assert words in str(error.value)


def test_missing_field_and_bad_json_are_named():
    with pytest.raises(ValueError, match="m.json: missing required field 'class_names'"):
        ModelSpec.from_dict({"architecture": "unet"}, source="m.json")
    with pytest.raises(ValueError, match="m.json: not valid JSON"):
        ModelSpec.from_json("{architecture: unet", source="m.json")


def test_ct_window_hand_worked_values():
    hu = np.array([[-1000.0, -160.0, 40.0, 140.0, 240.0, 3000.0]])
    out = apply_preprocessing(hu, [{"name": "ct_window", "center": 40, "width": 400}])
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 0.75, 1.0, 1.0]])
    assert hu[0, 0] == -1000.0  # the input is not changed


def test_zscore_measured_fixed_and_nonzero():
    rng = np.random.default_rng(0)
    values = rng.normal(5.0, 3.0, size=(1, 50, 40))
    out = apply_preprocessing(values, [{"name": "zscore"}])
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1.0) < 1e-5
    fixed = apply_preprocessing(values, [{"name": "zscore", "mean": 5.0, "std": 2.0}])
    np.testing.assert_allclose(fixed, (values - 5.0) / 2.0, rtol=1e-5, atol=1e-6)
    masked = values.copy()
    masked[:, :10] = 0.0
    out = apply_preprocessing(masked, [{"name": "zscore", "nonzero": True}])
    inside = masked[masked != 0]
    np.testing.assert_allclose(
        out[masked != 0], (inside - inside.mean()) / inside.std(), rtol=1e-4, atol=1e-5
    )


def test_percentile_scaling_matches_numpy():
    values = np.arange(1000, dtype=np.float64).reshape(1, 10, 100)
    out = apply_preprocessing(values, [{"name": "percentile", "lower": 1, "upper": 99}])
    low, high = np.percentile(values, [1, 99])
    np.testing.assert_allclose(out, (np.clip(values, low, high) - low) / (high - low), atol=1e-6)


def test_rgb_meanstd_per_channel():
    pixel = np.array([255.0, 0.0, 127.5]).reshape(3, 1, 1)
    out = apply_preprocessing(
        pixel, [{"name": "rgb_meanstd", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 0.5]}]
    )
    np.testing.assert_allclose(out.ravel(), [1.0, -2.0, 0.0], atol=1e-6)


def test_unknown_transform_and_bad_parameters_raise():
    with pytest.raises(ValueError, match="unknown transform 'blur'"):
        apply_preprocessing(np.zeros((1, 2, 2)), [{"name": "blur"}])
    with pytest.raises(ValueError, match="'ct_window': bad parameters"):
        apply_preprocessing(np.zeros((1, 2, 2)), [{"name": "ct_window", "level": 3}])


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
@pytest.mark.parametrize("residual", [False, True])
def test_unet_2d_shapes(norm, residual):
    net = build_architecture(
        "unet",
        in_channels=3,
        out_channels=5,
        arguments={"dims": 2, "base_channels": 4, "depth": 2, "norm": norm, "residual": residual},
    ).eval()
    assert net.size_divisor == 4
    assert net(torch.zeros(2, 3, 16, 12)).shape == (2, 5, 16, 12)


def test_unet_3d_shape_and_transposed_upsampling():
    net = UNet(1, 3, dims=3, base_channels=2, depth=2).eval()
    assert net(torch.zeros(1, 1, 8, 8, 12)).shape == (1, 3, 8, 8, 12)
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert len(ups) == 2


def test_unet_parameter_count_matches_hand_count():
    # depth 1, base 2, no norm (bias on): enc0 1->2->2, enc1 2->4->4, up 4->2 (k2), dec 4->2->2,
    # head 2->3 (1x1). Each 3x3 conv: in*out*9 + out.
    expected = (
        (1 * 2 * 9 + 2)
        + (2 * 2 * 9 + 2)
        + (2 * 4 * 9 + 4)
        + (4 * 4 * 9 + 4)
        + (4 * 2 * 4 + 2)
        + (4 * 2 * 9 + 2)
        + (2 * 2 * 9 + 2)
        + (2 * 3 + 3)
    )
    net = UNet(1, 3, dims=2, base_channels=2, depth=1, norm="none")
    assert sum(p.numel() for p in net.parameters()) == expected


def test_registry_rejects_unknown_name_bad_arguments_and_duplicates():
    with pytest.raises(ValueError, match=r"unknown architecture 'vnet' \(known: .*unet"):
        build_architecture("vnet", in_channels=1, out_channels=2, arguments={})
    with pytest.raises(ValueError, match="bad arguments"):
        build_architecture("unet", in_channels=1, out_channels=2, arguments={"width": 3})
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("unet", lambda **kw: None)
    assert "unet" in known_architectures()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("class_names", "abcd", "class_names must be a list, not a string"),
        ("class_names", ["bg", 7], r"class_names\[1\] must be a string, not an integer"),
        ("in_channels", True, "in_channels must be an integer, not a boolean"),
        ("in_channels", 1.5, "in_channels must be an integer, not a number"),
        ("arguments", [], "arguments must be an object, not a list"),
        ("preprocessing", {"name": "zscore"}, "preprocessing must be a list, not an object"),
        ("patch_size", "64", "patch_size must be a list or null, not a string"),
        ("quantization", 4, "quantization must be an object or null, not an integer"),
    ],
)
def test_spec_fields_of_the_wrong_json_type_are_errors(field, value, message):
    data = {"architecture": "unet", "class_names": ["bg", "organ"], field: value}
    with pytest.raises(ValueError, match=f"m.json: {message}"):
        ModelSpec.from_dict(data, "m.json")

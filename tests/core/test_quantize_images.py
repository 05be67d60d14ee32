"""core.quantize_images and the quantized-variant helpers of core.models."""

import numpy as np
import torch

from core.models import (
    LoadedModel,
    calibration_inputs,
    load_model,
    model_input,
    quantized_variant,
    save_quantized_model,
)
from core.phantom import make_phantom
from core.quant import QuantConfig
from core.quantize_images import quantize_from_images
from tests.tiny_models import tiny_unet


def tiny_model() -> LoadedModel:
    return tiny_unet()


def test_cropped_calibration_samples_are_windows_of_preprocessed_slices():
    model = tiny_model()
    image, _ = make_phantom(0, shape=(40, 36, 16))
    patches = calibration_inputs(model, image, n=5, crop=16, seed=3)
    assert tuple(patches.shape) == (5, 1, 16, 16)
    volume = model_input(model, image)  # (Cin, I, J, K), what the model sees
    for patch in patches.numpy():
        found = False
        for k in range(volume.shape[3]):
            s = volume[0, :, :, k]
            for i in range(s.shape[0] - 15):
                for j in range(s.shape[1] - 15):
                    if np.array_equal(s[i : i + 16, j : j + 16], patch[0]):
                        found = True
                        break
                if found:
                    break
            if found:
                break
        assert found


def test_variant_in_memory_and_saved_folder_describe_themselves_alike(tmp_path):
    base = tiny_model()
    image, _ = make_phantom(1, shape=(32, 32, 16))
    config = QuantConfig(method="rtn", bits=4, device="cpu")
    result = quantize_from_images(base, image, config, n_samples=4, crop=16)
    variant = quantized_variant(result, base, "W4 RTN (tensor)")
    assert variant.name == "W4 RTN (tensor)"
    folder = save_quantized_model(result, base, tmp_path / "q", label="W4 RTN (tensor)")
    loaded = load_model(folder)
    assert loaded.spec.quantization["label"] == variant.spec.quantization["label"]
    assert loaded.spec.quantization["weight_bits"] == variant.spec.quantization["weight_bits"] == 4
    x = calibration_inputs(base, image, n=2, crop=16)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), variant.module(x))

"""predict(): slice-wise and sliding-window inference checked against brute force on tiny inputs."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from core.io.image import Image
from core.jobs import CancelToken, JobCancelled
from core.models import LoadedModel, ModelSpec, UNet, calibration_inputs, predict
from core.models import inference as inference_module
from core.models.inference import gaussian_importance, window_starts


def _image(array, natural=False):
    return Image(array=array, affine=np.diag([-0.8, 0.8, 2.5, 1.0]), is_natural=natural)


def _pointwise(in_channels, classes, dims, seed=0):
    torch.manual_seed(seed)
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(in_channels, classes, kernel_size=1)
    return conv.eval()


def _spec(classes=3, in_channels=1, **changes):
    return ModelSpec(
        architecture="unet",
        class_names=tuple(f"c{i}" for i in range(classes)),
        in_channels=in_channels,
        **changes,
    )


def _pointwise_reference(conv, volume, activation="softmax"):
    """Brute force: apply the 1x1 conv's weights voxel by voxel (no torch conv, no batching)."""
    weight = conv.weight.detach().numpy().reshape(conv.out_channels, conv.in_channels)
    bias = conv.bias.detach().numpy()
    channels = volume.reshape(conv.in_channels, -1).astype(np.float64)
    logits = weight @ channels + bias[:, None]
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=0))
        probs = e / e.sum(axis=0)
    else:
        probs = 1.0 / (1.0 + np.exp(-logits))
    return probs.reshape(conv.out_channels, *volume.shape[1:])


def test_window_starts_cover_every_index_with_overlap():
    for size, patch, overlap in itertools.product(range(1, 40), (4, 7, 16), (0.0, 0.25, 0.5)):
        starts = window_starts(size, patch, overlap)
        if patch >= size:
            assert starts == [0]
            continue
        assert starts[0] == 0 and starts[-1] == size - patch
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + patch] = True
        assert covered.all()
        gaps = np.diff(starts)
        assert (gaps > 0).all() and (gaps <= max(1, int(patch * (1 - overlap)))).all()


def test_gaussian_importance_peaks_in_centre_and_stays_positive():
    w = gaussian_importance((9, 7))
    assert w.shape == (9, 7)
    assert w[4, 3] == pytest.approx(1.0)
    assert (w > 0).all()
    torch.testing.assert_close(w, w.flip(0).flip(1))
    assert w[0, 0] < w[2, 2] < w[4, 3]


def test_2d_softmax_matches_voxelwise_brute_force_and_sums_to_one():
    rng = np.random.default_rng(1)
    array = rng.normal(size=(6, 5, 7)).astype(np.float32)
    conv = _pointwise(1, 3, 2)
    model = LoadedModel(conv, _spec(mode="2d"))
    probs = predict(model, _image(array), device="cpu", batch_size=3)
    assert probs.shape == (3, 6, 5, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _pointwise_reference(conv, array[None]), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_sigmoid_and_preprocessing_are_applied():
    rng = np.random.default_rng(2)
    array = rng.uniform(-300, 300, size=(4, 4, 3)).astype(np.float32)
    conv = _pointwise(1, 2, 2)
    spec = _spec(
        classes=2,
        activation="sigmoid",
        preprocessing=({"name": "ct_window", "center": 0, "width": 400},),
    )
    probs = predict(LoadedModel(conv, spec), _image(array), device="cpu")
    windowed = (np.clip(array, -200, 200) + 200) / 400
    np.testing.assert_allclose(
        probs, _pointwise_reference(conv, windowed[None], "sigmoid"), atol=1e-5
    )


def test_2d_slices_stay_aligned_with_voxel_axes():
    # A network that says "class 1" where the voxel is bright: argmax must land on that voxel.
    conv = nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([[[[-1.0]]], [[[1.0]]]])
        conv.bias.zero_()
    array = np.zeros((9, 6, 5), np.float32)
    array[7, 1, 3] = 10.0
    probs = predict(LoadedModel(conv, _spec(classes=2)), _image(array), device="cpu")
    assert np.argwhere(probs.argmax(axis=0) == 1).tolist() == [[7, 1, 3]]


def test_unet_slicewise_pads_odd_sizes_and_crops_back():
    torch.manual_seed(0)
    net = UNet(1, 2, dims=2, base_channels=2, depth=2).eval()
    array = np.random.default_rng(3).normal(size=(8, 12, 3)).astype(np.float32)
    probs = predict(LoadedModel(net, _spec(classes=2)), _image(array), device="cpu")
    with torch.no_grad():  # divisible sizes: no padding, compare with a plain forward per slice
        for k in range(3):
            expected = torch.softmax(net(torch.from_numpy(array[None, None, :, :, k])), 1)[0]
            np.testing.assert_allclose(probs[..., k], expected.numpy(), atol=1e-5)
    odd = np.random.default_rng(4).normal(size=(7, 10, 2)).astype(np.float32)
    probs = predict(LoadedModel(net, _spec(classes=2)), _image(odd), device="cpu")
    assert probs.shape == (2, 7, 10, 2)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_inference_matches_a_plain_forward_and_leaves_the_module_alone(dims):
    torch.manual_seed(1)
    net = UNet(1, 3, dims=dims, base_channels=4, depth=2).eval()
    before = [(id(p), p.data_ptr()) for p in net.parameters()]
    array = np.random.default_rng(7).normal(size=(16, 16, 8)).astype(np.float32)
    spec = _spec(classes=3, mode="2d" if dims == 2 else "3d")
    probs = predict(LoadedModel(net, spec), _image(array), device="cpu")
    # The caller's module is not touched: same tensors, same memory, default order (a copy ran).
    assert [(id(p), p.data_ptr()) for p in net.parameters()] == before
    assert all(p.is_contiguous() for p in net.parameters())
    with torch.no_grad():
        if dims == 2:  # slices are the batch
            batch = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)[:, None]))
            expected = torch.softmax(net(batch), 1).numpy().transpose(1, 2, 3, 0)
        else:  # one patch: the whole volume
            expected = torch.softmax(net(torch.from_numpy(array)[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


class _PatchMean(nn.Module):
    """Logits depend on the whole patch (its mean), so blending weights show in the output."""

    def forward(self, x):
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
        return torch.cat([x * 0, x + mean], dim=1)


def test_3d_sliding_window_equals_brute_force_gaussian_blend():
    array = np.random.default_rng(5).normal(size=(9, 7, 6)).astype(np.float32)
    patch = (5, 4, 4)
    spec = _spec(classes=2, mode="3d", patch_size=patch)
    probs = predict(LoadedModel(_PatchMean(), spec), _image(array), device="cpu", overlap=0.5)
    # Brute force: enumerate the windows, weight each window's output by a hand-built Gaussian.
    weights = np.ones(patch)
    for axis, n in enumerate(patch):
        c = np.arange(n) - (n - 1) / 2
        shape = [1, 1, 1]
        shape[axis] = n
        weights = weights * np.exp(-0.5 * (c / (n / 8)) ** 2).reshape(shape)
    weights = np.maximum(weights / weights.max(), 1e-3)
    total = np.zeros((2, *array.shape))
    norm = np.zeros(array.shape)
    for a, b, c in itertools.product(
        *(window_starts(s, p, 0.5) for s, p in zip(array.shape, patch, strict=True))
    ):
        window = array[a : a + 5, b : b + 4, c : c + 4].astype(np.float64)
        logit1 = window + window.mean()
        p1 = 1 / (1 + np.exp(-logit1))
        total[0, a : a + 5, b : b + 4, c : c + 4] += (1 - p1) * weights
        total[1, a : a + 5, b : b + 4, c : c + 4] += p1 * weights
        norm[a : a + 5, b : b + 4, c : c + 4] += weights
    np.testing.assert_allclose(probs, total / norm, atol=1e-5)


def test_2d_patch_mode_with_pointwise_model_equals_whole_slice():
    array = np.random.default_rng(6).normal(size=(13, 11, 2)).astype(np.float32)
    conv = _pointwise(1, 3, 2)
    spec = _spec(patch_size=(6, 5))
    calls = []
    probs = predict(LoadedModel(conv, spec), _image(array), device="cpu", on_progress=calls.append)
    np.testing.assert_allclose(probs, _pointwise_reference(conv, array[None]), atol=1e-5)
    assert calls[-1].step == calls[-1].total == len(calls)


def test_float16_output_for_big_results(monkeypatch):
    array = np.random.default_rng(7).normal(size=(6, 6, 4)).astype(np.float32)
    conv = _pointwise(1, 3, 2)
    model = LoadedModel(conv, _spec())
    full = predict(model, _image(array), device="cpu")
    monkeypatch.setattr(inference_module, "FLOAT16_OUTPUT_BYTES", full.nbytes - 1)
    half = predict(model, _image(array), device="cpu")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, full, atol=1e-3)


def test_progress_reports_every_batch_and_cancel_stops_between_batches():
    array = np.zeros((4, 4, 10), np.float32)
    forwards = []

    class Counting(nn.Module):
        def forward(self, x):
            forwards.append(x.shape[0])
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    model = LoadedModel(Counting(), _spec(classes=2))
    reports = []
    predict(model, _image(array), device="cpu", batch_size=3, on_progress=reports.append)
    assert [r.step for r in reports] == [1, 2, 3, 4]
    assert {r.total for r in reports} == {4} and reports[0].stage == "inference"
    # First the memory check's probe (one small input on a copy), then the batches.
    assert forwards == [1, 3, 3, 3, 1]

    forwards.clear()
    token = CancelToken()

    def cancel_after_two(progress):
        if progress.step == 2:
            token.cancel()

    with pytest.raises(JobCancelled):
        predict(
            model,
            _image(array),
            device="cpu",
            batch_size=3,
            on_progress=cancel_after_two,
            cancel=token,
        )
    assert forwards == [1, 3, 3]


def test_natural_rgb_image_runs_once_and_grey_image_feeds_three_channels():
    rgb = np.random.default_rng(8).integers(0, 256, size=(5, 6, 1, 3)).astype(np.uint8)
    conv = _pointwise(3, 2, 2)
    spec = _spec(classes=2, in_channels=3, preprocessing=({"name": "rgb_meanstd"},))
    probs = predict(LoadedModel(conv, spec), _image(rgb, natural=True), device="cpu")
    assert probs.shape == (2, 5, 6, 1)
    normalised = np.moveaxis(rgb, -1, 0) / 255.0 - np.reshape([0.485, 0.456, 0.406], (3, 1, 1, 1))
    normalised = normalised / np.reshape([0.229, 0.224, 0.225], (3, 1, 1, 1))
    np.testing.assert_allclose(probs, _pointwise_reference(conv, normalised), atol=1e-5)

    grey = rgb[..., 0]
    probs = predict(
        LoadedModel(conv, _spec(classes=2, in_channels=3)), _image(grey, True), device="cpu"
    )
    np.testing.assert_allclose(
        probs, _pointwise_reference(conv, np.repeat(grey[None].astype(np.float32), 3, 0)), atol=1e-4
    )


def test_bad_calls_raise_value_error():
    conv3d = _pointwise(1, 2, 3)
    model3d = LoadedModel(conv3d, _spec(classes=2, mode="3d"))
    with pytest.raises(ValueError, match="is 3-D but the image is a single slice"):
        predict(model3d, _image(np.zeros((4, 4, 1)), natural=True), device="cpu")
    model = LoadedModel(_pointwise(1, 2, 2), _spec(classes=2))
    with pytest.raises(ValueError, match="overlap must be in"):
        predict(model, _image(np.zeros((4, 4, 2))), device="cpu", overlap=1.0)
    two_channel = LoadedModel(_pointwise(2, 2, 2), _spec(classes=2, in_channels=2))
    with pytest.raises(ValueError, match="image has 1 channel.* expects 2"):
        predict(two_channel, _image(np.zeros((4, 4, 2))), device="cpu")


def test_calibration_inputs_prefer_foreground_slices_and_are_preprocessed():
    array = np.full((16, 16, 20), -1000.0, np.float32)
    array[..., ::2] = np.random.default_rng(9).uniform(0, 200, size=(16, 16, 10))  # anatomy
    spec = _spec(classes=2, preprocessing=({"name": "ct_window", "center": 40, "width": 400},))
    model = LoadedModel(_pointwise(1, 2, 2), spec)
    batch = calibration_inputs(model, _image(array), n=10, seed=0)
    assert batch.shape == (10, 1, 16, 16) and batch.dtype == torch.float32
    windowed = (np.clip(array, -160, 240) + 160) / 400
    for sample in batch.numpy():
        matches = [k for k in range(20) if np.allclose(sample[0], windowed[..., k])]
        assert matches and matches[0] % 2 == 0
    other = calibration_inputs(model, [_image(array), _image(array)], n=30, seed=1)
    assert other.shape == (30, 1, 16, 16)


def test_one_picture_gives_n_patches_and_whole_slices_say_why_there_are_fewer():
    from core.models.calibration import calibration_shortfall

    array = np.random.default_rng(11).uniform(0, 200, size=(24, 20, 1)).astype(np.float32)
    spec = _spec(classes=2, preprocessing=({"name": "ct_window", "center": 40, "width": 400},))
    model = LoadedModel(_pointwise(1, 2, 2), spec)
    windowed = (np.clip(array[..., 0], -160, 240) + 160) / 400
    batch = calibration_inputs(model, _image(array), n=12, seed=0, crop=8)
    assert batch.shape == (12, 1, 8, 8)
    # Every sample is an 8x8 window of the one slice, found by trying every position.
    for sample in batch.numpy():
        assert any(
            np.allclose(sample[0], windowed[i : i + 8, j : j + 8])
            for i in range(24 - 7)
            for j in range(20 - 7)
        )
    assert len({sample.tobytes() for sample in batch.numpy()}) > 1
    assert calibration_shortfall(model, 12, 12, 8) == ""
    whole = calibration_inputs(model, _image(array), n=12, seed=0)
    assert whole.shape[0] == 1
    why = calibration_shortfall(model, 1, 12, None)
    assert "took 1 calibration samples, not 12" in why and "whole slices" in why


def test_calibration_inputs_3d_patches_padded_to_divisor():
    array = np.random.default_rng(10).normal(size=(10, 9, 8)).astype(np.float32)
    spec = _spec(classes=2, mode="3d", patch_size=(6, 6, 6), size_divisor=4)
    batch = calibration_inputs(LoadedModel(_pointwise(1, 2, 3), spec), _image(array), n=3)
    assert batch.shape == (3, 1, 8, 8, 8)


class _Fixed(nn.Module):
    """Returns logits of a chosen shape whatever the input (a broken or mismatched network)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda x: torch.zeros(x.shape[0], 3, 1, 1), "1x1 map"),
        (lambda x: torch.zeros(x.shape[0], 3, x.shape[2] * 2, x.shape[3] * 2), "twice the size"),
        (lambda x: torch.zeros(x.shape[0], 2, *x.shape[2:]), "wrong class count"),
    ],
)
@pytest.mark.parametrize("patch", [None, (8, 8)])
def test_outputs_of_the_wrong_shape_are_refused(make, problem, patch):
    model = LoadedModel(_Fixed(make), _spec(3, patch_size=patch))
    image = _image(np.zeros((12, 10, 2), np.float32))
    with pytest.raises(ValueError, match=r"output has shape .* expected \(\d+, 3, ") as error:
        predict(model, image, device="cpu")
    assert "one channel per class" in str(error.value), problem


def test_non_finite_outputs_and_inputs_are_refused(tmp_path):
    nan_model = LoadedModel(
        _Fixed(lambda x: x.new_full((x.shape[0], 3, *x.shape[2:]), np.nan)), _spec(3)
    )
    with pytest.raises(ValueError, match="NaN or infinite values"):
        predict(nan_model, _image(np.zeros((8, 8, 1), np.float32)), device="cpu")
    volume = np.zeros((8, 8, 2), np.float32)
    volume[1, 2, 0], volume[3, 3, 1] = np.nan, np.inf
    image = Image(array=volume, affine=np.eye(4), path=tmp_path / "ct.nii")
    model = LoadedModel(_pointwise(1, 3, 2), _spec(3))
    with pytest.raises(ValueError, match=r"ct.nii: 2 of 128 voxels are NaN or infinite"):
        predict(model, image, device="cpu")


def test_16_bit_pictures_are_scaled_to_the_8_bit_range_the_model_expects():
    spec = _spec(3, in_channels=3, preprocessing=({"name": "rgb_meanstd"},))
    model = LoadedModel(_pointwise(3, 3, 2), spec)
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (6, 7, 1, 3)).astype(np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same picture, 16 bits deep
    from core.models.inputs import model_input

    np.testing.assert_allclose(
        model_input(model, _image(sixteen, natural=True)),
        model_input(model, _image(eight, natural=True)),
        atol=1e-5,
    )


def test_a_segmentation_that_cannot_fit_in_memory_is_refused_before_any_work(monkeypatch):
    from core import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 10_000)
    model = LoadedModel(_pointwise(1, 3, 2), _spec(3))
    with pytest.raises(memory.MemoryLimitError, match=r"segmenting 40x30x2 voxels into 3 classes"):
        predict(model, _image(np.zeros((40, 30, 2), np.float32)), device="cpu")


class _ReshapesWrongly(nn.Module):
    def forward(self, x):
        return x.view(-1, 7, 3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript is what users bring
def test_a_torchscript_failure_is_one_line_naming_the_model():
    scripted = torch.jit.script(_ReshapesWrongly())
    model = LoadedModel(scripted, _spec(3))
    with pytest.raises(ValueError) as error:
        predict(model, _image(np.zeros((8, 8, 1), np.float32)), device="cpu")
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    assert "the model failed on an input of shape (1, 1, 8, 8)" in text
    assert "is invalid for input of size 64" in text


def test_the_networks_activations_count_in_the_memory_check(monkeypatch):
    from core import memory
    from core.models.footprint import activation_bytes_per_voxel, inference_bytes

    net = UNet(1, 3, dims=2, base_channels=8, depth=2).eval()
    model = LoadedModel(net, _spec(3, size_divisor=4))
    image = _image(np.zeros((64, 64, 1), np.float32))
    per_voxel = activation_bytes_per_voxel(net, 1, 2, 4)
    # Every layer's output per voxel: at least the 8 full-resolution float32 channels.
    assert per_voxel is not None and per_voxel >= 8 * 4
    plain = inference_bytes(
        shape=(64, 64, 1),
        in_channels=1,
        num_classes=3,
        output_itemsize=4,
        window_voxels=64 * 64,
        per_voxel_activations=None,
    )
    monkeypatch.setattr(memory, "available_bytes", lambda: plain + 1000)
    with pytest.raises(memory.MemoryLimitError, match="and the network's activations"):
        predict(model, image, device="cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda: plain + int(per_voxel * 64 * 64) + 1)
    assert predict(model, image, device="cpu").shape == (3, 64, 64, 1)

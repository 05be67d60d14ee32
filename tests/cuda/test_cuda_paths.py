"""Every CUDA path against the CPU: decisions, inference, quantization, memory, cancel, the CLI.

Marked ``cuda``: skipped without a CUDA device; ``tools/gpu_check.sh`` runs them on a GPU, and
its ``--dry-run`` runs them with the CPU standing in for the GPU (see conftest.py).
"""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
import torch

from core.demo import demo_paths
from core.jobs import CancelToken, JobCancelled
from core.models import calibration_inputs, load_model, predict
from core.phantom import make_phantom
from core.quant import QuantConfig, quantize_model
from core.seg.rma import rankseg_rma

pytestmark = pytest.mark.cuda

DEMO = demo_paths()
needs_demo = pytest.mark.skipif(bool(DEMO.missing()), reason="demo files missing")
SHAPE = (96, 96, 16)


def _smooth_probabilities(shape: tuple[int, ...], seed: int, multilabel: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    batch, classes, *spatial = shape
    coarse = torch.randn((batch, classes, *[max(2, s // 16) for s in spatial]), generator=generator)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    logits = 3 * torch.nn.functional.interpolate(coarse, size=spatial, mode=mode)
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _release_check(device: torch.device, baseline: int, record, job: str) -> None:
    """On CUDA, the job's tensors are freed when it returns; record its peak."""
    if device.type != "cuda":
        return
    torch.cuda.synchronize(device)
    record(f"peak GPU memory, {job}", torch.cuda.max_memory_allocated(device) / 2**20, "MiB")
    leaked = torch.cuda.memory_allocated(device) - baseline
    assert leaked <= 1 << 20, f"{job} left {leaked / 2**20:.1f} MiB allocated on {device}"


def _start(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


@pytest.mark.parametrize(
    ("shape", "multilabel", "metric"),
    [
        ((4, 5, 64, 64), False, "dice"),
        ((2, 3, 48, 40), True, "dice"),
        ((1, 3, 32, 32, 24), False, "iou"),
    ],
)
def test_rma_on_the_device_equals_rma_on_the_cpu(target_device, record, shape, multilabel, metric):
    probs = _smooth_probabilities(shape, seed=sum(shape), multilabel=multilabel)
    options = {"metric": metric, "multilabel": multilabel, "return_info": True}
    cpu_mask, cpu_info = rankseg_rma(probs, **options)
    baseline = _start(target_device)
    dev_mask, dev_info = rankseg_rma(probs.to(target_device), **options)
    assert dev_mask.device.type == target_device.type
    assert torch.equal(dev_mask.cpu(), cpu_mask)
    np.testing.assert_allclose(
        np.asarray(dev_info.objective), np.asarray(cpu_info.objective), rtol=0, atol=1e-6
    )
    del dev_mask, dev_info
    _release_check(target_device, baseline, record, f"RMA {'x'.join(map(str, shape))}")


@needs_demo
def test_inference_on_the_device_matches_fp32_on_the_cpu(target_device, record):
    model = load_model(DEMO.model)
    image, _ = make_phantom(7, shape=SHAPE)
    reference = predict(model, image, device="cpu")
    baseline = _start(target_device)
    probs = predict(model, image, device=target_device)  # CUDA runs under float16 autocast
    _release_check(target_device, baseline, record, "inference of a 96x96x16 phantom")
    assert probs.shape == reference.shape
    assert float(np.abs(probs.astype(np.float32) - reference).max()) <= 0.05
    labels, reference_labels = probs.argmax(0), reference.argmax(0)
    for c in range(1, probs.shape[0]):
        assert _dice(labels == c, reference_labels == c) >= 0.999, f"class {c}"


def _output_error(result, fp_model: torch.nn.Module, inputs: torch.Tensor) -> float:
    quantized = result.model.cpu().eval()
    with torch.no_grad():
        return float(((quantized(inputs) - fp_model(inputs)) ** 2).mean())


@needs_demo
@pytest.mark.parametrize("method", ["flexround", "adaround"])
def test_quantization_on_the_device_matches_the_cpu_run(target_device, record, method):
    model = load_model(DEMO.model)
    image, _ = make_phantom(1, shape=SHAPE)
    held_out, _ = make_phantom(2, shape=SHAPE)
    calib = calibration_inputs(model, image, n=16, seed=0, crop=32)
    test_inputs = calibration_inputs(model, held_out, n=8, seed=1, crop=32)
    common = {"method": method, "bits": 4, "iters": 40, "batch_size": 8, "seed": 0}
    cpu = quantize_model(model, calib, QuantConfig(device="cpu", **common))
    baseline = _start(target_device)
    dev = quantize_model(model, calib, QuantConfig(device=str(target_device), **common))
    assert dev.device.lower().startswith(target_device.type)  # "CUDA: NVIDIA ..." or "CPU, ..."
    _release_check(target_device, baseline, record, f"{method} W4 on the demo")
    fp_model = model.module.cpu().eval()
    cpu_error = _output_error(cpu, fp_model, test_inputs)
    dev_error = _output_error(dev, fp_model, test_inputs)
    record(f"{method} W4 output MSE, device / CPU", dev_error / cpu_error, "ratio")
    assert abs(dev_error - cpu_error) <= 0.10 * cpu_error


def _cancel_after_first_progress(job, token: CancelToken):
    """Run ``job(on_progress)`` in a thread; cancel at its first progress report."""
    outcome: dict[str, BaseException | object] = {}

    def on_progress(_progress) -> None:
        token.cancel()

    def run() -> None:
        try:
            outcome["result"] = job(on_progress)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the job did not stop"
    return outcome


@needs_demo
def test_cancel_stops_inference_and_quantization_on_the_device(target_device, record):
    model = load_model(DEMO.model)
    image, _ = make_phantom(3, shape=SHAPE)
    baseline = _start(target_device)
    token = CancelToken()
    outcome = _cancel_after_first_progress(
        lambda report: predict(
            model, image, device=target_device, batch_size=1, on_progress=report, cancel=token
        ),
        token,
    )
    assert isinstance(outcome.get("error"), JobCancelled)
    calib = calibration_inputs(model, image, n=8, seed=0, crop=32)
    token = CancelToken()
    config = QuantConfig(bits=4, iters=400, batch_size=4, device=str(target_device))
    outcome = _cancel_after_first_progress(
        lambda report: quantize_model(model, calib, config, on_progress=report, cancel=token),
        token,
    )
    assert isinstance(outcome.get("error"), JobCancelled)
    del outcome
    _release_check(target_device, baseline, record, "cancelled jobs")


@needs_demo
def test_segment_command_on_the_device_gives_the_cpu_mask(target_device, tmp_path):
    from main import main

    image, _ = make_phantom(5, shape=SHAPE)
    source = tmp_path / "phantom.nii.gz"
    nib.Nifti1Image(image.array, image.affine).to_filename(source)
    masks = {}
    for device in ("cpu", str(target_device.type)):
        out = tmp_path / f"mask_{device}.nii.gz"
        argv = ["--quiet", "segment", str(source), "--model", str(DEMO.model)]
        argv += ["--decision", "rma-dice", "--device", device, "--out", str(out)]
        assert main(argv) == 0
        masks[device] = np.asarray(nib.load(out).dataobj)
    cpu, dev = masks["cpu"], masks[str(target_device.type)]
    for c in np.union1d(np.unique(cpu), np.unique(dev)):
        if c:
            assert _dice(cpu == c, dev == c) >= 0.999, f"class {c}"

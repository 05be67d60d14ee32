"""Every CUDA path against the CPU, side by side in one run, as one table.

Usage::

    python benchmarks/bench_gpu.py [--device cuda] [--tiny] [--out results.md] [--only NAME ...]

Rows (each timed on the CPU with all of torch's threads and on ``--device``; the device side
gets one untimed warm-up run first, so CUDA's start-up and kernel compilation are not counted):

* RankSEG-RMA (Dice) on 4x21x512x512 softmax probabilities and on a 1x3x512x512x300 volume:
  time, and whether the masks are identical;
* inference of the CT demo model on the demo volume (160x160x48) and on a 512x512x300 phantom:
  time, and the smallest per-class Dice between the two argmax masks;
* FlexRound W4 of the demo model (64 calibration slices cropped to 64, 200 iterations per
  block): time, and the device run's output error (MSE against FP32 on held-out slices) over the
  CPU run's;
* an nnU-Net-sized 3-D network (dynamic_network_architectures' PlainConvUNet, 6 stages of
  32-320 features, the size of nnU-Net's default 3d_fullres network): time of 4 forward passes
  on 1x1x128x128x128 patches, and the largest logit difference (skipped when the package is
  missing).

Each row also gives the device's peak memory (``torch.cuda.max_memory_allocated``) for the job.
``--tiny`` shrinks every size so the whole table runs in seconds on a CPU (``--device cpu``):
``tools/gpu_check.sh --dry-run`` runs it that way in CI so the script never rots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


@dataclass
class Row:
    name: str
    cpu_s: float
    device_s: float
    quality: str
    device_peak_mib: float | None


@dataclass(frozen=True)
class Sizes:
    rma_2d: tuple[int, ...]
    rma_3d: tuple[int, ...]
    demo_volume: tuple[int, int, int] | None  # None: the bundled demo image itself
    big_volume: tuple[int, int, int]
    flex_samples: int
    flex_crop: int
    flex_iters: int
    nnunet_features: tuple[int, ...]
    nnunet_patch: int
    nnunet_passes: int


FULL = Sizes(
    rma_2d=(4, 21, 512, 512),
    rma_3d=(1, 3, 512, 512, 300),
    demo_volume=None,
    big_volume=(512, 512, 300),
    flex_samples=64,
    flex_crop=64,
    flex_iters=200,
    nnunet_features=(32, 64, 128, 256, 320, 320),
    nnunet_patch=128,
    nnunet_passes=4,
)
TINY = Sizes(
    rma_2d=(2, 5, 64, 64),
    rma_3d=(1, 3, 48, 48, 24),
    demo_volume=(64, 64, 16),
    big_volume=(96, 96, 16),
    flex_samples=8,
    flex_crop=32,
    flex_iters=10,
    nnunet_features=(4, 8, 16, 16),
    nnunet_patch=32,
    nnunet_passes=1,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _timed(job: Callable[[], object], device: torch.device) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    result = job()
    _sync(device)
    return time.perf_counter() - start, result


def _side_by_side(
    job: Callable[[torch.device], object], device: torch.device
) -> tuple[float, object, float, object, float | None]:
    """CPU time and result, device time and result (after a warm-up), device peak memory."""
    cpu = torch.device("cpu")
    cpu_s, cpu_result = _timed(lambda: job(cpu), cpu)
    if device.type == "cuda":
        job(device)  # warm-up: CUDA context, cuDNN autotuning, kernel caches
    _peak_start(device)
    device_s, device_result = _timed(lambda: job(device), device)
    return cpu_s, cpu_result, device_s, device_result, _peak_mib(device)


def _probabilities(shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    batch, classes, *spatial = shape
    coarse = torch.randn((batch, classes, *[max(2, s // 32) for s in spatial]), generator=generator)
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    logits = 4 * torch.nn.functional.interpolate(coarse, size=spatial, mode=mode)
    return torch.softmax(logits, dim=1)


def bench_rma(shape: tuple[int, ...], device: torch.device) -> Row:
    from core.seg.rma import rankseg_rma

    probs = _probabilities(shape)

    def job(where: torch.device):
        return rankseg_rma(probs.to(where), metric="dice").cpu()

    cpu_s, cpu_mask, dev_s, dev_mask, peak = _side_by_side(job, device)
    same = bool(torch.equal(cpu_mask, dev_mask))
    differing = int((cpu_mask != dev_mask).sum())
    quality = "masks identical" if same else f"{differing} labels differ"
    return Row(f"RMA Dice {'x'.join(map(str, shape))}", cpu_s, dev_s, quality, peak)


def _min_dice(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest foreground-class Dice between two label maps (classes absent from both: 1)."""
    from core.metrics import dice_score

    classes = int(max(a.max(), b.max())) + 1
    if classes < 2:
        return 1.0
    pair = [torch.from_numpy(np.ascontiguousarray(x)).long()[None] for x in (a, b)]
    return float(dice_score(*pair, num_classes=classes)[0, 1:].min())


def bench_inference(name: str, image, device: torch.device) -> Row:
    from core.demo import demo_paths
    from core.models import load_model, predict

    model = load_model(demo_paths().model)

    def job(where: torch.device):
        return predict(model, image, device=where).argmax(0)

    cpu_s, cpu_labels, dev_s, dev_labels, peak = _side_by_side(job, device)
    quality = f"min class Dice vs CPU {_min_dice(cpu_labels, dev_labels):.4f}"
    return Row(name, cpu_s, dev_s, quality, peak)


def bench_flexround(sizes: Sizes, device: torch.device) -> Row:
    from core.demo import demo_paths
    from core.models import calibration_inputs, load_model
    from core.phantom import make_phantom
    from core.quant import QuantConfig, quantize_model

    model = load_model(demo_paths().model)
    shape = sizes.demo_volume or (160, 160, 48)
    calib = calibration_inputs(
        model, make_phantom(1, shape=shape)[0], n=sizes.flex_samples, seed=0, crop=sizes.flex_crop
    )
    held = calibration_inputs(model, make_phantom(2, shape=shape)[0], n=8, seed=1, crop=64)
    fp = model.module.cpu().eval()

    def job(where: torch.device):
        config = QuantConfig(bits=4, iters=sizes.flex_iters, batch_size=16, device=str(where))
        quantized = quantize_model(model, calib, config).model.cpu().eval()
        with torch.no_grad():
            return float(((quantized(held) - fp(held)) ** 2).mean())

    cpu_s, cpu_error, dev_s, dev_error, peak = _side_by_side(job, device)
    quality = f"output MSE device/CPU {dev_error / cpu_error:.3f}"
    name = f"FlexRound W4 demo ({sizes.flex_samples} samples, {sizes.flex_iters} iters)"
    return Row(name, cpu_s, dev_s, quality, peak)


def bench_nnunet_network(sizes: Sizes, device: torch.device) -> Row | None:
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
    except ImportError:
        return None
    n = len(sizes.nnunet_features)
    torch.manual_seed(0)
    network = PlainConvUNet(
        1, n, list(sizes.nnunet_features), torch.nn.Conv3d, 3, [1] + [2] * (n - 1), 2, 3, 2,
        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
    ).eval()  # fmt: skip
    patch = torch.randn(1, 1, *(sizes.nnunet_patch,) * 3)

    def job(where: torch.device):
        net = network.to(where)
        x = patch.to(where)
        with torch.no_grad(), torch.autocast(where.type, enabled=where.type == "cuda"):
            for _ in range(sizes.nnunet_passes):
                out = net(x)
        return out.float().cpu()

    cpu_s, cpu_out, dev_s, dev_out, peak = _side_by_side(job, device)
    network.cpu()
    quality = f"max logit diff {float((cpu_out - dev_out).abs().max()):.3g}"
    params = sum(p.numel() for p in network.parameters()) / 1e6
    passes = f"{sizes.nnunet_passes} x 1x1x{sizes.nnunet_patch}^3"
    name = f"nnU-Net-sized 3-D net ({params:.1f} M params), {passes}"
    return Row(name, cpu_s, dev_s, quality, peak)


def run(device: torch.device, sizes: Sizes, only: list[str] | None) -> list[Row]:
    from core.demo import demo_paths
    from core.io import read_image
    from core.phantom import make_phantom

    def wanted(key: str) -> bool:
        return not only or key in only

    rows: list[Row] = []
    if wanted("rma"):
        rows.append(bench_rma(sizes.rma_2d, device))
        rows.append(bench_rma(sizes.rma_3d, device))
    if wanted("inference"):
        if sizes.demo_volume is None:
            demo_image = read_image(demo_paths().image)
        else:
            demo_image = make_phantom(1000, shape=sizes.demo_volume)[0]
        shape = "x".join(map(str, demo_image.array.shape[:3]))
        rows.append(bench_inference(f"inference, demo volume {shape}", demo_image, device))
        big = make_phantom(1000, shape=sizes.big_volume)[0]
        shape = "x".join(map(str, sizes.big_volume))
        rows.append(bench_inference(f"inference, phantom {shape}", big, device))
    if wanted("flexround"):
        rows.append(bench_flexround(sizes, device))
    if wanted("nnunet"):
        row = bench_nnunet_network(sizes, device)
        if row is not None:
            rows.append(row)
    return rows


def table(rows: list[Row], device: torch.device) -> str:
    from core.device import select_device

    device_name = select_device(str(device)).description
    lines = [
        f"CPU: {torch.get_num_threads()} torch threads; device: {device_name}; "
        f"torch {torch.__version__}",
        "",
        "| job | CPU s | device s | CPU / device | device peak MiB | check |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        peak = "-" if r.device_peak_mib is None else f"{r.device_peak_mib:.0f}"
        ratio = r.cpu_s / r.device_s if r.device_s > 0 else float("nan")
        lines.append(
            f"| {r.name} | {r.cpu_s:.2f} | {r.device_s:.3f} | {ratio:.1f}x | {peak} | {r.quality} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a dry run on the CPU)")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--only", nargs="+", choices=["rma", "inference", "flexround", "nnunet"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; use --device cpu --tiny for a dry run")
    rows = run(device, TINY if args.tiny else FULL, args.only)
    text = table(rows, device)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""FlexRound vs AdaRound vs round-to-nearest on the demo segmentation model: Dice and time.

Usage::

    python benchmarks/bench_flexround.py [--iters 150] [--calib 64] [--crop 64] [--seeds 0 1 2]

Quantizes the demo 2-D U-Net (``resources/demo/model``) with weights at W4, W3 and W2 per tensor
(first and last layer 8 bit) using rtn-minmax, rtn (Lp range search), AdaRound and FlexRound
(block reconstruction), and reports the mean foreground Dice (argmax) on the held-out demo
volume, mean and spread over seeds, with the time each method took. Calibration slices come from
a different phantom (seed 1, one of the training phantoms), randomly cropped. When the demo is
missing a small U-Net is trained on phantoms first (a printed note says so).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.io import read_image  # noqa: E402
from core.metrics import dice_score  # noqa: E402
from core.models import (  # noqa: E402
    LoadedModel,
    ModelSpec,
    UNet,
    calibration_inputs,
    load_model,
    model_input,
)
from core.phantom import make_phantom  # noqa: E402
from core.quant import QuantConfig, quantize_model  # noqa: E402

METHODS = ("rtn-minmax", "rtn", "adaround", "flexround")
DETERMINISTIC = ("rtn-minmax", "rtn")  # no calibration-dependent step: one run is enough


def fallback_model() -> tuple[LoadedModel, object, np.ndarray]:
    """A small U-Net trained briefly on phantoms, with a held-out phantom (demo stand-in)."""
    print("NOTE: resources/demo is incomplete; training a small stand-in U-Net on phantoms")
    spec = ModelSpec(
        architecture="unet",
        arguments={"dims": 2, "base_channels": 8, "depth": 2, "norm": "batch"},
        in_channels=1,
        class_names=("background", "liver", "kidney", "lesion"),
        class_colors=((0, 0, 0), (220, 120, 60), (70, 160, 230), (250, 230, 40)),
        activation="softmax",
        preprocessing=({"name": "ct_window", "center": 40.0, "width": 400.0},),
        mode="2d",
        patch_size=None,
        size_divisor=4,
        name="bench-stand-in",
    )
    torch.manual_seed(0)
    module = UNet(1, 4, dims=2, base_channels=8, depth=2, norm="batch")
    model = LoadedModel(module=module, spec=spec)
    shape = (96, 96, 24)
    volumes = [make_phantom(seed, shape=shape) for seed in (1, 2, 3)]
    x = torch.cat(
        [torch.from_numpy(model_input(model, im)).permute(3, 0, 1, 2) for im, _ in volumes]
    )
    y = torch.cat([torch.from_numpy(lab.astype(np.int64)).permute(2, 0, 1) for _, lab in volumes])
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    module.train()
    for _ in range(300):
        index = torch.randint(0, x.shape[0], (16,), generator=generator)
        loss = F.cross_entropy(module(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    image, label = make_phantom(1000, shape=shape)
    return model, image, label


def demo_model() -> tuple[LoadedModel, object, np.ndarray, str]:
    demo = ROOT / "resources" / "demo"
    try:
        model = load_model(demo / "model")
        image = read_image(demo / "image.nii.gz")
        label = np.asarray(read_image(demo / "label.nii.gz").array).astype(np.int64)
        return model, image, label, "demo model resources/demo/model"
    except (ValueError, OSError, FileNotFoundError) as error:
        print(f"NOTE: demo not usable ({error})")
        model, image, label = fallback_model()
        return model, image, label, "stand-in U-Net (demo missing)"


def calibration(model: LoadedModel, n: int, crop: int, seed: int) -> torch.Tensor:
    """``n`` random ``crop`` x ``crop`` patches of slices of a training phantom."""
    shape = (160, 160, 48) if model.spec.name != "bench-stand-in" else (96, 96, 24)
    image, _ = make_phantom(1, shape=shape)
    slices = calibration_inputs(model, image, n=n, seed=seed)
    rng = np.random.default_rng(seed)
    h, w = slices.shape[-2:]
    crop = min(crop, h, w)
    patches = []
    for sample in slices:
        i0, j0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        patches.append(sample[:, i0 : i0 + crop, j0 : j0 + crop])
    return torch.stack(patches)


@torch.no_grad()
def mean_dice(module: torch.nn.Module, inputs: torch.Tensor, label: np.ndarray) -> float:
    """Mean foreground Dice (argmax) over the held-out volume, slice-wise along k."""
    predictions = []
    for start in range(0, inputs.shape[0], 16):
        predictions.append(module(inputs[start : start + 16]).argmax(dim=1))
    prediction = torch.cat(predictions).permute(1, 2, 0).numpy()  # (I, J, K)
    classes = int(label.max()) + 1
    scores = dice_score(prediction[None], label[None], num_classes=max(classes, 2))
    return float(np.mean(scores[0, 1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=150, help="optimizer steps per block")
    parser.add_argument("--calib", type=int, default=64, help="calibration patches")
    parser.add_argument("--crop", type=int, default=64, help="calibration patch size")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    model, image, label, source = demo_model()
    inputs = torch.from_numpy(model_input(model, image)).permute(3, 0, 1, 2).contiguous()
    divisor = max(model.spec.size_divisor, int(getattr(model.module, "size_divisor", 1)))
    pad = [(-s) % divisor for s in inputs.shape[-2:]]
    inputs = F.pad(inputs, (0, pad[1], 0, pad[0]), mode="replicate")
    crop_to = label.shape[:2]
    module = model.module.eval()

    def dice_of(m: torch.nn.Module) -> float:
        def cropped(x: torch.Tensor) -> torch.Tensor:
            return m(x)[..., : crop_to[0], : crop_to[1]]

        return mean_dice(cropped, inputs, label)

    fp_dice = dice_of(module)
    print(f"model: {source}; eval: {label.shape[2]} held-out slices {label.shape[:2]}")
    print(
        f"settings: iters/block={args.iters} calib={args.calib} patches {args.crop}x{args.crop} "
        f"batch={args.batch} seeds={args.seeds} per-tensor, first/last 8 bit, block "
        f"reconstruction, device={args.device}, torch threads=1"
    )
    print(f"FP32 Dice {100 * fp_dice:.2f}")
    # Methods run side by side for each seed (not all seeds of one method in a row), and both
    # wall and CPU time are kept: on a shared machine the wall time follows the neighbours'
    # load, the single-threaded CPU time much less so.
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for bits in args.bits:
        for seed in args.seeds:
            for method in METHODS:
                if method in DETERMINISTIC and seed != args.seeds[0]:
                    continue
                calib = calibration(model, args.calib, args.crop, seed)
                config = QuantConfig(
                    method=method,
                    bits=bits,
                    iters=args.iters,
                    batch_size=args.batch,
                    seed=seed,
                    device=args.device,
                )
                wall, cpu = time.perf_counter(), time.process_time()
                result = quantize_model(model, calib, config)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                dice = dice_of(result.model.cpu())
                results.setdefault((method, bits), []).append((dice, wall, cpu))
                print(
                    f"  W{bits} {method:<10} seed {seed}: Dice {100 * dice:6.2f}  "
                    f"wall {wall:6.1f} s  cpu {cpu:6.1f} s",
                    flush=True,
                )

    def mean_of(method: str, bits: int, index: int) -> float:
        return statistics.mean(v[index] for v in results[(method, bits)])

    print()
    print(
        f"{'method':<11}"
        + "".join(f"{'W' + str(b) + ' Dice':>18}" for b in args.bits)
        + "".join(f"{'W' + str(b) + ' cpu s':>11}" for b in args.bits)
    )
    print(f"{'fp32':<11}" + "".join(f"{100 * fp_dice:>18.2f}" for _ in args.bits))
    for method in METHODS:
        row = f"{method:<11}"
        for bits in args.bits:
            dices = [100 * v[0] for v in results[(method, bits)]]
            spread = statistics.pstdev(dices) if len(dices) > 1 else 0.0
            row += f"{statistics.mean(dices):>11.2f} +-{spread:4.2f}"
        for bits in args.bits:
            row += f"{mean_of(method, bits, 2):>11.1f}"
        print(row)
    print("(+- is the population standard deviation over seeds; rtn methods run once)")

    print()
    if 4 in args.bits:
        gap = 100 * (fp_dice - mean_of("flexround", 4, 0))
        print(f"FlexRound W4 vs FP32: {gap:+.2f} Dice points below FP32 (target <= 1)")
    if 2 in args.bits:
        lead = 100 * (mean_of("flexround", 2, 0) - mean_of("adaround", 2, 0))
        print(f"FlexRound - AdaRound at W2 (seed mean): {lead:+.2f} Dice points (target >= 0)")
    for label, index in (("cpu", 2), ("wall", 1)):
        ratios = [mean_of("flexround", b, index) / mean_of("adaround", b, index) for b in args.bits]
        print(
            f"{label} time FlexRound / AdaRound: "
            + ", ".join(f"W{b} {r:.2f}x" for b, r in zip(args.bits, ratios, strict=True))
            + " (target <= 1.3)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Deployment figures: ONNX file sizes, ONNX Runtime latency and demo Dice, side by side.

Usage::

    python benchmarks/bench_deploy.py [--method flexround] [--iters 200] [--repeats 3]
        [--threads 1 N] [--json out.json]

On the CT demo (resources/demo) and the natural-image demo, in one run:

* quantizes the demo model to W8 (round-to-nearest per channel), W4 and W4A8 (``--method``,
  per channel) and W8A8 (round-to-nearest, symmetric per channel, 8-bit inputs), and exports
  each and the
  FP32 model with ``core.deploy.export_onnx`` (opset 21: 4-bit weights as UINT4);
* prints each file's size and its ratio to the FP32 file (target: W4 <= 0.2x);
* times one demo volume through ``core.models.predict`` (the app's own slice loop, so the
  backends see the same batches) with torch eager FP32, ONNX Runtime FP32 and ONNX Runtime
  W8A8 (plus W4A8 and W4), at each ``--threads`` count, the backends interleaved, best of
  ``--repeats``; ratio W8A8 / ORT FP32 (target <= 0.7x);
* the mean foreground Dice (argmax) of every variant on both demos (target: W8A8 within 1
  point of FP32).

OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.timing import best_of  # noqa: E402
from core.demo import demo_paths  # noqa: E402
from core.deploy.onnx_export import export_onnx  # noqa: E402
from core.deploy.onnx_runtime import open_onnx_model  # noqa: E402
from core.io import read_image, read_mask  # noqa: E402
from core.models import calibration_inputs, load_model, predict, quantized_variant  # noqa: E402
from core.pipeline import segment_image  # noqa: E402
from core.quant import QuantConfig, quantize_model  # noqa: E402


def variants_of(model, image, method: str, iters: int) -> dict[str, tuple]:
    """name -> (LoadedModel, QuantResult or None)."""
    torch.set_num_threads(os.cpu_count() or 1)
    # 64-pixel crops make reconstruction fast on the CT's 48 slices; the natural demo is one
    # photograph, whose single crop would leave the activation steps fitted to a corner.
    calib = calibration_inputs(model, [image], n=32, crop=None if image.is_natural else 64)
    configs = {
        "W8": QuantConfig(method="rtn", bits=8, granularity="channel"),
        "W4": QuantConfig(method=method, bits=4, granularity="channel", iters=iters),
        # Symmetric: stored as int8 with zero point 0, which ONNX Runtime's u8 x s8 kernels need.
        "W8A8": QuantConfig(
            method="rtn", bits=8, act_bits=8, granularity="channel", symmetric=True
        ),
        "W4A8": QuantConfig(method=method, bits=4, act_bits=8, granularity="channel", iters=iters),
    }
    out = {"FP32": (model, None)}
    for name, config in configs.items():
        result = quantize_model(model, calib, config)
        out[name] = (quantized_variant(result, model, name=f"{config.method} {name}"), result)
    return out


def mean_dice(model, image, label) -> float:
    result = segment_image(model, image, decision="argmax", device="cpu", ground_truth=label)
    return float(result.mean_foreground("dice"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="flexround", help="method of W4 and W4A8")
    parser.add_argument("--iters", type=int, default=200, help="FlexRound iterations per block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    paths = demo_paths()
    demos = {
        "CT": (paths.model, paths.image, paths.label),
        "natural": (paths.natural_model, paths.natural_image, paths.natural_label),
    }
    figures: dict = {"sizes": {}, "latency": {}, "dice": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for demo, (model_path, image_path, label_path) in demos.items():
            model = load_model(model_path)
            image = read_image(image_path)
            label = read_mask(label_path, reference=image).array
            variants = variants_of(model, image, args.method, args.iters)
            onnx_models = {}
            for name, (variant, result) in variants.items():
                path = Path(tmp) / f"{demo}-{name}.onnx"
                summary = export_onnx(variant, path, quant_result=result)
                onnx_models[name] = open_onnx_model(path)
                if demo == "CT":
                    figures["sizes"][name] = summary.bytes
                    for line in summary.lines()[1:]:
                        print(f"  {name}: {line}")
            torch.set_num_threads(os.cpu_count() or 1)
            figures["dice"][demo] = {
                f"torch {name}": mean_dice(v, image, label) for name, (v, _) in variants.items()
            }
            figures["dice"][demo].update(
                {f"ORT {name}": mean_dice(m, image, label) for name, m in onnx_models.items()}
            )
            if demo != "CT":
                continue
            runs = {
                "torch eager FP32": variants["FP32"][0],
                "ORT FP32": onnx_models["FP32"],
                "ORT W8A8": onnx_models["W8A8"],
                "ORT W4A8": onnx_models["W4A8"],
                "ORT W4": onnx_models["W4"],
            }
            slices = image.shape3[2]
            for threads in args.threads:
                torch.set_num_threads(threads)
                for runnable in runs.values():
                    predict(runnable, image, device="cpu")  # warm-up: sessions, caches
                # Interleaved, best of the repeats: load from other processes on a shared
                # machine hits every backend alike.
                for _ in range(args.repeats):
                    for name, runnable in runs.items():
                        seconds = best_of(
                            1, lambda r=runnable, i=image: predict(r, i, device="cpu")
                        )
                        cell = figures["latency"].setdefault(name, {})
                        cell[threads] = min(seconds, cell.get(threads, seconds))
            figures["slices"] = slices

    fp = figures["sizes"]["FP32"]
    print("\nONNX file size (CT demo model)")
    print(f"{'variant':<8} {'bytes':>10} {'x FP32':>7}")
    for name, size in figures["sizes"].items():
        print(f"{name:<8} {size:>10,} {size / fp:>7.3f}")
    print(f"\nLatency per CT demo volume ({figures['slices']} slices), best of {args.repeats}")
    header = "".join(f"{f'{t} thr s':>10}{'ms/slice':>10}{'x ORT FP32':>11}" for t in args.threads)
    print(f"{'backend':<18}{header}")
    for name, by_threads in figures["latency"].items():
        cells = ""
        for t in args.threads:
            seconds = by_threads[t]
            ratio = seconds / figures["latency"]["ORT FP32"][t]
            cells += f"{seconds:>10.3f}{1000 * seconds / figures['slices']:>10.1f}{ratio:>11.3f}"
        print(f"{name:<18}{cells}")
    print("\nMean foreground Dice (argmax)")
    names = list(figures["dice"]["CT"])
    print(f"{'variant':<14}" + "".join(f"{demo:>10}" for demo in figures["dice"]))
    for name in names:
        print(f"{name:<14}" + "".join(f"{d[name]:>10.4f}" for d in figures["dice"].values()))
    w4 = figures["sizes"]["W4"] / fp
    ratios = [
        figures["latency"]["ORT W8A8"][t] / figures["latency"]["ORT FP32"][t] for t in args.threads
    ]
    dice_gap = max(abs(d["ORT W8A8"] - d["torch FP32"]) * 100 for d in figures["dice"].values())
    print("\nTargets")
    print(f"W4 file <= 0.2x FP32: {w4:.3f}x {'met' if w4 <= 0.2 else 'MISSED'}")
    for t, ratio in zip(args.threads, ratios, strict=True):
        verdict = "met" if ratio <= 0.7 else "MISSED"
        print(f"ORT W8A8 <= 0.7x ORT FP32 at {t} thread(s): {ratio:.3f}x {verdict}")
    print(
        f"W8A8 Dice within 1 point of FP32: {dice_gap:.2f} points "
        f"{'met' if dice_gap <= 1 else 'MISSED'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

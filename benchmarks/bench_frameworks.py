"""nnU-Net models in segbench against nnU-Net itself, measured side by side in one run.

Usage::

    python benchmarks/bench_frameworks.py [--size 160 160 128] [--patch 128 128 128]
        [--features 32 64 128 256 320 320] [--iters 100] [--samples 16] [--crop 64]
        [--mirroring] [--onnxruntime] [--deploy] [--skip-quant] [--skip-inference]

Builds an nnU-Net 3d_fullres trained model folder with nnU-Net's own planner and trainer
(``tests/frameworks/nnunet_models.py``), its network widened to the given stages (by default
6 stages, 32 to 320 features: the size of nnU-Net's default 3d_fullres PlainConvUNet, about
30 M parameters, random weights), and a ``--size`` volume. Prints:

* inference: segbench (``load_model`` + ``predict``) against ``nnUNetPredictor`` directly
  (``initialize_from_trained_model_folder`` + ``predict_single_npy_array`` on SimpleITKIO's
  read), each in a fresh subprocess, alternating, best of ``--repeats``: wall time, peak RSS
  (``VmHWM``), and the ratio segbench / nnU-Net (target <= 1.05), plus the largest probability
  difference between the two; with ``--onnxruntime`` also segbench with the fold's network
  exported to ONNX and run by ONNX Runtime inside nnU-Net's predictor (ratio to torch);
* quantization of the fold: FlexRound W4 per channel, ``--samples`` calibration patches cut from
  the nnU-Net-preprocessed volume (``--crop`` cubes), ``--iters`` iterations per block, block
  reconstruction: seconds per block, peak RSS, and the output error (MSE of the logits against
  FP32 on a held-out patch) of FlexRound against round-to-nearest (target <= 0.5x);
* with ``--deploy``: deploy folders (``main.py export --out FOLDER``) of the FP32 model and of
  its RTN W8 and W4 per-channel variants: the ONNX bytes of each (ratio to FP32), and the time
  of segbench on each folder (nnU-Net's predictor with the fold in ONNX Runtime; ratio to the
  FP32 folder), with the argmax agreement with the FP32 folder.

Mirroring is off unless ``--mirroring`` (it multiplies both sides' time by 8 alike).
One torch thread; OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from benchmarks.memory import reset_peak, status_mb
which, model_dir, image_path, mirroring, out = sys.argv[1:6]
mirroring = mirroring == "1"
if which in ("segbench", "segbench-ort"):
    from core.io import read_image
    from core.models import load_model, predict
    model = load_model(model_dir, mirroring=mirroring)
    if which == "segbench-ort":  # exported before the clock starts, as the GUI keeps it
        from core.deploy.onnx_runtime import with_backend
        model = with_backend(model, "onnxruntime")
    image = read_image(image_path)
    reset_peak()
    start = time.perf_counter()
    probs = predict(model, image, device="cpu")
    seconds = time.perf_counter() - start
else:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(use_mirroring=mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=None)
    data, properties = SimpleITKIO().read_images([image_path])
    reset_peak()
    start = time.perf_counter()
    _, probs = predictor.predict_single_npy_array(data, properties, None, None, True)
    seconds = time.perf_counter() - start
    probs = probs.transpose(0, 3, 2, 1)
np.save(out, probs.astype(np.float32))
print(json.dumps({"seconds": seconds, "peak_mb": status_mb("VmHWM")}))
"""


def run_child(which: str, model: Path, image: Path, mirroring: bool, out: Path) -> dict:
    """One inference in a fresh interpreter, so its memory peak is its own."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            which,
            str(model),
            str(image),
            str(int(mirroring)),
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{which} inference failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_model(root: Path, args: argparse.Namespace) -> Path:
    """An nnU-Net 3d_fullres folder whose plans hold the benchmark's network size."""
    from tests.frameworks.nnunet_models import make_nnunet_model

    stages = len(args.features)
    architecture = {
        "n_stages": stages,
        "features_per_stage": list(args.features),
        "kernel_sizes": [[3, 3, 3]] * stages,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
        "n_conv_per_stage": [2] * stages,
        "n_conv_per_stage_decoder": [2] * (stages - 1),
    }
    return make_nnunet_model(
        root,
        configuration="3d_fullres",
        folds=(0,),
        spacing=(1.0, 1.0, 1.0),
        configuration_overrides={"patch_size": list(args.patch), "spacing": [1.0, 1.0, 1.0]},
        architecture_overrides=architecture,
    )


def make_volume(path: Path, size: tuple[int, int, int]) -> None:
    import nibabel as nib
    import numpy as np

    from tests.frameworks.nnunet_models import rotated_affine

    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 20.0, size=size).astype(np.float32)
    grid = np.ogrid[tuple(slice(0, n) for n in size)]
    centre = [n / 2 for n in size]
    inside = sum(((g - c) / (0.3 * n)) ** 2 for g, c, n in zip(grid, centre, size, strict=True))
    array[inside < 1] += 120.0
    nib.save(nib.Nifti1Image(array, rotated_affine((1.0, 1.0, 1.0))), path)


def bench_inference(model: Path, image: Path, work: Path, args: argparse.Namespace) -> None:
    import numpy as np

    kinds = ("nnunet", "segbench", *(("segbench-ort",) if args.onnxruntime else ()))
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(args.repeats):
        for which in kinds:  # alternating, so drift hits all alike
            runs[which].append(
                run_child(which, model, image, args.mirroring, work / f"{which}.npy")
            )
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    difference = np.abs(np.load(work / "segbench.npy") - np.load(work / "nnunet.npy")).max()
    print(
        f"\ninference on {'x'.join(map(str, args.size))} (fold 0, mirroring "
        f"{'on' if args.mirroring else 'off'}, best of {args.repeats}, 1 thread)"
    )
    print(f"  {'':28}{'seconds':>10}{'peak RSS MB':>14}")
    labels = {
        "nnunet": "nnUNetPredictor directly",
        "segbench": "segbench predict",
        "segbench-ort": "segbench on ONNX Runtime",
    }
    for which in kinds:
        print(f"  {labels[which]:28}{best[which]['seconds']:>10.1f}{best[which]['peak_mb']:>14.0f}")
    ratio = best["segbench"]["seconds"] / best["nnunet"]["seconds"]
    print(
        f"  ratio segbench / nnU-Net: {ratio:.3f} (target <= 1.05); "
        f"max |probability difference| = {difference:.2e}"
    )
    if args.onnxruntime:
        ort_ratio = best["segbench-ort"]["seconds"] / best["segbench"]["seconds"]
        on_ort, on_torch = np.load(work / "segbench-ort.npy"), np.load(work / "segbench.npy")
        difference = np.abs(on_ort - on_torch)
        agreement = np.mean(on_ort.argmax(0) == on_torch.argmax(0))
        print(
            f"  ratio ONNX Runtime / torch in segbench: {ort_ratio:.3f}; |probability "
            f"difference| max {difference.max():.2e}, p99.9 {np.quantile(difference, 0.999):.2e}; "
            f"argmax agreement {100 * agreement:.3f} %"
        )


def bench_quantization(model_dir: Path, image: Path, args: argparse.Namespace) -> None:
    import torch

    from benchmarks.memory import reset_peak, status_mb
    from core.io import read_image
    from core.models import calibration_inputs, load_model
    from core.quant import QuantConfig, quantize_loaded_model

    torch.set_num_threads(1)
    model = load_model(model_dir, mirroring=args.mirroring)
    volume = read_image(image)
    calib = calibration_inputs(model, [volume], n=args.samples + 1, seed=0, crop=args.crop)
    held_out, calib = calib[-1:], calib[:-1]
    with torch.no_grad():
        reference = model.module(held_out)
    parameters = sum(p.numel() for p in model.module.parameters())
    print(
        f"\nquantization of fold 0 ({parameters / 1e6:.1f} M parameters), "
        f"{calib.shape[0]} calibration patches of {list(calib.shape[2:])}, "
        f"{args.iters} iterations per block"
    )
    print(
        f"  {'method':12}{'seconds':>10}{'s/block':>10}{'blocks':>8}{'peak RSS MB':>14}"
        f"{'output MSE':>14}"
    )
    errors = {}
    for method in ("rtn", "flexround"):
        reset_peak()
        config = QuantConfig(
            method=method,
            bits=4,
            granularity="channel",
            iters=args.iters,
            batch_size=4,
            device="cpu",
        )
        start = time.perf_counter()
        result = quantize_loaded_model(model, calib, config)
        seconds = time.perf_counter() - start
        peak = status_mb("VmHWM")
        with torch.no_grad():
            errors[method] = float(((result.model(held_out) - reference) ** 2).mean())
        blocks = max(1, len(result.blocks))
        print(
            f"  {method:12}{seconds:>10.1f}{seconds / blocks:>10.2f}{blocks:>8}{peak:>14.0f}"
            f"{errors[method]:>14.3e}"
        )
    print(
        f"  FlexRound / RTN output error: {errors['flexround'] / errors['rtn']:.3f} (target <= 0.5)"
    )


def bench_deploy(model_dir: Path, image: Path, work: Path, args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from core.deploy.framework_package import export_framework_onnx
    from core.io import read_image
    from core.models import calibration_inputs, load_model, save_quantized_model
    from core.quant import QuantConfig, quantize_loaded_model

    torch.set_num_threads(1)
    model = load_model(model_dir, mirroring=args.mirroring)
    calib = calibration_inputs(model, [read_image(image)], n=4, seed=0, crop=args.crop)
    folders = {"FP32": work / "deploy_fp32"}
    sizes = {"FP32": export_framework_onnx(model, folders["FP32"]).bytes}
    for bits in (8, 4):
        config = QuantConfig(method="rtn", bits=bits, granularity="channel", device="cpu")
        result = quantize_loaded_model(model, calib, config)
        saved = save_quantized_model(result, model, work / f"w{bits}", label=f"RTN W{bits}")
        folders[f"W{bits}"] = work / f"deploy_w{bits}"
        sizes[f"W{bits}"] = export_framework_onnx(load_model(saved), folders[f"W{bits}"]).bytes
    runs: dict[str, list[dict]] = {name: [] for name in folders}
    for _ in range(args.repeats):
        for name, folder in folders.items():  # alternating, so drift hits all alike
            runs[name].append(
                run_child("segbench", folder, image, args.mirroring, work / f"deploy_{name}.npy")
            )
    best = {name: min(r["seconds"] for r in found) for name, found in runs.items()}
    reference = np.load(work / "deploy_FP32.npy").argmax(0)
    print(
        f"\ndeploy folders (fold 0 as ONNX in nnU-Net's predictor, {'x'.join(map(str, args.size))},"
        f" best of {args.repeats}, 1 thread)"
    )
    print(f"  {'':8}{'ONNX MB':>10}{'x FP32':>8}{'seconds':>10}{'x FP32':>8}{'argmax = FP32':>16}")
    for name in folders:
        agreement = np.mean(np.load(work / f"deploy_{name}.npy").argmax(0) == reference)
        print(
            f"  {name:8}{sizes[name] / 1e6:>10.2f}{sizes[name] / sizes['FP32']:>8.3f}"
            f"{best[name]:>10.1f}{best[name] / best['FP32']:>8.3f}{100 * agreement:>15.2f}%"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(160, 160, 128))
    parser.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128))
    parser.add_argument("--features", type=int, nargs="+", default=(32, 64, 128, 256, 320, 320))
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mirroring", action="store_true")
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="also time segbench with the fold's network on ONNX Runtime (exported first)",
    )
    parser.add_argument(
        "--deploy",
        action="store_true",
        help="also export deploy folders (FP32, RTN W8, W4) and time nnU-Net on each",
    )
    parser.add_argument("--skip-quant", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_frameworks_") as folder:
        work = Path(folder)
        start = time.perf_counter()
        model = make_model(work / "nnunet", args)
        image = work / "volume_0000.nii.gz"
        make_volume(image, tuple(args.size))
        print(
            f"model folder and volume made by nnU-Net's planner/trainer in "
            f"{time.perf_counter() - start:.0f} s: {model.name}"
        )
        if not args.skip_inference:
            bench_inference(model, image, work, args)
        if not args.skip_quant:
            bench_quantization(model, image, args)
        if args.deploy:
            bench_deploy(model, image, work, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``evaluate`` on Ray against the local executor, side by side, and a cluster-size estimate.

Usage::

    python benchmarks/bench_scale.py [--cases 24] [--shape 96 96 32] [--workers 2]
        [--ct-shape 512 512 432] [--ct-cases 131] [--nodes 8] [--tasks-per-node 1 4]
        [--gpu-inference-speedup 40]

Generates ``--cases`` phantom CT cases (``core.phantom``), takes the bundled demo 2-D U-Net and
a round-to-nearest W4 variant of it (two model variants) and scores them with argmax, RankSEG-RMA
Dice and RankSEG-RMA IoU (three decisions), first locally (one torch thread), then as Ray tasks
on a local Ray of ``--workers`` CPUs (one thread per task). Prints the wall times, the speed-up,
the Ray overhead per case (wall time x workers minus the tasks' own seconds, per case) and
checks that both reports hold the same rows.

Then estimates the wall time of ``--ct-cases`` CT volumes of ``--ct-shape`` voxels (LiTS: 131
volumes, 512 x 512 x 432 slices on average) on ``--nodes`` GPU nodes: the measured seconds per
voxel of inference and of the decisions (from the report's timings) scaled to the CT size,
inference divided by ``--gpu-inference-speedup`` (an assumption, not measured here: this machine
has no GPU), the decisions kept at their CPU cost, plus the measured Ray overhead per case; for
1 task per node and for several tasks sharing a node's GPU (``--gpus-per-task 1/N``), which
keeps the GPU busy while the decisions of the other tasks run on the node's CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DECISIONS = ("argmax", "rma-dice", "rma-iou")


def make_cases(folder: Path, count: int, shape: tuple[int, int, int]) -> list:
    import nibabel as nib

    from core.evaluation.case import LabelledCase
    from core.phantom import make_phantom

    cases = []
    for seed in range(count):
        image, label = make_phantom(seed, shape=shape, spacing=(1.0, 1.0, 3.0))
        image_path = folder / f"case{seed:03d}.nii.gz"
        label_path = folder / f"case{seed:03d}_seg.nii.gz"
        nib.Nifti1Image(image.array, image.affine).to_filename(image_path)
        nib.Nifti1Image(label, image.affine).to_filename(label_path)
        cases.append(LabelledCase(f"case{seed:03d}", image_path, label_path))
    return cases


def make_variant(folder: Path, calib_image: Path) -> Path:
    from core.demo import demo_paths
    from core.io import read_image
    from core.models import load_model
    from core.quant import QuantConfig
    from core.quant.variant import quantize_to_folder

    out = folder / "demo-rtn-w4"
    config = QuantConfig(method="rtn", bits=4, device="cpu")
    model = load_model(demo_paths().model)
    quantize_to_folder(model, [read_image(calib_image)], config, out, samples=8, crop=None)
    return out


def scored(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("executor", "timings", "run")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 96, 32))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=(512, 512, 432))
    parser.add_argument("--ct-cases", type=int, default=131)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--tasks-per-node", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--gpu-inference-speedup", type=float, default=40.0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from core.cluster import ClusterOptions, ray_session
    from core.demo import demo_paths
    from core.evaluation import EvaluationSettings, evaluate_cases

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        folder = Path(tmp)
        cases = make_cases(folder, args.cases, tuple(args.shape))
        models = [demo_paths().model, make_variant(folder, cases[0].image)]
        settings = EvaluationSettings(decisions=DECISIONS, device="cpu")

        clock = time.perf_counter()
        local = evaluate_cases(cases, models, settings, folder / "local.json")
        local_s = time.perf_counter() - clock

        options = ClusterOptions(workers=args.workers, threads_per_task=1)
        clock = time.perf_counter()
        with ray_session(options):
            start_s = time.perf_counter() - clock
            clock = time.perf_counter()
            ray = evaluate_cases(
                cases, models, settings, folder / "ray.json", executor="ray", cluster=options
            )
            ray_s = time.perf_counter() - clock
        same = scored(local) == scored(ray)

    n = args.cases
    busy = sum(node["busy_s"] for node in ray["run"]["nodes"].values())
    overhead = (ray_s * args.workers - busy) / n
    print(f"{n} cases of {tuple(args.shape)} voxels x 2 model variants x 3 decisions")
    print(f"{'':28}{'local (1 thread)':>18}{f'ray ({args.workers} workers)':>18}{'ratio':>8}")
    print(f"{'wall time, s':28}{local_s:18.2f}{ray_s:18.2f}{local_s / ray_s:7.2f}x")
    print(
        f"{'  + Ray start, s':28}{'':18}{ray_s + start_s:18.2f}{local_s / (ray_s + start_s):7.2f}x"
    )
    print(f"{'per case, s':28}{local_s / n:18.3f}{busy / n:18.3f}  (task's own time)")
    print(f"{'Ray overhead per case, s':28}{'':18}{overhead:18.3f}")
    print(f"{'reports equal (rows, means)':28}{str(same):>18}")
    print(f"nodes: {json.dumps(ray['run']['nodes'])}")

    # --- estimate for CT volumes on GPU nodes ------------------------------------------------
    voxels = math.prod(args.shape)
    timings = local["timings"]
    inference_s = sum(r["seconds"] for r in timings["inference"]) / n  # both models, per case
    decision_s = sum(r["decision_s"] + (r["metrics_s"] or 0) for r in timings["decisions"]) / n
    other_s = local_s / n - inference_s - decision_s  # reading, label, volumes
    scale = math.prod(args.ct_shape) / voxels
    ct_case_s = (
        inference_s * scale / args.gpu_inference_speedup
        + decision_s * scale
        + other_s * scale
        + max(overhead, 0.0)
    )
    print()
    print(f"measured per case here ({voxels / 1e6:.2f} Mvoxel, 2 models, 3 decisions):")
    print(
        f"  inference {inference_s:.3f} s, decisions+metrics {decision_s:.3f} s, "
        f"reading/other {other_s:.3f} s"
    )
    print(
        f"estimate: {args.ct_cases} CT volumes of {tuple(args.ct_shape)} ({scale:.0f}x the "
        f"voxels) on {args.nodes} one-GPU nodes, inference {args.gpu_inference_speedup:g}x "
        f"faster on the GPU (assumed), decisions on one CPU thread per task as measured:"
    )
    print(f"  {ct_case_s / 60:.1f} min per volume")
    for tasks in args.tasks_per_node:
        waves = math.ceil(args.ct_cases / (args.nodes * tasks))
        print(
            f"  {tasks} task(s) per node (--gpus-per-task {1 / tasks:g}): {waves} waves -> "
            f"{waves * ct_case_s / 3600:.2f} h wall"
        )
    print(
        f"  all on this machine, one thread: {args.ct_cases * (local_s / n) * scale / 3600:.1f} h"
    )


if __name__ == "__main__":
    main()

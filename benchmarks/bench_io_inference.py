"""Image loading and model inference speed/memory, measured side by side in one run.

Usage::

    python benchmarks/bench_io_inference.py [--threads 1] [--size 512 512 300] [--slices 300]

Prints one table:

* NIfTI load of a 512x512x300 int16 phantom (.nii and .nii.gz): ``core.io.read_image`` against
  plain nibabel (``nib.load(mmap=False)`` + ``np.asarray(dataobj)``), with their ratio; both
  followed by one pass over the voxels so a memory-mapped read is not timed as free;
* DICOM series load (the same volume as one file per slice): ``read_image`` on the folder
  against SimpleITK's ``ImageSeriesReader``;
* inference of the demo model (``predict``) on the demo image and on the 512x512x300 phantom:
  wall time and peak resident memory of a fresh subprocess per case (Linux ``VmHWM``, reset
  after loading so it is the inference's peak; the resident size after loading is shown too),
  plus the peak CUDA memory when a GPU is present; and a 512x512x16 slab of the phantom with
  and without predict's channels-last copy of the module (alternating, best of two; the ratio
  is channels-last / default order).
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

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import best_of  # noqa: E402  (benchmarks/timing.py, beside this script)

from tests.dicom_series import write_dicom_series  # noqa: E402

_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
from core.io import read_image
from core.models import load_model, predict
if sys.argv[5] == "contiguous":  # the comparison run: the module as it is, default order
    import core.models.inference as inference
    inference._inference_module = lambda module, mode, device: (
        module.to(device), torch.contiguous_format
    )

from benchmarks.memory import reset_peak, status_mb

image = read_image(sys.argv[1])
model = load_model(sys.argv[2])
device = sys.argv[3]
if device == "cuda":
    predict(model, image, device=device)  # warm-up: CUDA context and kernels
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
loaded_mb = status_mb("VmRSS")
reset = reset_peak()  # so the peak below is the inference's own
start = time.perf_counter()
probs = predict(model, image, device=device)
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
print(json.dumps({"seconds": seconds, "peak_mb": status_mb("VmHWM"), "loaded_mb": loaded_mb,
                  "reset": reset, "cuda_mb": cuda_mb, "dtype": str(probs.dtype),
                  "out_mb": probs.nbytes / 2**20}))
"""


def run_child(
    image: Path, model: Path, device: str, threads: int, layout: str = "channels-last"
) -> dict:
    """Run one inference case in a fresh interpreter so its memory peak is this case's alone.

    ``layout="contiguous"`` turns off predict's channels-last conversion, for the comparison.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(image), str(model), device, str(threads), layout],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gz", action="store_true", help="skip the .nii.gz case")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import SimpleITK as sitk

    from core.demo import demo_paths
    from core.io import read_image
    from core.phantom import make_phantom

    shape = tuple(args.size)
    print(
        f"threads: torch {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    print(f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="segbench-bench-") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        image, _ = make_phantom(1234, shape=shape)
        print(f"phantom {shape} int16 made in {time.perf_counter() - start:.1f} s")
        nii = nib.Nifti1Image(image.array, image.affine)
        nii.set_qform(image.affine, code=1)
        nii.set_sform(image.affine, code=1)
        suffixes = [".nii"] if args.no_gz else [".nii", ".nii.gz"]
        for suffix in suffixes:
            path = tmp_path / f"phantom{suffix}"
            nib.save(nii, str(path))
            # Both sides end with one pass over the voxels: a memory-mapped array would otherwise
            # be timed before anything was read.
            ours = best_of(args.repeats, lambda p=path: read_image(p).array.max())
            # mmap=False: nibabel would otherwise memory-map a .nii and read nothing yet.
            plain = best_of(
                args.repeats,
                lambda p=path: np.asarray(nib.load(str(p), mmap=False).dataobj).max(),
            )
            rows.append(
                (
                    f"NIfTI {suffix} load {'x'.join(map(str, shape))}",
                    f"{ours:.3f} s",
                    f"nibabel {plain:.3f} s",
                    f"ratio {ours / plain:.2f}",
                )
            )
        del nii

        dicom = tmp_path / "dicom"
        start = time.perf_counter()
        write_dicom_series(image.array, image.affine, dicom)
        print(f"DICOM series of {shape[2]} files written in {time.perf_counter() - start:.1f} s")

        def sitk_series() -> None:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom)))
            sitk.GetArrayFromImage(reader.Execute()).max()

        ours = best_of(args.repeats, lambda: read_image(dicom).array.max())
        reference = best_of(args.repeats, sitk_series)
        rows.append(
            (
                f"DICOM series load ({shape[2]} files)",
                f"{ours:.3f} s",
                f"SimpleITK {reference:.3f} s",
                f"ratio {ours / reference:.2f}",
            )
        )
        # Check the series holds the phantom's voxels (after matching the voxel axis order the
        # reader chose), so both timings do the same work.
        loaded = read_image(dicom)
        to_phantom = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(loaded.affine),
            nib.orientations.io_orientation(image.affine),
        )
        reoriented = nib.orientations.apply_orientation(loaded.array, to_phantom)
        same = reoriented.shape == image.array.shape and np.array_equal(reoriented, image.array)
        print(f"DICOM read back equals the phantom voxels: {same}; warnings: {loaded.warnings}")
        del loaded, reoriented

        demo = demo_paths()
        big = tmp_path / "phantom.nii"
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for label, path in (
                ("demo image 160x160x48", demo.image),
                (f"phantom {'x'.join(map(str, shape))}", big),
            ):
                result = run_child(path, demo.model, device, args.threads)
                extra = f", CUDA peak {result['cuda_mb']:.0f} MB" if device == "cuda" else ""
                peak = "peak RSS" if result["reset"] else "peak RSS incl. load"
                rows.append(
                    (
                        f"inference {device}: {label}",
                        f"{result['seconds']:.2f} s",
                        f"{peak} {result['peak_mb']:.0f} MB (after load {result['loaded_mb']:.0f})",
                        f"out {result['dtype']} {result['out_mb']:.0f} MB{extra}",
                    )
                )
            # A 512x512x16 slab of the phantom, alternately with predict's channels-last copy
            # and with the module as it is (default memory order); best of two each.
            slab = tmp_path / "slab.nii"
            if not slab.exists():
                nib.save(
                    nib.Nifti1Image(np.ascontiguousarray(image.array[..., :16]), image.affine),
                    str(slab),
                )
            times = {"contiguous": [], "channels-last": []}
            for _ in range(2):
                for layout in times:
                    result = run_child(slab, demo.model, device, args.threads, layout)
                    times[layout].append(result["seconds"])
            plain, fast = min(times["contiguous"]), min(times["channels-last"])
            rows.append(
                (
                    f"inference {device}: 512x512x16, default order",
                    f"{plain:.2f} s",
                    f"channels-last copy {fast:.2f} s",
                    f"ratio {fast / plain:.2f}",
                )
            )
    print()
    width = max(len(r[0]) for r in rows)
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:>9}  {row[2]:<34}  {row[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

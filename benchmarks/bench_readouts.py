"""Cost of the per-class readouts of a segmentation on a CT-sized volume, against argmax.

Every segmentation (GUI and ``segment``) ends with ``core.pipeline.summarize_mask``: voxels and
mL, the exact expected Dice (no ground truth needed), Dice/IoU against the ground truth and
the image's mean/SD inside each class. This script times it and its parts on the phantom's
labels turned into soft 4-class probabilities (no network: the readouts do not depend on where
the probabilities came from), next to a numpy argmax of the same map in the same process.

Run: ``python benchmarks/bench_readouts.py [--shape 512 512 100] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import best_of  # noqa: E402  (benchmarks/timing.py, beside this script)

from core.metrics import confusion_counts, volume_ml  # noqa: E402
from core.phantom import PHANTOM_CLASSES, make_phantom  # noqa: E402
from core.pipeline import summarize_mask  # noqa: E402
from core.seg import expected_dice  # noqa: E402


def soft_probabilities(labels: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Softmax of noisy, smoothed one-hot logits: confident inside, soft along the edges."""
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), n_classes)
    logits = one_hot.permute(3, 0, 1, 2)[None].float() * 8.0
    logits = torch.nn.functional.avg_pool3d(logits, 5, stride=1, padding=2)
    generator = torch.Generator().manual_seed(seed)
    logits += torch.randn(logits.shape, generator=generator)
    return torch.softmax(logits, 1)[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 100))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, labels = make_phantom(1, shape=tuple(args.shape))
    n_classes = len(PHANTOM_CLASSES)
    probs = soft_probabilities(labels, n_classes)
    intensities = np.asarray(image.array)
    mask = probs.argmax(0).astype(np.uint8)
    voxels = mask.size
    print(
        f"volume {tuple(args.shape)} ({voxels / 1e6:.1f} M voxels), {n_classes} classes, "
        f"{args.threads} thread(s), best of {args.repeats}"
    )

    cases = {
        "argmax of the probabilities (reference)": lambda: probs.argmax(0),
        "expected Dice (exact)": lambda: expected_dice(probs[None], mask[None].astype(np.int64)),
        "Dice/IoU counts vs ground truth": lambda: confusion_counts(
            mask[None], labels[None], num_classes=n_classes
        ),
        "volumes (mL)": lambda: volume_ml(
            mask.astype(np.int64), image.spacing, num_classes=n_classes
        ),
        "summarize_mask (all readouts)": lambda: summarize_mask(
            mask,
            probs,
            spacing=image.spacing,
            class_names=list(PHANTOM_CLASSES),
            ground_truth=labels,
            intensities=intensities,
        ),
    }
    reference = None
    print(f"{'step':42s} {'time s':>8s} {'x argmax':>9s} {'ns/voxel':>9s}")
    for name, run in cases.items():
        seconds = best_of(args.repeats, run)
        reference = reference or seconds
        print(f"{name:42s} {seconds:8.3f} {seconds / reference:9.2f} {seconds / voxels * 1e9:9.1f}")


if __name__ == "__main__":
    main()

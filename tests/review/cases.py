"""Generate tiny worklists (NIfTI images, ground truths, predictions) for the review tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

#: An oblique, anisotropic affine: rotated about z and x, voxels 0.7 x 1.3 x 2.9 mm.
OBLIQUE_AFFINE = np.array(
    [
        [
            0.7 * np.cos(0.4),
            -1.3 * np.sin(0.4) * np.cos(0.3),
            2.9 * np.sin(0.4) * np.sin(0.3),
            12.0,
        ],
        [
            0.7 * np.sin(0.4),
            1.3 * np.cos(0.4) * np.cos(0.3),
            -2.9 * np.cos(0.4) * np.sin(0.3),
            -7.0,
        ],
        [0.0, 1.3 * np.sin(0.3), 2.9 * np.cos(0.3), 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def case_arrays(index: int, shape=(12, 10, 6)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, ground truth and a slightly wrong prediction of case ``index`` (deterministic)."""
    rng = np.random.default_rng(index)
    image = rng.normal(0, 10, size=shape).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    c = 3 + index % 4
    truth[c : c + 4, 3:7, 1:5] = 1
    image[truth == 1] += 100
    prediction = truth.copy()
    prediction[c, 3:7, 1:5] = 0  # one slab missed
    return image, truth, prediction


def write_case_folder(
    folder: Path, n: int, *, predictions: bool = True, affine: np.ndarray | None = None
) -> Path:
    """A worklist folder with ``images/``, ``labels/`` and ``predictions/`` of ``n`` cases.

    Images carry nnU-Net channel names (``case007_0000.nii.gz``) as `evaluate` pairs them.
    """
    affine = np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None else affine
    for sub in ("images", "labels", "predictions"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(n):
        image, truth, prediction = case_arrays(index)
        name = f"case{index:03d}"
        nib.save(nib.Nifti1Image(image, affine), folder / "images" / f"{name}_0000.nii.gz")
        nib.save(nib.Nifti1Image(truth, affine), folder / "labels" / f"{name}.nii.gz")
        if predictions:
            nib.save(nib.Nifti1Image(prediction, affine), folder / "predictions" / f"{name}.nii.gz")
    return folder

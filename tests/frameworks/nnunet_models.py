"""Tiny nnU-Net v2 model folders made with nnU-Net's own planner and trainer (no download).

The folder is what ``nnUNetv2_train`` leaves behind: ``dataset.json``, ``plans.json`` and
``fold_K/checkpoint_final.pth`` under ``<Trainer>__<Plans>__<configuration>``. The dataset is a
few synthetic volumes (bright blobs in noise) on an anisotropic, rotated grid, fingerprinted and
planned by nnU-Net itself; the network weights are the trainer's random initialisation, seeded per
fold so the folds of an ensemble differ.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["make_nnunet_model", "rotated_affine", "write_case"]


def rotated_affine(spacing: Sequence[float], angle_deg: float = 20.0) -> np.ndarray:
    """A voxel-to-RAS affine rotated about the z axis, with the given voxel spacing (mm)."""
    angle = np.deg2rad(angle_deg)
    rotation = np.array(
        [
            [np.cos(angle), -np.sin(angle), 0.0],
            [np.sin(angle), np.cos(angle), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing) @ np.diag([-1.0, 1.0, 1.0])
    affine[:3, 3] = (12.5, -30.0, 7.0)
    return affine


def _case_arrays(
    shape: Sequence[int], rng: np.random.Generator, channels: int
) -> tuple[list[np.ndarray], np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    label = np.zeros(shape, dtype=np.uint8)
    image = rng.normal(0.0, 20.0, size=shape)
    for value in (1, 2):
        centre = rng.uniform(0.25, 0.75, size=3) * np.asarray(shape)
        radius = rng.uniform(0.12, 0.2) * min(shape[:2])
        inside = np.linalg.norm((grid - centre) / [1.0, 1.0, 0.5], axis=-1) < radius
        label[inside] = value
        image[inside] += 100.0 * value
    images = [(image * (1.0 + 0.3 * c) + 40.0 * c).astype(np.float32) for c in range(channels)]
    return images, label


def write_case(
    folder: Path, name: str, images: Sequence[np.ndarray], affine: np.ndarray
) -> list[Path]:
    """Write ``name_0000.nii.gz`` ... (one file per channel), as nnU-Net names them."""
    paths = []
    for channel, array in enumerate(images):
        path = folder / f"{name}_{channel:04d}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine), path)
        paths.append(path)
    return paths


def make_nnunet_model(
    root: str | os.PathLike[str],
    *,
    configuration: str = "3d_fullres",
    folds: Sequence[int] = (0, 1),
    regions: bool = False,
    channels: int = 1,
    dataset_id: int = 501,
    shape: Sequence[int] = (44, 40, 16),
    spacing: Sequence[float] = (0.9, 0.9, 2.5),
    seed: int = 0,
    configuration_overrides: dict[str, Any] | None = None,
    architecture_overrides: dict[str, Any] | None = None,
) -> Path:
    """Plan a tiny dataset with nnU-Net and save a randomly initialised trained-model folder.

    Parameters
    ----------
    root : path-like
        Scratch folder; ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` go below.
    configuration : {'2d', '3d_fullres', '3d_lowres'}
    folds : sequence of int
        One ``fold_K/checkpoint_final.pth`` per entry.
    regions : bool
        Region-based labels (``whole`` = 1 or 2, ``core`` = 2) with sigmoid outputs.
    channels : int
        Input channels (``case_0000`` ... files).
    configuration_overrides, architecture_overrides : dict, optional
        Replace entries of the planned configuration (``patch_size``, ``spacing``) and of its
        network's ``arch_kwargs`` (``n_stages``, ``features_per_stage``, ...) before the
        network is built, e.g. to get a network of nnU-Net's usual size from a tiny dataset.

    Returns
    -------
    pathlib.Path
        The trained model folder ``<Trainer>__<Plans>__<configuration>``.
    """
    root = Path(root)
    name = f"Dataset{dataset_id:03d}_Tiny"
    raw = root / "nnUNet_raw" / name
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = rotated_affine(spacing)
    for index in range(3):
        images, label = _case_arrays(shape, rng, channels)
        write_case(raw / "imagesTr", f"case_{index:03d}", images, affine)
        nib.save(nib.Nifti1Image(label, affine), raw / "labelsTr" / f"case_{index:03d}.nii.gz")
    labels: dict[str, object] = {"background": 0, "organ": 1, "lesion": 2}
    dataset: dict[str, object] = {
        "channel_names": {str(c): ("CT" if channels == 1 else f"MR{c}") for c in range(channels)},
        "labels": labels,
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "name": name,
    }
    if regions:
        dataset["labels"] = {"background": 0, "whole": [1, 2], "core": [2]}
        dataset["regions_class_order"] = [1, 2]
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[variable] = str(root / variable)
        (root / variable).mkdir(parents=True, exist_ok=True)
    os.environ["nnUNet_compile"] = "f"

    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        extract_fingerprint_dataset(dataset_id, num_processes=1, verbose=False)
        plan_experiment_dataset(dataset_id)
    plans_path = root / "nnUNet_preprocessed" / name / "nnUNetPlans.json"
    plans = json.loads(plans_path.read_text())
    if configuration not in plans["configurations"]:
        raise ValueError(f"nnU-Net planned no {configuration!r} for this dataset")
    planned = plans["configurations"][configuration]
    planned.update(configuration_overrides or {})
    planned["architecture"]["arch_kwargs"].update(architecture_overrides or {})
    if configuration_overrides or architecture_overrides:
        plans_path.write_text(json.dumps(plans, indent=2))
    with contextlib.redirect_stdout(quiet):
        # The trainer looks at the preprocessed data's format when it is built.
        preprocess_dataset(
            dataset_id, configurations=(configuration,), num_processes=(1,), verbose=False
        )
    out = root / "nnUNet_results" / name / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    for fold in folds:
        torch.manual_seed(seed * 100 + fold)
        with contextlib.redirect_stdout(quiet):
            trainer = nnUNetTrainer(
                {**plans, "continue_training": False},
                configuration,
                fold,
                json.loads((raw / "dataset.json").read_text()),
                torch.device("cpu"),
            )
            trainer.initialize()
            # Training sets the mirroring axes used at inference; do what it does.
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        # Trained networks are not at their initialisation: spread the InstanceNorm affine
        # parameters so the folds, and the classes, give clearly different outputs.
        with torch.no_grad():
            for parameter in trainer.network.parameters():
                if parameter.dim() == 1:
                    parameter.add_(torch.randn_like(parameter) * 0.3)
        (out / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(quiet):
            trainer.save_checkpoint(str(out / f"fold_{fold}" / "checkpoint_final.pth"))
    shutil.copy(plans_path, out / "plans.json")
    shutil.copy(raw / "dataset.json", out / "dataset.json")
    return out

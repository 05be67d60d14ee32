"""Sampling preprocessed model inputs for post-training quantization calibration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from core.io.channels import with_channel_files
from core.io.image import Image
from core.models.inference import window_starts
from core.models.inputs import model_input
from core.models.loaded import LoadedModel

__all__ = ["calibration_inputs", "calibration_shortfall", "choose_foreground_samples"]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def choose_foreground_samples(
    candidates: Sequence[np.ndarray], n: int, rng: np.random.Generator
) -> list[int]:
    """Indices of ``n`` candidates, drawn first among those with more foreground than the median.

    The foreground share of a candidate is its share of values above the 10th percentile of
    all candidates pooled, so calibration sees anatomy, not air.
    """
    pooled = np.concatenate([c.ravel()[:: max(1, c.size // 4096)] for c in candidates])
    threshold = np.percentile(pooled, 10)
    share = np.array([float((c > threshold).mean()) for c in candidates])
    preferred = np.flatnonzero(share >= np.median(share))
    rest = np.setdiff1d(np.arange(len(candidates)), preferred)
    order = np.concatenate([rng.permutation(preferred), rng.permutation(rest)])
    return sorted(order[: min(n, len(candidates))].tolist())


def calibration_inputs(
    model: LoadedModel,
    images: Image | Sequence[Image],
    *,
    n: int = 64,
    seed: int = 0,
    crop: int | None = None,
) -> torch.Tensor:
    """Preprocessed inputs of ``model`` drawn from ``images`` for quantization calibration.

    2-D models get whole slices along voxel axis k (cropped to the spec's patch size when it has
    one); 3-D models get patches of the spec's patch size. Samples are drawn with a fixed seed,
    preferring those whose foreground share (voxels above the image's 10th percentile of the
    preprocessed intensity) is above the median, so calibration sees anatomy, not air.

    Parameters
    ----------
    model : LoadedModel
        Supplies the preprocessing, channels, mode and patch size.
    images : Image or sequence of Image
        Source images; slices are pooled over all of them.
    n : int
        Number of samples. 2-D patches smaller than their slice are drawn several times per
        slice when the slices are fewer than ``n``; whole slices (and 3-D patches, which tile
        the volume) can be fewer than ``n``: :func:`calibration_shortfall` says why.
    seed : int
        Seed of the sampling.
    crop : int, optional
        Take random ``crop``-sized patches (squares for 2-D models, cubes for 3-D ones) instead
        of whole slices or the spec's patch size: small patches make reconstruction on the CPU
        many times faster and still cover the anatomy's statistics.

    Returns
    -------
    torch.Tensor
        float32 ``(N, Cin, H, W)`` for 2-D models or ``(N, Cin, D, H, W)`` for 3-D ones, padded
        (edge-replicated) so sizes fit the model's ``size_divisor``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if crop is not None and crop < 1:
        raise ValueError(f"crop must be at least 1 pixel, got {crop}")
    if isinstance(images, Image):
        images = [images]
    if not images:
        raise ValueError("calibration_inputs needs at least one image")
    if model.framework is not None:
        # In the network's own input space: the framework preprocesses each case.
        cases = [with_channel_files(image, model.spec.in_channels) for image in images]
        return model.framework.calibration_inputs(cases, n=n, seed=seed, crop=crop)
    spec = model.spec
    divisor = max(spec.size_divisor, int(getattr(model.module, "size_divisor", 1)))
    rng = np.random.default_rng(seed)

    candidates: list[np.ndarray] = []
    volumes = [model_input(model, image) for image in images]
    # Patches smaller than their slice are drawn several times per slice when the slices alone
    # are fewer than n (one photograph is one slice): n samples, not one.
    total_slices = sum(volume.shape[3] for volume in volumes) if spec.mode == "2d" else 0
    draws_per_slice = -(-n // total_slices) if total_slices else 1
    for image, volume in zip(images, volumes, strict=True):
        if spec.mode == "2d":
            patch = (crop, crop) if crop else (spec.patch_size or volume.shape[1:3])
            smaller = patch[0] < volume.shape[1] or patch[1] < volume.shape[2]
            for k in range(volume.shape[3]):
                slice_ = volume[..., k]
                for _ in range(draws_per_slice if smaller else 1):
                    i0 = rng.integers(0, max(1, slice_.shape[1] - patch[0] + 1))
                    j0 = rng.integers(0, max(1, slice_.shape[2] - patch[1] + 1))
                    candidates.append(slice_[:, i0 : i0 + patch[0], j0 : j0 + patch[1]])
        else:
            if spec.mode == "3d" and image.ndim_spatial == 2:
                raise ValueError(f"{image.path or 'image'}: a 3-D model needs a volume")
            patch = (crop,) * 3 if crop else (spec.patch_size or volume.shape[1:])
            patch = tuple(min(p, s) for p, s in zip(patch, volume.shape[1:], strict=True))
            starts = [
                window_starts(s, p, 0.0) for s, p in zip(volume.shape[1:], patch, strict=True)
            ]
            for a in starts[0]:
                for b in starts[1]:
                    for c in starts[2]:
                        candidates.append(
                            volume[:, a : a + patch[0], b : b + patch[1], c : c + patch[2]]
                        )

    chosen = choose_foreground_samples(candidates, n, rng)

    shapes = {candidates[i].shape for i in chosen}
    target = tuple(
        _round_up(max(s[a] for s in shapes), divisor) for a in range(1, len(next(iter(shapes))))
    )
    batch = []
    for index in chosen:
        sample = torch.from_numpy(np.ascontiguousarray(candidates[index]))
        pad: list[int] = []
        for have, want in zip(reversed(sample.shape[1:]), reversed(target), strict=True):
            pad += [0, want - have]
        if any(pad):
            sample = torch.nn.functional.pad(sample.unsqueeze(0), pad, mode="replicate")[0]
        batch.append(sample)
    return torch.stack(batch).float()


def calibration_shortfall(model: LoadedModel, taken: int, asked: int, crop: int | None) -> str:
    """Why :func:`calibration_inputs` returned ``taken`` samples where ``asked`` were wanted.

    Returns
    -------
    str
        ``""`` when nothing is missing, else one sentence for the user.
    """
    if taken >= asked:
        return ""
    if model.spec.mode == "2d" and model.framework is None:
        why = "the patch size is not smaller than a slice" if crop else "whole slices were asked"
        return (
            f"took {taken} calibration samples, not {asked}: the images hold {taken} slices and "
            f"{why}; a patch size smaller than the slices draws several patches per slice"
        )
    return (
        f"took {taken} calibration samples, not {asked}: the images hold only {taken} distinct "
        "patches of the patch size (a smaller patch size gives more)"
    )

"""Checking and normalising the probability maps, masks and options that the decision rules take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DEFAULT_VOID_LABEL",
    "ProbabilityInput",
    "check_probabilities",
    "check_ignore_mask",
    "check_sums_to_one",
    "void_label_for",
    "round_down_to",
    "numpy_to_torch",
]


def numpy_to_torch(array: np.ndarray) -> torch.Tensor:
    """A torch view of a numpy array; read-only arrays (e.g. memory maps) are copied first.

    torch cannot mark tensors read-only, so it warns on read-only numpy memory; the pieces
    converted here are chunk-sized.
    """
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


@dataclass
class ProbabilityInput:
    """Probabilities flattened to (B, C, d) plus what is needed to shape results back.

    Attributes
    ----------
    flat : torch.Tensor or numpy.ndarray
        (B, C, d) view of the input (a numpy view stays numpy so memory-mapped inputs are read
        chunk by chunk rather than loaded whole).
    spatial : tuple of int
        The spatial shape.
    as_numpy : bool
        Whether the caller gave numpy and expects numpy back.
    device : torch.device
        Where the computation runs (the input's device; numpy runs on the CPU).
    work_dtype : torch.dtype
        float64 for float64 input, float32 otherwise (float16 is upcast chunk by chunk).
    """

    flat: torch.Tensor | np.ndarray
    spatial: tuple[int, ...]
    as_numpy: bool
    device: torch.device
    work_dtype: torch.dtype

    @property
    def batch(self) -> int:
        return int(self.flat.shape[0])

    @property
    def classes(self) -> int:
        return int(self.flat.shape[1])

    @property
    def pixels(self) -> int:
        return int(self.flat.shape[2])

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        """Pixels ``start:stop`` of every (b, c) as a torch tensor in the working dtype."""
        part = self.flat[:, :, start:stop]
        if isinstance(part, np.ndarray):
            part = numpy_to_torch(part)
        return part.to(self.work_dtype)


_FLOAT_NUMPY = (np.float16, np.float32, np.float64)
_FLOAT_TORCH = (torch.float16, torch.float32, torch.float64)


def check_probabilities(
    probs: torch.Tensor | np.ndarray, *, what: str = "probs"
) -> ProbabilityInput:
    """Validate a (B, C, *spatial) probability array and return its flattened view.

    Raises
    ------
    ValueError
        Wrong type, dtype or rank, NaN, or values outside [0, 1]; the message says which.
    """
    if isinstance(probs, np.ndarray):
        if probs.dtype.type not in _FLOAT_NUMPY:
            raise ValueError(f"{what} must be float16, float32 or float64, got numpy {probs.dtype}")
        as_numpy = True
        device = torch.device("cpu")
        work = torch.float64 if probs.dtype == np.float64 else torch.float32
    elif isinstance(probs, torch.Tensor):
        if probs.dtype not in _FLOAT_TORCH:
            raise ValueError(f"{what} must be float16, float32 or float64, got torch {probs.dtype}")
        as_numpy = False
        device = probs.device
        work = torch.float64 if probs.dtype == torch.float64 else torch.float32
    else:
        raise ValueError(
            f"{what} must be a torch tensor or numpy array, got {type(probs).__name__}"
        )
    if probs.ndim < 3:
        raise ValueError(
            f"{what} must have shape (B, C, *spatial) with at least one spatial axis, "
            f"got {probs.ndim} dimension(s) {tuple(probs.shape)}"
        )
    if any(int(s) == 0 for s in probs.shape):
        raise ValueError(f"{what} has an empty axis: shape {tuple(probs.shape)}")
    # One pass for the whole range check; min/max propagate NaN, so NaN shows up here too.
    if as_numpy:
        low, high = float(np.min(probs)), float(np.max(probs))
    else:
        with torch.no_grad():
            low_t, high_t = torch.aminmax(probs.detach())
        low, high = float(low_t), float(high_t)
    if np.isnan(low) or np.isnan(high):
        raise ValueError(f"{what} contains NaN values")
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} must lie in [0, 1]; found values in [{low:.6g}, {high:.6g}]")
    batch, classes = int(probs.shape[0]), int(probs.shape[1])
    spatial = tuple(int(s) for s in probs.shape[2:])
    flat = probs.reshape(batch, classes, -1)
    if not as_numpy:
        flat = flat.detach()
    return ProbabilityInput(flat, spatial, as_numpy, device, work)


#: Void label of multiclass decisions with up to 255 classes (the usual "ignore" value).
DEFAULT_VOID_LABEL = 255


def void_label_for(void_label: int | None, n_classes: int) -> int:
    """The void label to use: ``void_label``, or 255 (C when there are more than 255 classes)."""
    if void_label is not None:
        return int(void_label)
    return DEFAULT_VOID_LABEL if n_classes <= DEFAULT_VOID_LABEL else n_classes


#: Largest per-pixel deviation of a multiclass sum from 1 taken as rounding (float16 keeps
#: about 3 decimal digits and a softmax over many classes adds one rounding per class).
SUM_TOLERANCE = {torch.float16: 2e-2, torch.float32: 1e-3, torch.float64: 1e-6}

#: Pixels per item whose class sums are checked (a stride over the whole item).
SUM_SAMPLE_PIXELS = 1 << 15


def check_sums_to_one(info: ProbabilityInput, what: str = "probs") -> None:
    """Refuse multiclass probabilities whose per-pixel sums are not 1 (logits, sigmoid outputs).

    A strided sample of up to :data:`SUM_SAMPLE_PIXELS` pixels per item is checked, so the cost
    stays far below one pass over a volume while unnormalised inputs, which are off everywhere,
    are still caught.
    """
    step = max(1, info.pixels // SUM_SAMPLE_PIXELS)
    sample = info.flat[:, :, ::step]
    if isinstance(sample, np.ndarray):
        sample = numpy_to_torch(np.ascontiguousarray(sample))
    stored = sample.dtype
    sums = sample.to(torch.float64).sum(1)
    worst = float((sums - 1.0).abs().max())
    if worst > SUM_TOLERANCE.get(stored, 1e-3):
        low, high = float(sums.min()), float(sums.max())
        raise ValueError(
            f"{what}: multiclass probabilities must sum to 1 over the classes at every pixel; "
            f"found sums from {low:.4g} to {high:.4g} (logits or independent sigmoid outputs? "
            "use multilabel=True for those)"
        )


def check_ignore_mask(
    ignore_mask: torch.Tensor | np.ndarray | None, info: ProbabilityInput
) -> torch.Tensor | None:
    """Validate a bool (B, *spatial) ignore mask and return it as a (B, d) torch bool tensor."""
    if ignore_mask is None:
        return None
    if isinstance(ignore_mask, np.ndarray):
        mask = torch.from_numpy(np.asarray(ignore_mask))
    elif isinstance(ignore_mask, torch.Tensor):
        mask = ignore_mask
    else:
        raise ValueError(f"ignore_mask must be a bool array, got {type(ignore_mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"ignore_mask must have dtype bool, got {mask.dtype}")
    expected = (info.batch, *info.spatial)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"ignore_mask shape {tuple(mask.shape)} does not match probs' (B, *spatial) {expected}"
        )
    return mask.to(info.device).reshape(info.batch, -1)


def round_down_to(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Largest ``dtype`` number not above ``value`` (float64), so ``p > result`` iff ``p > value``.

    Comparing float32 pixels with a rounded-to-nearest threshold could flip pixels that lie
    within half an ulp of it; rounding down keeps the strict comparison exact.
    """
    rounded = value.to(dtype)
    too_big = rounded.to(torch.float64) > value
    return torch.where(
        too_big, torch.nextafter(rounded, torch.full_like(rounded, -np.inf)), rounded
    )

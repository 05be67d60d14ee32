"""Running a segmentation model on an image: class probabilities aligned with its voxels.

2-D models run slice by slice along voxel axis k (whole slices, or 2-D sliding windows when the
spec has a patch size); 3-D models run on overlapping 3-D patches blended with Gaussian
importance weights, so patch borders, where a network sees least context, count least.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.device import resolve_device
from core.io.channels import with_channel_files
from core.io.image import Image
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.memory import require_memory
from core.models.footprint import activation_bytes_per_voxel, inference_bytes
from core.models.inputs import check_model_voxels, model_input
from core.models.loaded import LoadedModel
from core.probability_calibration.scaling import calibrate_probabilities

__all__ = [
    "FLOAT16_OUTPUT_BYTES",
    "calibrated_probabilities",
    "gaussian_importance",
    "predict",
    "window_starts",
]

#: Outputs whose float32 size would exceed this many bytes are returned as float16.
FLOAT16_OUTPUT_BYTES = 1 << 30


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of sliding windows of ``patch`` covering ``size`` with ``overlap``.

    Windows are spread evenly from 0 to ``size - patch`` so the last one ends at the border;
    consecutive windows overlap by at least ``overlap * patch``.

    Parameters
    ----------
    size, patch : int
        Axis length and window length (``patch <= size``).
    overlap : float
        Fraction of a window shared with its neighbour, in [0, 1).

    Returns
    -------
    list of int
    """
    if patch >= size:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    return [round(i * (size - patch) / (count - 1)) for i in range(count)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian weight map over a patch: 1 at the centre, small but positive at the borders.

    Parameters
    ----------
    patch : sequence of int
        Patch size per spatial axis.
    sigma_scale : float
        Standard deviation as a fraction of the patch size per axis.

    Returns
    -------
    torch.Tensor
        float32 tensor of shape ``patch``.
    """
    weights = torch.ones((), dtype=torch.float32)
    for n in patch:
        coords = torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0
        sigma = max(n * sigma_scale, 1e-3)
        weights = weights.unsqueeze(-1) * torch.exp(-0.5 * (coords / sigma) ** 2)
    weights = weights / weights.max()
    # Keep border weights positive so every voxel covered by any window gets a defined value.
    return weights.clamp_min(1e-3)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_to(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Pad the trailing spatial axes of ``tensor`` (N, C, *spatial) at the end up to ``sizes``."""
    spatial = tensor.shape[2:]
    padding: list[int] = []
    for have, want in zip(reversed(spatial), reversed(sizes), strict=True):
        padding += [0, max(0, want - have)]
    if not any(padding):
        return tensor
    # Replicate the border: constant padding would invent an intensity the network never saw.
    return F.pad(tensor, padding, mode="replicate")


class _Runner:
    """Runs batches through the module on one device and returns CPU float32 probabilities.

    Batches go in channels-last memory format when the module runs in it (see
    :func:`_inference_module`).
    """

    def __init__(
        self,
        module: nn.Module,
        activation: str,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
        *,
        num_classes: int | None = None,
        name: str = "the model",
    ) -> None:
        self.module = module
        self.activation = activation
        self.device = device
        self.memory_format = memory_format
        self.num_classes = num_classes
        self.name = name

    def _check(self, batch: torch.Tensor, logits: torch.Tensor) -> None:
        """Refuse an output that does not map one probability per class onto each input voxel.

        A 1x1 map would broadcast over the whole window and a map twice the input's size would
        be cropped, both giving a mask without an error.
        """
        classes = self.num_classes if self.num_classes is not None else logits.shape[1]
        expected = (batch.shape[0], classes, *batch.shape[2:])
        if logits.ndim != batch.ndim or tuple(logits.shape) != expected:
            raise ValueError(
                f"{self.name}: output has shape {tuple(logits.shape)} for an input of shape "
                f"{tuple(batch.shape)}; expected {expected} (one channel per class, the "
                "input's spatial size)"
            )
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(
                f"{self.name}: output holds NaN or infinite values for a finite input "
                "(broken weights or an overflow)"
            )

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        batch = batch.contiguous(memory_format=self.memory_format)
        try:
            if self.device.type == "cuda":
                # Mixed precision: convolutions in float16, activation in float32.
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.module(batch)
            else:
                logits = self.module(batch)
        except RuntimeError as error:  # torch.jit.Error too: a TorchScript traceback
            raise ValueError(
                f"{self.name}: the model failed on an input of shape {tuple(batch.shape)} "
                f"({_torch_reason(error)})"
            ) from error
        if not isinstance(logits, torch.Tensor):
            raise ValueError(
                f"{self.name}: returns a {type(logits).__name__}, not one tensor of class scores"
            )
        logits = logits.float()
        self._check(batch, logits)
        if self.activation == "softmax":
            probs = torch.softmax(logits, dim=1)
        else:
            probs = torch.sigmoid(logits)
        return probs.cpu()


def _torch_reason(error: RuntimeError) -> str:
    """The line of a torch error that says what went wrong.

    TorchScript errors carry both tracebacks (serialized and original code) before the actual
    reason on the last line; eager errors are usually one line already.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(error).__name__
    return reason.removeprefix("RuntimeError: ")[:300]


def _inference_module(
    module: nn.Module, mode: str, device: torch.device
) -> tuple[nn.Module, torch.memory_format]:
    """A copy of ``module`` on ``device`` with its weights in channels-last order, for one call.

    oneDNN's (CPU) and cuDNN's convolutions run faster on channels-last weights: on this
    project's 2-D U-Net 1.6-2x on the CPU, same results up to float rounding (measured side by
    side in benchmarks/bench_io_inference.py). A copy, because the caller's module may be in use
    on another thread (the GUI quantizes while it segments) and must keep its device and
    contiguous weights (saving and quantization read them). A module that cannot be copied or
    converted runs as it is, moved to the device, in the default order.
    """
    memory_format = torch.channels_last if mode == "2d" else torch.channels_last_3d
    try:
        fast = copy.deepcopy(module).to(device)
        with warnings.catch_warnings():
            # TorchScript modules warn about .grad of non-leaf tensors while converting.
            warnings.simplefilter("ignore", UserWarning)
            fast.to(memory_format=memory_format)
    except (RuntimeError, TypeError, copy.Error):  # e.g. TorchScript with fixed layouts
        return module.to(device), torch.contiguous_format
    return fast.eval(), memory_format


def _check_memory(
    model: LoadedModel,
    image: Image,
    target: torch.device,
    batch_size: int,
    divisor: int,
    output_itemsize: int,
    where: str,
) -> None:
    """Refuse, before any work, a prediction whose probabilities, input and activations
    cannot fit in the memory available (activations only counted on the CPU)."""
    spec = model.spec
    shape = image.shape3
    if spec.mode == "2d":
        window = spec.patch_size or shape[:2]
        window = [min(p, s) for p, s in zip(window, shape[:2], strict=True)]
        batch = batch_size if spec.patch_size is not None else min(batch_size, shape[2])
    else:
        window = [min(p, s) for p, s in zip(spec.patch_size or shape, shape, strict=True)]
        batch = batch_size
    window_voxels = batch * math.prod(_round_up(n, divisor) for n in window)
    per_voxel = None
    if target.type == "cpu":
        dims = 2 if spec.mode == "2d" else 3
        per_voxel = activation_bytes_per_voxel(model.module, spec.in_channels, dims, divisor)
    need = inference_bytes(
        shape=shape,
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
        output_itemsize=output_itemsize,
        window_voxels=window_voxels,
        per_voxel_activations=per_voxel,
    )
    require_memory(
        need,
        f"{where}segmenting {'x'.join(map(str, shape))} voxels into {spec.num_classes} classes "
        "(probabilities, input and the network's activations)",
    )


def _sliding_window(
    run: _Runner,
    volume: torch.Tensor,
    patch: Sequence[int],
    overlap: float,
    batch_size: int,
    divisor: int,
    num_classes: int,
    after_batch: Callable[[], None],
) -> torch.Tensor:
    """Gaussian-blended sliding-window probabilities of a ``(Cin, *spatial)`` tensor."""
    spatial = tuple(volume.shape[1:])
    patch = tuple(_round_up(min(p, s), divisor) for p, s in zip(patch, spatial, strict=True))
    padded_shape = tuple(max(p, s) for p, s in zip(patch, spatial, strict=True))
    padded = _pad_to(volume.unsqueeze(0), padded_shape)[0]
    importance = gaussian_importance(patch)
    total = torch.zeros((num_classes, *padded_shape), dtype=torch.float32)
    weight = torch.zeros(padded_shape, dtype=torch.float32)
    starts = itertools.product(
        *(window_starts(s, p, overlap) for s, p in zip(padded_shape, patch, strict=True))
    )
    windows = [
        tuple(slice(o, o + p) for o, p in zip(origin, patch, strict=True)) for origin in starts
    ]
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch = torch.stack([padded[(slice(None), *window)] for window in chunk])
        probs = run(batch)
        for window, prob in zip(chunk, probs, strict=True):
            total[(slice(None), *window)] += prob * importance
            weight[window] += importance
        after_batch()
    total /= weight
    return total[(slice(None), *(slice(0, s) for s in spatial))]


def _count_windows(shape: Sequence[int], patch: Sequence[int], overlap: float, divisor: int) -> int:
    patch = [_round_up(min(p, s), divisor) for p, s in zip(patch, shape, strict=True)]
    padded = [max(p, s) for p, s in zip(patch, shape, strict=True)]
    return math.prod(len(window_starts(s, p, overlap)) for s, p in zip(padded, patch, strict=True))


def predict(
    model: LoadedModel,
    image: Image,
    *,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    overlap: float = 0.5,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    calibrated: bool = True,
) -> np.ndarray:
    """Class probabilities of ``model`` on ``image``, aligned with ``image.array``.

    Parameters
    ----------
    model : LoadedModel
        The network and its spec (mode, patch size, preprocessing, activation).
    image : Image
        A volume ``(I, J, K[, 3])`` or a natural 2-D image ``(H, W, 1[, 3])``.
    device : {'auto', 'cpu', 'cuda'} or torch.device
        Where to compute; ``'auto'`` takes CUDA when present. CUDA runs in mixed precision.
    batch_size : int, optional
        Slices (2-D) or patches per forward pass; 8 slices / 2 patches on the CPU and 32 / 4 on
        CUDA when omitted.
    overlap : float
        Sliding-window overlap fraction in [0, 1) (patch modes only).
    on_progress : callable, optional
        Receives a :class:`~core.jobs.Progress` after each batch (stage ``"inference"``).
    cancel : CancelToken, optional
        Checked before each batch; cancelling raises :class:`~core.jobs.JobCancelled`.
    calibrated : bool
        Apply the spec's probability calibration (when it has one); False gives the
        network's own probabilities (what a calibration is fitted on).

    Returns
    -------
    numpy.ndarray
        Probabilities of shape ``(C, I, J, K)``: float32, or float16 when the float32 result
        would exceed :data:`FLOAT16_OUTPUT_BYTES` (a 512x512x300 CT with 3 classes stays under
        1 GB that way). Softmax probabilities sum to 1 over C.

    Raises
    ------
    ValueError
        A 3-D model on a single-slice image, a channel mismatch, or a bad overlap.
    JobCancelled
        When ``cancel`` was cancelled.
    """
    spec = model.spec
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if model.framework is not None:
        # The framework's own pipeline (preprocessing, sliding window, ensemble, export).
        channels = with_channel_files(image, spec.in_channels)
        for channel in channels:
            check_model_voxels(channel)
        probs = model.framework.predict(
            channels,
            device=device,
            on_progress=on_progress,
            cancel=cancel,
        )
        if probs.nbytes > FLOAT16_OUTPUT_BYTES:
            probs = probs.astype(np.float16)
        return calibrated_probabilities(probs, spec) if calibrated else probs
    where = f"{image.path}: " if image.path is not None else ""
    if spec.mode == "3d" and image.ndim_spatial == 2:
        raise ValueError(f"{where}model {model.name!r} is 3-D but the image is a single slice")
    target = resolve_device(device)
    if batch_size is None:
        batch_size = (
            (32 if spec.mode == "2d" else 4)
            if target.type == "cuda"
            else (8 if spec.mode == "2d" else 2)
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    num_classes = spec.num_classes
    shape = image.shape3
    out_bytes = num_classes * math.prod(shape) * 4
    out_dtype = np.float16 if out_bytes > FLOAT16_OUTPUT_BYTES else np.float32
    divisor = max(spec.size_divisor, int(getattr(model.module, "size_divisor", 1)))
    model.module.eval()
    _check_memory(model, image, target, batch_size, divisor, np.dtype(out_dtype).itemsize, where)
    volume = torch.from_numpy(model_input(model, image))

    module = model.module
    first_param = next(itertools.chain(module.parameters(), module.buffers()), None)
    home = first_param.device if first_param is not None else torch.device("cpu")
    fast, memory_format = _inference_module(module, spec.mode, target)
    name = f"{model.path}" if model.path is not None else f"model {model.name!r}"
    run = _Runner(fast, spec.activation, target, memory_format, num_classes=num_classes, name=name)

    if spec.mode == "2d":
        num_slices = shape[2]
        if spec.patch_size is None:
            total = math.ceil(num_slices / batch_size)
        else:
            windows = _count_windows(shape[:2], spec.patch_size, overlap, divisor)
            total = num_slices * math.ceil(windows / batch_size)
    else:
        patch = spec.patch_size or shape
        total = math.ceil(_count_windows(shape, patch, overlap, divisor) / batch_size)
    state = {"step": 0}

    def after_batch() -> None:
        state["step"] += 1
        report(
            on_progress,
            Progress(
                step=state["step"],
                total=total,
                message=f"inference: batch {state['step']}/{total}",
                stage="inference",
            ),
        )

    def check_cancel() -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()

    def cancellable(callback: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            callback()
            check_cancel()

        return wrapped

    out = np.empty((num_classes, *shape), dtype=out_dtype)
    try:
        check_cancel()
        if spec.mode == "2d" and spec.patch_size is None:
            padded_size = [_round_up(n, divisor) for n in shape[:2]]
            for first in range(0, shape[2], batch_size):
                last = min(first + batch_size, shape[2])
                # (Cin, I, J, k) -> (k, Cin, I, J): slices become the batch.
                batch = volume[..., first:last].permute(3, 0, 1, 2)
                probs = run(_pad_to(batch, padded_size))[..., : shape[0], : shape[1]]
                out[..., first:last] = probs.permute(1, 2, 3, 0).numpy()
                after_batch()
                check_cancel()
        elif spec.mode == "2d":
            for k in range(shape[2]):
                probs = _sliding_window(
                    run,
                    volume[..., k],
                    spec.patch_size,
                    overlap,
                    batch_size,
                    divisor,
                    num_classes,
                    cancellable(after_batch),
                )
                out[..., k] = probs.numpy()
        else:
            probs = _sliding_window(
                run,
                volume,
                spec.patch_size or shape,
                overlap,
                batch_size,
                divisor,
                num_classes,
                cancellable(after_batch),
            )
            out[...] = probs.numpy()
    finally:
        if fast is module:  # the fall-back ran the caller's module itself: move it back
            module.to(home)
    return calibrated_probabilities(out, spec) if calibrated else out


def calibrated_probabilities(probs: np.ndarray, spec) -> np.ndarray:
    """``probs`` with ``spec``'s probability calibration applied (in place when writeable).

    What :func:`predict` returns by default, for callers that asked it for the uncalibrated
    probabilities first (:func:`core.pipeline.segment_image` keeps their argmax).
    """
    calibration = spec.probability_calibration
    if calibration is None:
        return probs
    if not probs.flags.writeable:  # a framework may hand back a read-only array
        probs = probs.copy()
    return calibrate_probabilities(probs, calibration, spec.activation)

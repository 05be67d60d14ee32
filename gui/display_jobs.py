"""The worker's half of showing things: each job also makes what the views need of its result.

Reading an image, its ground truth or a segmentation is followed by whole-volume work before a
view can show it: the default window's percentiles, validating and narrowing a label map and
putting it in the image's memory order. On a 512x512x300 CT each of those passes takes hundreds
of milliseconds, so they run here, on the worker, once; the GUI thread only hands the prepared
results to the views, which share them. These are plain core jobs (``on_progress`` and
``cancel`` keywords) for :meth:`gui.main_window.MainWindow.run_job`; no Qt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.device import resolve_device
from core.display import (
    LabelVolume,
    WindowPreset,
    default_window,
    image_presets,
    prepare_labels,
)
from core.io import Image, Mask, read_image, read_mask
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.pipeline import SegmentationResult, segment_image

__all__ = [
    "CPU_BATCH_PIXELS",
    "cpu_batch_size",
    "OpenedImage",
    "OpenedMask",
    "SegmentedImage",
    "read_image_for_display",
    "read_mask_for_display",
    "segment_for_display",
    "segment_variant",
    "with_default_window",
]


@dataclass(frozen=True)
class OpenedImage:
    """An image with its default window ``(center, width)`` and its number-key presets."""

    image: Image
    window: tuple[float, float]
    presets: tuple[WindowPreset, ...] | None = None


@dataclass(frozen=True)
class OpenedMask:
    """A label file read against an image: the reader's mask and its displayable labels."""

    mask: Mask  # its warnings go to the Data panel
    labels: LabelVolume


@dataclass(frozen=True)
class SegmentedImage:
    """A segmentation ready for the session and the views.

    Attributes
    ----------
    result : core.pipeline.SegmentationResult
        The readouts, with ``mask`` replaced by ``labels.array`` (one copy of the label map)
        and ``probs`` set to None: the session keeps probabilities once per model variant.
    labels : core.display.LabelVolume
        The label map for the views.
    probs : numpy.ndarray
        ``(C, I, J, K)`` float16 probabilities the decision was made from.
    """

    result: SegmentationResult
    labels: LabelVolume
    probs: np.ndarray


def with_default_window(image: Image) -> OpenedImage:
    """Pair an image with its default window and presets (passes over the volume: run it on a
    worker; on a 512x512x300 CT the presets' sample alone held the GUI thread ~30 ms per view)."""
    window = default_window(image.array, dicom_window=image.window)
    presets = image_presets(image.array, modality=image.modality, natural=image.is_natural)
    return OpenedImage(image, window, presets)


def read_image_for_display(
    path: str,
    *,
    series: str | None = None,
    volume: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> OpenedImage:
    """Read an image (see :func:`core.io.read_image`) and compute its default window."""
    return with_default_window(read_image(path, series=series, volume=volume))


def read_mask_for_display(
    path: str,
    image: Image,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> OpenedMask:
    """Read a label file on ``image``'s grid (:func:`core.io.read_mask`) and prepare it."""
    mask = read_mask(path, reference=image)
    return OpenedMask(mask, prepare_labels(mask.array, image, what="ground truth"))


#: Pixels per forward pass of a 2-D model on the CPU: two 512x512 slices. predict's default of
#: eight slices holds about 900 MB of activations at 512x512 for the demo U-Net, two about
#: 200 MB, at the same speed per slice on the CPU.
CPU_BATCH_PIXELS = 2 * 512 * 512


def cpu_batch_size(model, image: Image, device: str = "auto") -> int | None:
    """Slices per forward pass for a 2-D whole-slice model on the CPU (None: predict's default).

    Only large slices get a smaller batch than predict's default; CUDA and patch models keep
    theirs.
    """
    spec = model.spec
    if spec.mode != "2d" or spec.patch_size is not None or resolve_device(device).type != "cpu":
        return None
    pixels = image.shape3[0] * image.shape3[1]
    return max(1, CPU_BATCH_PIXELS // pixels) if pixels * 8 > CPU_BATCH_PIXELS else None


def segment_variant(
    variant,
    backend: str,
    image: Image,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **options,
) -> SegmentedImage:
    """:func:`segment_for_display` with a session variant's model on ``backend``.

    The first run of a variant on the other backend exports it to ONNX here, off the GUI thread.
    """
    if backend != variant.model.backend:
        report(on_progress, Progress(0, None, f"preparing {variant.name} for {backend}"))
    model = variant.on_backend(backend)
    return segment_for_display(model, image, on_progress=on_progress, cancel=cancel, **options)


def segment_for_display(
    model,
    image: Image,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **options,
) -> SegmentedImage:
    """:func:`core.pipeline.segment_image`, then the label map and probabilities made compact.

    The label map is stored once, in the image's memory order (the views slice it without a
    copy); the probabilities become float16 (half the memory; the decision rules upcast them
    chunk by chunk) and leave the result, so that dropping the session's copy frees them.
    Large slices go through a 2-D model in small batches (:func:`cpu_batch_size`).
    """
    batch = cpu_batch_size(model, image, options.get("device", "auto"))
    result = segment_image(
        model, image, batch_size=batch, on_progress=on_progress, cancel=cancel, **options
    )
    labels = prepare_labels(result.mask, image, what="prediction")
    probs = result.probs.astype(np.float16, copy=False)
    result = dataclasses.replace(result, mask=labels.array, probs=None)
    return SegmentedImage(result, labels, probs)

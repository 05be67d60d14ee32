"""One quantized variant of a model, from calibration images to a saved model folder.

The ``quantize`` command and each task of a quantization sweep (:mod:`core.sweep`) make their
variant through :func:`quantize_to_folder`, so a sweep's variants are exactly what ``quantize``
would have written with the same settings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.jobs import CancelToken, ProgressCallback

__all__ = ["QuantizedVariant", "quantize_to_folder"]


@dataclass
class QuantizedVariant:
    """A saved variant: the quantization result, the calibration batch's shape, the timings."""

    result: Any
    calibration_shape: tuple[int, ...]
    timings: dict[str, float] = field(default_factory=dict)


def quantize_to_folder(
    model: Any,
    images: Sequence[Any],
    config: Any,
    out: str | os.PathLike[str],
    *,
    samples: int,
    crop: int | None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantizedVariant:
    """Sample calibration inputs, quantize ``model`` and save it as a model folder.

    Parameters
    ----------
    model : core.models.LoadedModel
        The float model.
    images : sequence of core.io.Image
        Calibration images (no labels).
    config : core.quant.QuantConfig
        Its ``seed`` also seeds the calibration sampling.
    out : path-like
        Model folder to write (replaced when it holds an earlier quantized model).
    samples, crop
        Calibration samples drawn, and their square/cubic patch size (None: whole slices).
    on_progress, cancel
        See :mod:`core.jobs`.

    Returns
    -------
    QuantizedVariant
        Timings ``calibration_inputs``, ``save`` and the quantizer's own (``quantize:*``).
    """
    from core.models import calibration_inputs, save_quantized_model
    from core.quant import quantize_loaded_model

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    calib = calibration_inputs(model, list(images), n=samples, seed=config.seed, crop=crop)
    timings["calibration_inputs"] = time.perf_counter() - clock
    result = quantize_loaded_model(model, calib, config, on_progress=on_progress, cancel=cancel)
    clock = time.perf_counter()
    save_quantized_model(result, model, out, overwrite=True)
    timings["save"] = time.perf_counter() - clock
    timings.update({f"quantize:{k}": v for k, v in result.timings.items()})
    return QuantizedVariant(result, tuple(calib.shape), timings)

"""Quantizing every network of a model: one network, or each member of a framework's ensemble.

An nnU-Net model is an ensemble of folds run by nnU-Net's predictor; each fold's network is
quantized on its own with the same calibration inputs (cut from nnU-Net-preprocessed images),
and the results go back into the framework model with ``with_members``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from core.jobs import CancelToken, Progress, ProgressCallback
from core.quant.config import QuantConfig
from core.quant.pipeline import QuantResult, quantize_model

__all__ = ["quantize_loaded_model"]


def _member_progress(
    on_progress: ProgressCallback | None, name: str, index: int, count: int
) -> ProgressCallback | None:
    """Progress of one member as part of the whole run: steps offset, the member named."""
    if on_progress is None:
        return None

    def forward(progress: Progress) -> None:
        total = progress.total
        on_progress(
            dataclasses.replace(
                progress,
                step=progress.step + index * (total or 0),
                total=None if total is None else total * count,
                message=f"{name}: {progress.message}",
            )
        )

    return forward


def quantize_loaded_model(
    model: Any,
    calib: Any,
    config: QuantConfig,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantResult:
    """:func:`quantize_model` for a loaded model, each ensemble member in turn.

    Parameters
    ----------
    model : core.models.LoadedModel or nn.Module
        A segbench model, a framework model (``model.framework`` set) or a bare module.
    calib, config, on_progress, cancel
        As for :func:`quantize_model`.

    Returns
    -------
    QuantResult
        The first member's result; the others are in its ``members`` list, in the framework's
        member order (nnU-Net: the folds).

    Raises
    ------
    ValueError
        Activation quantization asked for a framework model: the framework's own inference runs
        float activations, and its file format has no place for the learned steps.
    """
    if getattr(getattr(model, "module", model), "is_onnx", False):
        raise ValueError(
            f"{getattr(model, 'path', None) or getattr(model, 'name', 'model')}: is an ONNX file, "
            "which cannot be quantized here: quantize the torch model it was exported from, then "
            "export that variant"
        )
    framework = getattr(model, "framework", None)
    if framework is None:
        return quantize_model(model, calib, config, on_progress=on_progress, cancel=cancel)
    if config.act_bits is not None:
        raise ValueError(
            f"{framework.framework} models are quantized weights only: their own inference runs "
            "float activations (leave activation bits off)"
        )
    names = framework.member_names()
    results = []
    for index, module in enumerate(framework.members()):
        progress = _member_progress(on_progress, names[index], index, len(names))
        results.append(quantize_model(module, calib, config, on_progress=progress, cancel=cancel))
    first = results[0]
    first.architecture = model.spec.architecture
    first.members = results[1:]
    return first

"""Per-layer diagnostics of a quantization run, as plain numpy for the GUI's plots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.quant.quantizers import FlexRoundQuantizer, WeightQuantizer, dequantize

__all__ = [
    "LayerReport",
    "build_layer_report",
    "layer_summary",
    "MAX_HISTOGRAM_VALUES",
    "MAX_SCATTER_POINTS",
]

MAX_HISTOGRAM_VALUES = 200_000
MAX_SCATTER_POINTS = 20_000


def _subsample(values: torch.Tensor, limit: int, generator: torch.Generator) -> np.ndarray:
    flat = values.detach().reshape(-1).float().cpu()
    if flat.numel() > limit:
        flat = flat[torch.randperm(flat.numel(), generator=generator)[:limit]]
    return flat.numpy()


@dataclass
class LayerReport:
    """What happened to one quantized layer.

    All arrays are numpy float32 (codes and deltas as float too) in the layer's canonical
    layout ``(Cout, Cin_per_group, *kernel)``; per-tensor quantities are 1-element arrays.

    Attributes
    ----------
    name, kind : str
        Module name in the model and layer class ("Conv2d", "ConvTranspose2d", ...).
    weight_shape : tuple of int
        Shape of the weight in the layer's own layout.
    bits : int
    method : str
    block : str
        Reconstruction block the layer belonged to.
    s1_init, s1_learned : np.ndarray
        Grid step before and after learning (1 value, or one per output channel).
    zero_point : np.ndarray
    divisor_log : np.ndarray or None
        FlexRound only: ``log(S2 * s3 * s4)`` per weight (subsampled to at most 200k values);
        0 everywhere means plain rounding on the grid s1.
    s3, s4 : np.ndarray or None
        FlexRound's per-output-channel and per-input-channel factors (not logs); s4 is None for
        Linear layers.
    frac_changed, frac_moved_2plus : float
        Fraction of integer codes that differ from round-to-nearest on the initial grid, and
        fraction that moved by two levels or more.
    scatter_abs_w_over_s1, scatter_delta_q : np.ndarray
        Paired samples (at most 20k) of ``|W| / s1_init`` and ``q - q_rtn`` for a scatter plot.
    weights : np.ndarray
        Float weights, subsampled (at most 200k) for the histogram.
    grid_levels : np.ndarray
        ``s1 * (q - z)`` for every code q: shape (1, 2**bits) per tensor, (Cout, 2**bits) per
        channel.
    loss_before, loss_after : float
        The held-out reconstruction loss of the unit the layer was learned in (its block; the
        layer itself with layer-wise reconstruction) at round-to-nearest and in the kept
        result: channel-summed squared error against the float model, averaged over the rest,
        on calibration samples never trained on; ``loss_after <= loss_before``.
    layer_error_before, layer_error_after : float
        The same error measured at this layer's own output (against the float model's same
        layer, fed the float inputs). Equal to the losses for layer-wise reconstruction; inside
        a block it may rise while the block's output gets closer to the float one.
    weight_rel_error, weight_rel_error_rtn : float
        ``||W - W_hat|| / ||W||`` after learning and for round-to-nearest.
    act_step : float or None
        Step of the layer's input fake quantization (``act_bits`` runs only).
    kept_nearest : bool
        True when the layer's result is its round-to-nearest start (no learned iterate of its
        block beat it on the held-out samples), not what learning found.
    kept_reason : str
        Why that result was kept, in words.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    bits: int
    method: str
    block: str
    s1_init: np.ndarray
    s1_learned: np.ndarray
    zero_point: np.ndarray
    divisor_log: np.ndarray | None
    s3: np.ndarray | None
    s4: np.ndarray | None
    frac_changed: float
    frac_moved_2plus: float
    scatter_abs_w_over_s1: np.ndarray
    scatter_delta_q: np.ndarray
    weights: np.ndarray
    grid_levels: np.ndarray
    loss_before: float
    loss_after: float
    weight_rel_error: float
    weight_rel_error_rtn: float
    layer_error_before: float = float("nan")
    layer_error_after: float = float("nan")
    kept_nearest: bool = True
    kept_reason: str = ""
    act_step: float | None = None


@torch.no_grad()
def build_layer_report(
    name: str,
    kind: str,
    weight_shape: tuple[int, ...],
    quantizer: WeightQuantizer,
    *,
    block: str,
    loss_before: float,
    loss_after: float,
    kept_nearest: bool,
    layer_error_before: float = float("nan"),
    layer_error_after: float = float("nan"),
    kept_reason: str = "",
    seed: int = 0,
    act_step: float | None = None,
) -> LayerReport:
    """Collect the diagnostics of one layer from its (finished) quantizer."""
    generator = torch.Generator().manual_seed(seed)
    weight = quantizer.weight.cpu()
    codes = quantizer.codes().cpu()
    rtn = quantizer.rtn_codes().cpu()
    scale = quantizer.scale().cpu()
    zero = quantizer.zero_point.cpu()
    delta = codes - rtn
    w_hat = dequantize(codes, scale, zero)
    w_rtn = dequantize(rtn, quantizer.scale_init.cpu(), zero)
    norm = float(weight.norm()) or 1.0
    n_grids = scale.numel()
    levels = torch.arange(quantizer.qmax + 1, dtype=torch.float32)
    grid_levels = scale.reshape(n_grids, 1) * (levels.reshape(1, -1) - zero.reshape(n_grids, 1))
    ratio = weight.abs() / quantizer.scale_init.cpu()
    pick = torch.randperm(weight.numel(), generator=generator)[:MAX_SCATTER_POINTS]
    divisor_log = s3 = s4 = None
    if isinstance(quantizer, FlexRoundQuantizer):
        divisor_log = _subsample(quantizer.log_divisor().cpu(), MAX_HISTOGRAM_VALUES, generator)
        s3 = torch.exp(quantizer.log_s3).reshape(-1).cpu().numpy()
        if quantizer.log_s4 is not None:
            s4 = torch.exp(quantizer.log_s4).reshape(-1).cpu().numpy()
    return LayerReport(
        name=name,
        kind=kind,
        weight_shape=tuple(weight_shape),
        bits=quantizer.bits,
        method=quantizer.method,
        block=block,
        s1_init=quantizer.scale_init.reshape(-1).cpu().numpy().copy(),
        s1_learned=scale.reshape(-1).numpy().copy(),
        zero_point=zero.reshape(-1).numpy().copy(),
        divisor_log=divisor_log,
        s3=s3,
        s4=s4,
        frac_changed=float((delta != 0).float().mean()),
        frac_moved_2plus=float((delta.abs() >= 2).float().mean()),
        scatter_abs_w_over_s1=ratio.reshape(-1)[pick].numpy().copy(),
        scatter_delta_q=delta.reshape(-1)[pick].numpy().copy(),
        weights=_subsample(weight, MAX_HISTOGRAM_VALUES, generator),
        grid_levels=grid_levels.numpy(),
        loss_before=float(loss_before),
        loss_after=float(loss_after),
        layer_error_before=float(layer_error_before),
        layer_error_after=float(layer_error_after),
        weight_rel_error=float((w_hat - weight).norm()) / norm,
        weight_rel_error_rtn=float((w_rtn - weight).norm()) / norm,
        kept_nearest=kept_nearest,
        kept_reason=kept_reason,
        act_step=act_step,
    )


def _ratio(learned: np.ndarray, initial: np.ndarray) -> float:
    """Mean of s1_learned / s1_initial over the grid's entries (1 per tensor or per channel)."""
    initial = np.asarray(initial, dtype=np.float64).ravel()
    learned = np.asarray(learned, dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = learned / initial
    ratio = ratio[np.isfinite(ratio)]
    return float(ratio.mean()) if ratio.size else float("nan")


def layer_summary(layer: LayerReport) -> dict[str, Any]:
    """A layer's headline numbers (reports, tables), from its :class:`LayerReport`.

    Parameters
    ----------
    layer : core.quant.LayerReport

    Returns
    -------
    dict
        name, kind, block, bits, s1_ratio (mean learned/initial grid step), percent_changed,
        percent_moved_2plus, loss_before, loss_after (its block's, held-out),
        layer_error_before, layer_error_after, weight_rel_error, weight_rel_error_rtn,
        kept_nearest, kept_reason.
    """
    return {
        "name": layer.name,
        "kind": layer.kind,
        "block": layer.block,
        "bits": int(layer.bits),
        "s1_ratio": _ratio(layer.s1_learned, layer.s1_init),
        "percent_changed": 100.0 * float(layer.frac_changed),
        "percent_moved_2plus": 100.0 * float(layer.frac_moved_2plus),
        "loss_before": float(layer.loss_before),
        "loss_after": float(layer.loss_after),
        "layer_error_before": float(layer.layer_error_before),
        "layer_error_after": float(layer.layer_error_after),
        "weight_rel_error": float(layer.weight_rel_error),
        "weight_rel_error_rtn": float(layer.weight_rel_error_rtn),
        "kept_nearest": bool(layer.kept_nearest),
        "kept_reason": layer.kept_reason,
    }

"""``quantize_model``: fold BatchNorm, set up quantizers, reconstruct block by block."""

from __future__ import annotations

import copy
import fnmatch
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.device import select_device
from core.jobs import CancelToken, Progress, ProgressCallback, ProgressThrottle
from core.quant.batchnorm import fold_batchnorm
from core.quant.blocks import execution_order, find_blocks
from core.quant.config import QuantConfig
from core.quant.diagnostics import LayerReport, build_layer_report
from core.quant.grids import lp_search_grid, minmax_grid
from core.quant.layout import from_canonical, is_quantizable, is_transposed, to_canonical
from core.quant.quantizers import (
    ActivationFakeQuant,
    ActivationQuantizer,
    AdaRoundQuantizer,
    FixedQuantizer,
    FlexRoundQuantizer,
    OutputFakeQuant,
    WeightQuantizer,
    dequantize,
)
from core.quant.reconstruction import Checkpoint, capture_block, reconstruct_block
from core.quant.shared_outputs import find_shared_outputs
from core.quant.wrapper import QuantLayer

__all__ = [
    "ActivationGrid",
    "QuantizedWeight",
    "QuantResult",
    "quantize_model",
    "prepare_calibration",
    "attach_activation_quantizers",
    "attach_output_quantizers",
]


@dataclass
class QuantizedWeight:
    """The integer form of one quantized weight, as it is exported.

    Attributes
    ----------
    codes : torch.Tensor
        Integer codes in ``[0, 2**bits - 1]`` (int64) in the layer's own weight layout.
    scale, zero_point : torch.Tensor
        s1 and z, 1 value per tensor or one per output channel (1-D, float32).
    bits : int
    transposed : bool
        True for ConvTranspose layers, whose output channels run along weight dim 1.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    transposed: bool


@dataclass(frozen=True)
class ActivationGrid:
    """The learned per-tensor fake quantization of one layer's input.

    The input is replaced by ``clamp(round(x / step), low, high) * step``.
    """

    step: float
    low: int
    high: int
    bits: int


def attach_activation_quantizers(model: nn.Module, grids: dict[str, ActivationGrid]) -> None:
    """Register the input fake quantization of ``grids`` on the named layers of ``model``."""
    for name, grid in grids.items():
        layer = model.get_submodule(name) if name else model
        layer.register_forward_pre_hook(ActivationFakeQuant(grid.step, grid.low, grid.high))


def attach_output_quantizers(
    model: nn.Module, shared_outputs: dict[str, str], grids: dict[str, ActivationGrid]
) -> None:
    """Quantize the output of each producer of ``shared_outputs`` with its reader's input grid.

    Parameters
    ----------
    shared_outputs : dict of str to str
        Producer layer -> the layer that reads its output directly
        (:func:`core.quant.shared_outputs.find_shared_outputs`).
    grids : dict of str to ActivationGrid
        The input grids; a producer whose reader has none is left alone.
    """
    for producer, reader in shared_outputs.items():
        if reader in grids:
            grid = grids[reader]
            layer = model.get_submodule(producer) if producer else model
            layer.register_forward_hook(OutputFakeQuant(grid.step, grid.low, grid.high))


def _learned_grid(act: ActivationQuantizer | None) -> ActivationGrid | None:
    """The fixed grid of a learned input quantizer; None when there is none or it never ran."""
    if act is None or not bool(act.initialised):
        return None
    low, high = act.bounds
    return ActivationGrid(float(act.step().detach()), low, high, act.bits)


@dataclass
class QuantResult:
    """Everything a quantization run produced.

    Attributes
    ----------
    model : nn.Module
        New module (BatchNorm folded) whose quantized layers hold the dequantized weights; on the
        input model's device, in eval mode.
    layers : list of LayerReport
        Per-layer diagnostics, in execution order.
    history : dict of str to list of float
        Reconstruction loss per iteration for each block (empty lists for round-to-nearest).
    timings : dict of str to float
        Seconds: 'fold', 'init', 'reconstruction', 'total', and 'block:<name>' per block.
    config : QuantConfig
    architecture : str
        The base model's architecture name (the spec's when known, else its class name).
    weights : dict of str to QuantizedWeight
        Integer codes and grids of every quantized layer (what :func:`save_quantized` writes).
    folded_batchnorm : list of (str, str)
        ``(layer, batchnorm)`` names folded before quantization.
    blocks : list of str
        Reconstruction blocks in execution order.
    activations : dict of str to ActivationGrid
        Input fake quantization per layer when ``config.act_bits`` is set (empty otherwise);
        the result model applies it with forward pre-hooks.
    shared_outputs : dict of str to str
        With ``act_bits``: producer layer -> the layer whose input grid quantizes the
        producer's output, for outputs several quantized layers read
        (:mod:`core.quant.shared_outputs`); the result model applies it with forward hooks.
    block_losses : dict of str to (float, float)
        Each block's reconstruction loss (hard rounding) on its held-out calibration samples
        at round-to-nearest and of the kept result (never higher).
    checkpoints : dict of str to list of Checkpoint
        Per block, every scored iterate (held-out block loss and each layer's held-out error
        against the float model), round-to-nearest (iteration 0) first.
    device : str
        Where the reconstruction ran, in words.
    members : list of QuantResult
        For an ensemble (an nnU-Net model's folds): the results of the other members, in order
        (see :func:`core.quant.ensemble.quantize_loaded_model`); empty otherwise.
    """

    model: nn.Module
    layers: list[LayerReport]
    history: dict[str, list[float]]
    timings: dict[str, float]
    config: QuantConfig
    architecture: str
    weights: dict[str, QuantizedWeight] = field(default_factory=dict)
    folded_batchnorm: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    block_losses: dict[str, tuple[float, float]] = field(default_factory=dict)
    checkpoints: dict[str, list[Checkpoint]] = field(default_factory=dict)
    activations: dict[str, ActivationGrid] = field(default_factory=dict)
    shared_outputs: dict[str, str] = field(default_factory=dict)
    device: str = ""
    members: list[QuantResult] = field(default_factory=list)


def prepare_calibration(calib: Any) -> torch.Tensor:
    """Turn a tensor or an iterable of input batches into one float tensor (N, ...)."""
    if isinstance(calib, torch.Tensor):
        batches = [calib]
    elif isinstance(calib, Iterable):
        batches = []
        for item in calib:
            if isinstance(item, (tuple, list)) and item:
                item = item[0]
            if not isinstance(item, torch.Tensor):
                raise ValueError(f"calibration batches must be tensors, got {type(item).__name__}")
            batches.append(item)
    else:
        raise ValueError(
            f"calibration data must be a tensor or an iterable of tensors, "
            f"got {type(calib).__name__}"
        )
    if not batches or sum(b.shape[0] for b in batches if b.dim() > 0) == 0:
        raise ValueError("calibration data is empty: give at least one input sample")
    if any(not b.is_floating_point() for b in batches):
        raise ValueError("calibration inputs must be floating-point tensors")
    try:
        return torch.cat([b.detach().float().cpu() for b in batches], dim=0)
    except RuntimeError as exc:
        raise ValueError(f"calibration batches have inconsistent shapes: {exc}") from exc


def _architecture(model: Any) -> tuple[nn.Module, str]:
    spec = getattr(model, "spec", None)
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise ValueError(f"expected a torch nn.Module to quantize, got {type(model).__name__}")
    name = getattr(spec, "architecture", None) or type(module).__name__
    return module, str(name)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _make_quantizer(
    layer: nn.Module, bits: int, config: QuantConfig, device: torch.device
) -> WeightQuantizer:
    weight = to_canonical(layer.weight.detach().float(), layer).to(device)
    per_channel = config.granularity == "channel"
    search = minmax_grid if config.method == "rtn-minmax" else lp_search_grid
    grid = search(weight, bits, per_channel=per_channel, symmetric=config.symmetric)
    if config.method == "flexround":
        return FlexRoundQuantizer(
            weight,
            grid,
            input_factor=not isinstance(layer, nn.Linear),
            learn_grid=config.learn_grid,
        )
    if config.method == "adaround":
        return AdaRoundQuantizer(weight, grid)
    return FixedQuantizer(weight, grid)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` wherever the module called ``name`` is registered.

    A module can sit under several names: dynamic_network_architectures (nnU-Net's networks)
    keeps each conv both as ``.conv`` and inside an ``nn.Sequential`` that its forward runs.
    Replacing one name only would leave the forward on the float layer.
    """
    old = model.get_submodule(name)
    for parent in list(model.modules()):
        if parent is new:  # the wrapper holds ``old`` itself
            continue
        for child_name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, child_name, new)


def _forward_all(model: nn.Module, calib: torch.Tensor, batch: int, device: torch.device):
    def run() -> None:
        with torch.no_grad():
            for start in range(0, calib.shape[0], batch):
                model(calib[start : start + batch].to(device))

    return run


def quantize_model(
    model: nn.Module,
    calib: Any,
    config: QuantConfig,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantResult:
    """Quantize the weights of ``model`` post-training.

    Parameters
    ----------
    model : nn.Module
        The float model (or a ``LoadedModel`` with ``.module`` and ``.spec``); never modified.
    calib : torch.Tensor or iterable of torch.Tensor
        Unlabeled model inputs ``(N, ...)`` or batches of them.
    config : QuantConfig
    on_progress : callable, optional
        Receives :class:`core.jobs.Progress` (block, iteration, loss), at most ~10 per second.
    cancel : CancelToken, optional
        Checked every iteration and every cached batch; raises :class:`core.jobs.JobCancelled`.

    Returns
    -------
    QuantResult
    """
    t_start = time.perf_counter()
    if not isinstance(config, QuantConfig):
        raise ValueError(f"config must be a QuantConfig, got {type(config).__name__}")
    base, architecture = _architecture(model)
    data = prepare_calibration(calib)
    choice = select_device(config.device)
    device = choice.device
    report = ProgressThrottle(on_progress, interval=0.1)

    def check() -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()

    # 1. A float copy on the CPU, BatchNorm folded: the reference and the base of the result.
    folded = copy.deepcopy(base).cpu().eval()
    folded_pairs = fold_batchnorm(folded)
    for p in folded.parameters():
        p.requires_grad_(False)
    fp_model = copy.deepcopy(folded).to(device).eval()
    t_fold = time.perf_counter()

    # 2. Which layers, in which order, with how many bits.
    candidates = [
        name
        for name, module in folded.named_modules()
        if is_quantizable(module)
        and not any(fnmatch.fnmatchcase(name, pattern) for pattern in config.skip)
    ]
    if not candidates:
        raise ValueError(
            "the model has no quantizable layer (Linear, Conv, ConvTranspose) left after "
            f"skipping {list(config.skip)}"
        )
    check()
    order, counts = execution_order(
        fp_model, candidates, _forward_all(fp_model, data[:1], 1, device)
    )
    called = [n for n in order if counts[n] > 0]
    bits = dict.fromkeys(order, config.bits)
    if config.first_last_bits is not None and called:
        bits[called[0]] = config.first_last_bits
        bits[called[-1]] = config.first_last_bits

    # 3. The working copy: every quantizable layer replaced by a QuantLayer.
    work = copy.deepcopy(folded).to(device).eval()
    wrappers: dict[str, QuantLayer] = {}
    for name in order:
        check()
        layer = work.get_submodule(name)
        act = None
        if config.act_bits is not None:
            # the first and last layers keep their inputs at first_last_bits too (the image
            # and the features feeding the head are the most sensitive, as for weights)
            edge = config.first_last_bits is not None and called and name in (called[0], called[-1])
            act = ActivationQuantizer(config.first_last_bits if edge else config.act_bits)
        wrapper = QuantLayer(layer, _make_quantizer(layer, bits[name], config, device), act)
        wrapper.to(device)
        for p in wrapper.learnable_parameters():
            p.requires_grad_(False)
        if name:
            _set_submodule(work, name, wrapper)
        wrappers[name] = wrapper
    if "" in wrappers:  # the whole model is one layer
        work = wrappers[""]
    # Outputs that several quantized layers read get one quantization, at their producer.
    shared_outputs = find_shared_outputs(folded, order) if config.act_bits is not None else {}
    t_init = time.perf_counter()

    # 4. Blocks in execution order; layers outside the given blocks become their own blocks.
    if config.reconstruction == "layer":
        blocks = list(order)
    elif config.blocks is not None:
        known = dict(folded.named_modules())
        missing = [b for b in config.blocks if b not in known]
        if missing:
            raise ValueError(f"unknown block names {missing}: use names from named_modules()")
        blocks = list(config.blocks)
        covered = {n for n in order for b in blocks if n == b or n.startswith(b + ".") or b == ""}
        blocks += [n for n in order if n not in covered]
    else:
        blocks = find_blocks(folded, order)
    block_order, block_calls = execution_order(
        fp_model, blocks, _forward_all(fp_model, data[:1], 1, device)
    )
    for name in block_order:
        if block_calls[name] > 1:
            raise ValueError(
                f"module {name!r} runs {block_calls[name]} times per forward pass; give "
                "blocks explicitly (config.blocks) or use reconstruction='layer'"
            )
    members = {
        b: [n for n in order if b == "" or n == b or n.startswith(b + ".")] for b in block_order
    }
    claimed: set[str] = set()
    for b in block_order:
        members[b] = [n for n in members[b] if n not in claimed]
        claimed.update(members[b])

    # 5. Reconstruct block after block.
    cache_budget = None
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cache_budget = int(free * config.max_cache_fraction / 3)
    iters = config.iters if config.learned else 0
    total_steps = max(1, len(block_order) * max(iters, 1))
    step = 0
    history: dict[str, list[float]] = {}
    block_losses: dict[str, tuple[float, float]] = {}
    timings: dict[str, float] = {"fold": t_fold - t_start, "init": t_init - t_fold}
    checkpoints: dict[str, list[Checkpoint]] = {}
    layer_losses: dict[str, dict[str, Any]] = {}
    t_rec = time.perf_counter()
    for index, block_name in enumerate(block_order):
        check()
        t_block = time.perf_counter()
        block_layers = {n: wrappers[n] for n in members[block_name]}
        for name, wrapper in wrappers.items():
            if wrapper.mode != "frozen" and name not in block_layers:
                wrapper.set_mode("fp")
        for wrapper in block_layers.values():
            wrapper.set_mode("hard")
        block_module = work.get_submodule(block_name) if block_name else work
        q_cache = None
        if block_layers and block_calls[block_name] > 0:
            q_cache = capture_block(
                work,
                block_module,
                data,
                batch_size=config.batch_size,
                device=device,
                with_outputs=False,
                cache_budget=cache_budget,
                cancel=cancel,
            )
        if q_cache is not None:
            fp_block = fp_model.get_submodule(block_name) if block_name else fp_model
            fp_cache = capture_block(
                fp_model,
                fp_block,
                data,
                batch_size=config.batch_size,
                device=device,
                with_outputs=True,
                cache_budget=cache_budget,
                cancel=cancel,
            )
            outcome = reconstruct_block(
                block_name,
                block_module,
                block_layers,
                q_cache,
                fp_cache,
                config,
                device,
                block_index=index,
                report=report,
                step_offset=step,
                total_steps=total_steps,
                cancel=cancel,
            )
            history[block_name] = outcome.history
            block_losses[block_name] = (outcome.loss_before, outcome.loss_after)
            checkpoints[block_name] = outcome.checkpoints
            for name in block_layers:
                layer_losses[name] = {
                    "block": block_name,
                    "loss_before": outcome.loss_before,
                    "loss_after": outcome.loss_after,
                    "layer_error_before": outcome.layer_loss_before[name],
                    "layer_error_after": outcome.layer_loss_after[name],
                    "kept_nearest": outcome.kept_nearest,
                    "kept_reason": outcome.kept_reason,
                }
            del q_cache, fp_cache
        else:
            history[block_name] = []
            for name in block_layers:
                layer_losses[name] = {
                    "block": block_name,
                    "loss_before": float("nan"),
                    "loss_after": float("nan"),
                    "layer_error_before": float("nan"),
                    "layer_error_after": float("nan"),
                    "kept_nearest": True,
                    "kept_reason": "the block never ran on the calibration data",
                }
        for wrapper in block_layers.values():
            wrapper.freeze()
        # Once a reader's step is final, the later blocks see its producer's output quantized.
        for producer, reader in shared_outputs.items():
            grid = _learned_grid(wrappers[reader].act_quantizer)
            if reader in block_layers and grid is not None:
                attach_output_quantizers(work, {producer: reader}, {reader: grid})
        step += max(iters, 1)
        timings[f"block:{block_name}"] = time.perf_counter() - t_block
        report(
            Progress(
                step=step,
                total=total_steps,
                stage="reconstruction",
                message=f"block {block_name or '(model)'} done ({index + 1}/{len(block_order)})",
                values={"loss": history[block_name][-1]} if history[block_name] else {},
            ),
            force=True,
        )
    timings["reconstruction"] = time.perf_counter() - t_rec

    # 6. The result: the folded float model with dequantized weights from the integer codes.
    result_model = copy.deepcopy(folded)
    weights: dict[str, QuantizedWeight] = {}
    activations: dict[str, ActivationGrid] = {}
    reports: list[LayerReport] = []
    for name in order:
        wrapper = wrappers[name]
        quantizer = wrapper.quantizer
        layer = result_model.get_submodule(name) if name else result_model
        codes = quantizer.codes().cpu()
        scale = quantizer.scale().detach().cpu().float()
        zero = quantizer.zero_point.cpu()
        with torch.no_grad():
            layer.weight.copy_(from_canonical(dequantize(codes, scale, zero), layer))
        weights[name] = QuantizedWeight(
            codes=from_canonical(codes, layer).to(torch.int64),
            scale=scale.reshape(-1).clone(),
            zero_point=zero.reshape(-1).clone(),
            bits=quantizer.bits,
            transposed=is_transposed(layer),
        )
        grid = _learned_grid(wrapper.act_quantizer)
        if grid is not None:
            activations[name] = grid
        reports.append(
            build_layer_report(
                name,
                type(wrapper.layer).__name__,
                tuple(layer.weight.shape),
                quantizer,
                **layer_losses[name],
                seed=config.seed,
                act_step=activations[name].step if name in activations else None,
            )
        )
    attach_activation_quantizers(result_model, activations)
    shared_outputs = {p: r for p, r in shared_outputs.items() if r in activations}
    attach_output_quantizers(result_model, shared_outputs, activations)
    result_model = result_model.to(_model_device(base)).eval()
    timings["total"] = time.perf_counter() - t_start
    return QuantResult(
        model=result_model,
        layers=reports,
        history=history,
        timings=timings,
        config=config,
        architecture=architecture,
        weights=weights,
        folded_batchnorm=folded_pairs,
        blocks=block_order,
        block_losses=block_losses,
        checkpoints=checkpoints,
        activations=activations,
        shared_outputs=shared_outputs,
        device=choice.description,
    )

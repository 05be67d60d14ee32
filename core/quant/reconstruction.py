"""Block reconstruction: cache a block's inputs and targets, then learn its quantizers.

The input of block k is recorded from the working model, in which the earlier blocks are already
quantized and frozen; the target is the output of the same block in the full-precision model.
Both are recorded with forward hooks that stop the forward pass as soon as the block has run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.jobs import CancelToken, Progress
from core.quant.config import QuantConfig
from core.quant.wrapper import QuantLayer, channel_sum_mse

__all__ = [
    "BlockCache",
    "capture_block",
    "BlockOutcome",
    "Checkpoint",
    "reconstruct_block",
    "split_holdout",
    "checkpoint_iterations",
]

# AdaRound schedule and regulariser weight from Nagel et al. (2020) / BRECQ.
ADAROUND_REG_WEIGHT = 0.01
ADAROUND_WARMUP = 0.2
ADAROUND_BETA = (20.0, 2.0)


class _StopForward(Exception):
    """Raised by a capture hook to end the forward pass once the block has run."""


def _flatten(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flatten(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _flatten(item)]
    return []


@dataclass
class BlockCache:
    """Recorded calls of one block: positional/keyword inputs and (optionally) outputs.

    Tensor inputs, also inside lists and tuples (nnU-Net's decoder takes the list of skips),
    are concatenated along the batch axis; other inputs are kept from the first call.
    Everything lives on :attr:`storage` and is moved batch by batch to the device.
    """

    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    outputs: list[torch.Tensor] = field(default_factory=list)
    storage: torch.device = torch.device("cpu")

    @property
    def size(self) -> int:
        tensors = _tensors_in([*self.args, *self.kwargs.values(), *self.outputs])
        return int(tensors[0].shape[0]) if tensors else 0

    def inputs(self, index: torch.Tensor, device: torch.device) -> tuple[list[Any], dict[str, Any]]:
        def take(value: torch.Tensor) -> torch.Tensor:
            return value[index.to(value.device)].to(device, non_blocking=True)

        return _map_tensors(take, self.args), _map_tensors(take, self.kwargs)

    def targets(self, index: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        return [t[index.to(t.device)].to(device, non_blocking=True) for t in self.outputs]


def _map_tensors(function: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """``value`` with ``function`` applied to every tensor in it, through lists, tuples, dicts."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, list | tuple):
        return type(value)(_map_tensors(function, v) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(function, v) for k, v in value.items()}
    return value


def _tensors_in(value: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_tensors(found.append, value)
    return found


def _nbytes(values: list[Any]) -> int:
    return sum(v.numel() * v.element_size() for v in _tensors_in(values))


def _merge_calls(values: list[Any]) -> Any:
    """One input of several recorded calls: tensors concatenated along the batch axis."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values, dim=0)
    if isinstance(first, list | tuple) and _tensors_in(first):
        return type(first)(_merge_calls([v[i] for v in values]) for i in range(len(first)))
    return first


@torch.no_grad()
def capture_block(
    model: nn.Module,
    block: nn.Module,
    calib: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    with_outputs: bool,
    cache_budget: int | None,
    cancel: CancelToken | None = None,
) -> BlockCache | None:
    """Run ``model`` over ``calib`` and record the inputs (and outputs) of ``block``.

    Parameters
    ----------
    cache_budget : int or None
        Bytes the cache may take on ``device``; when the first batch shows the whole cache would
        exceed it, everything is kept on the CPU instead. None keeps it on ``device``.

    Returns
    -------
    BlockCache or None
        None when the block was never called.
    """
    calls: list[tuple[tuple, dict, list[torch.Tensor]]] = []

    def record(args: tuple, kwargs: dict, output: Any) -> None:
        outs = _flatten(output) if with_outputs else []
        calls.append((args, kwargs, outs))
        raise _StopForward

    if with_outputs:
        handle = block.register_forward_hook(
            lambda _m, args, kwargs, output: record(args, kwargs, output), with_kwargs=True
        )
    else:
        handle = block.register_forward_pre_hook(
            lambda _m, args, kwargs: record(args, kwargs, None), with_kwargs=True
        )
    storage = device
    pieces: list[tuple[list[Any], dict[str, Any], list[torch.Tensor]]] = []
    n_batches = math.ceil(calib.shape[0] / batch_size)
    try:
        for start in range(0, calib.shape[0], batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            calls.clear()
            try:
                model(calib[start : start + batch_size].to(device))
            except _StopForward:
                pass
            if not calls:
                return None
            args, kwargs, outs = calls[0]
            if not pieces and cache_budget is not None and device.type != "cpu":
                per_batch = _nbytes([*args, *kwargs.values(), *outs])
                if per_batch * n_batches > cache_budget:
                    storage = torch.device("cpu")

            def keep(value: torch.Tensor, storage: torch.device = storage) -> torch.Tensor:
                return value.detach().to(storage)

            pieces.append(
                (
                    _map_tensors(keep, list(args)),
                    _map_tensors(keep, kwargs),
                    _map_tensors(keep, outs),
                )
            )
    finally:
        handle.remove()

    first_args, first_kwargs, first_outs = pieces[0]
    return BlockCache(
        args=[_merge_calls([p[0][i] for p in pieces]) for i in range(len(first_args))],
        kwargs={k: _merge_calls([p[1][k] for p in pieces]) for k in first_kwargs},
        outputs=[torch.cat([p[2][i] for p in pieces], dim=0) for i in range(len(first_outs))],
        storage=storage,
    )


@dataclass(frozen=True)
class Checkpoint:
    """One scored iterate of a block: its held-out block loss and each layer's error."""

    iteration: int
    loss: float
    layer_losses: dict[str, float]


@dataclass
class BlockOutcome:
    """What reconstructing one block produced.

    All losses are measured with hard rounding on the block's held-out calibration samples,
    which the optimizer never sees.

    Attributes
    ----------
    history : list of float
        Training loss (mini-batch, soft rounding for AdaRound) per iteration.
    checkpoints : list of Checkpoint
        Every scored iterate, starting with round-to-nearest (iteration 0).
    loss_before, loss_after : float
        Held-out block loss at round-to-nearest and of the kept result.
    layer_loss_before, layer_loss_after : dict of str to float
        Each layer's held-out output error against the float model's same layer (fed the
        float inputs) at round-to-nearest and in the kept result.
    kept_iteration : int
        Iteration of the kept iterate; 0 is the round-to-nearest start.
    kept_nearest : bool
        True when the block's result is its round-to-nearest start.
    kept_reason : str
        Why that result was kept, in words.
    """

    history: list[float]
    checkpoints: list[Checkpoint]
    loss_before: float
    loss_after: float
    layer_loss_before: dict[str, float]
    layer_loss_after: dict[str, float]
    kept_iteration: int
    kept_nearest: bool
    kept_reason: str
    seconds: float = 0.0


def _block_loss(block: nn.Module, args: list, kwargs: dict, targets: list[torch.Tensor]):
    outs = _flatten(block(*args, **kwargs))
    return sum(channel_sum_mse(o, t) for o, t in zip(outs, targets, strict=True))


@torch.no_grad()
def _float_layer_outputs(
    block: nn.Module,
    layers: dict[str, QuantLayer],
    fp_cache: BlockCache,
    samples: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
) -> list[dict[str, list[torch.Tensor]]]:
    """Per batch of ``samples``: each layer's outputs in the float block on the float inputs.

    The block's layers run in ``'fp'`` mode, which is the float model's block (both are the
    same BatchNorm-folded copy), so these are the targets of each layer's error.
    """
    modes = {name: layer.mode for name, layer in layers.items()}
    batches = []
    try:
        for layer in layers.values():
            layer.set_mode("fp")
        for start in range(0, len(samples), batch_size):
            args, kwargs = fp_cache.inputs(samples[start : start + batch_size], device)
            for layer in layers.values():
                layer.record(True)
            block(*args, **kwargs)
            batches.append({name: layer.record(False) for name, layer in layers.items()})
    finally:
        for name, layer in layers.items():
            layer.record(False)
            layer.mode = modes[name]
    return batches


@torch.no_grad()
def _evaluate(
    block: nn.Module,
    layers: dict[str, QuantLayer],
    q_cache: BlockCache,
    targets: BlockCache,
    samples: torch.Tensor,
    references: list[dict[str, list[torch.Tensor]]],
    *,
    batch_size: int,
    device: torch.device,
    cancel: CancelToken | None,
) -> tuple[float, dict[str, float]]:
    """Block loss and each layer's error against its float outputs (``references``), hard
    rounding, on ``samples``."""
    for layer in layers.values():
        layer.set_mode("hard")
        layer.reset_error()
    total, count = 0.0, 0
    try:
        for batch, start in enumerate(range(0, len(samples), batch_size)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            index = samples[start : start + batch_size]
            for name, layer in layers.items():
                layer.compare(references[batch][name])
            args, kwargs = q_cache.inputs(index, device)
            loss = _block_loss(block, args, kwargs, targets.targets(index, device))
            total += float(loss) * len(index)
            count += len(index)
    finally:
        for layer in layers.values():
            layer.compare(None)
    per_layer = {name: layer.reset_error() for name, layer in layers.items()}
    return total / max(count, 1), per_layer


def split_holdout(n: int, fraction: float, generator: torch.Generator):
    """Random ``(train, held_out)`` sample indices; both are everything when ``n < 2``.

    The held-out part has ``round(n * fraction)`` samples, at least one and at most ``n - 1``.
    """
    if n < 2:
        everything = torch.arange(n)
        return everything, everything
    order = torch.randperm(n, generator=generator)
    n_held = min(n - 1, max(1, round(n * fraction)))
    return order[n_held:].sort().values, order[:n_held].sort().values


def checkpoint_iterations(iters: int, count: int) -> set[int]:
    """``count`` evenly spaced iterations in ``1 .. iters``, always including ``iters``."""
    count = min(count, iters)
    return {round((k + 1) * iters / count) for k in range(count)}


@dataclass
class _Candidate:
    """A scored iterate: held-out losses and (once it is the best) the quantizer states."""

    iteration: int
    loss: float
    layer_losses: dict[str, float]
    state: dict[str, dict[str, torch.Tensor]] | None = None

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.iteration, self.loss, dict(self.layer_losses))


def _snapshot(layers: dict[str, QuantLayer]) -> dict[str, dict[str, torch.Tensor]]:
    return {n: layer.quantizer_state() for n, layer in layers.items()}


def _restore(layers: dict[str, QuantLayer], state: dict[str, dict[str, torch.Tensor]]) -> None:
    for n, layer in layers.items():
        layer.load_quantizer_state(state[n])


def _set_hard(layers: dict[str, QuantLayer], hard: bool) -> None:
    """Switch AdaRound between soft (learning) and hard (scoring) rounding."""
    for layer in layers.values():
        if hasattr(layer.quantizer, "hard"):
            layer.quantizer.hard = hard


def _mix_qdrop(q_args: list, fp_args: list, prob: float, generator: torch.Generator) -> list:
    mixed = []
    for q, fp in zip(q_args, fp_args, strict=True):
        if isinstance(q, torch.Tensor) and q.is_floating_point():
            draw = torch.rand(q.shape, generator=generator).to(q.device)
            mixed.append(torch.where(draw < prob, fp, q))
        else:
            mixed.append(q)
    return mixed


def _adaround_beta(iteration: int, iters: int) -> float | None:
    """Annealed beta, or None during the warm-up (no regulariser yet)."""
    warm = int(ADAROUND_WARMUP * iters)
    if iteration < warm:
        return None
    start, end = ADAROUND_BETA
    progress = (iteration - warm) / max(iters - warm, 1)
    return end + (start - end) * max(0.0, 1.0 - progress)


def reconstruct_block(
    name: str,
    block: nn.Module,
    layers: dict[str, QuantLayer],
    q_cache: BlockCache,
    fp_cache: BlockCache,
    config: QuantConfig,
    device: torch.device,
    *,
    block_index: int,
    report: Callable[[Progress], None],
    step_offset: int,
    total_steps: int,
    cancel: CancelToken | None = None,
) -> BlockOutcome:
    """Learn the quantizers of ``layers`` so that ``block`` reproduces its float outputs.

    ``fp_cache`` holds the float block's inputs and outputs (the targets); the inputs give each
    layer's float outputs on the held-out samples and, for QDrop, the mixed inputs (without
    QDrop they are dropped once the references are taken).
    A share of the cached samples (``config.holdout_fraction``) is held out: the optimizer
    trains on the rest, and at ``config.checkpoints`` evenly spaced iterations the iterate is
    scored with hard rounding on the held-out samples. The kept result is the candidate with
    the lowest held-out block loss; round-to-nearest itself is a candidate, so the kept result
    is never worse than the start. Each layer's error against the float model is measured too
    (a diagnostic: inside a block a layer may move away from its float output so that the
    block's output gets closer; constraining it made W2 results much worse, see
    docs/FLEXROUND_IMPL.md).
    """
    generator = torch.Generator().manual_seed(config.seed * 100003 + block_index)
    train, held = split_holdout(q_cache.size, config.holdout_fraction, generator)
    eval_kwargs = {"batch_size": config.batch_size, "device": device, "cancel": cancel}

    references = _float_layer_outputs(
        block, layers, fp_cache, held, batch_size=config.batch_size, device=device
    )
    if config.qdrop_prob == 0:  # the float inputs were only needed for the references
        fp_cache.args, fp_cache.kwargs = [], {}

    def score(iteration: int) -> _Candidate:
        _set_hard(layers, True)
        loss, per_layer = _evaluate(
            block, layers, q_cache, fp_cache, held, references, **eval_kwargs
        )
        return _Candidate(iteration, loss, per_layer)

    start = score(0)
    start.state = _snapshot(layers)
    history: list[float] = []
    iters = config.iters if config.learned else 0
    if iters == 0 or not any(layer.learnable_parameters() for layer in layers.values()):
        return _outcome(history, [start.checkpoint()], start, start, "nothing learned")

    lr = config.effective_lr
    groups = []
    for layer in layers.values():
        weight_params = list(layer.quantizer.parameters())
        if weight_params:
            groups.append({"params": weight_params, "lr": lr * layer.quantizer.lr_scale()})
        if layer.act_quantizer is not None:
            groups.append({"params": list(layer.act_quantizer.parameters()), "lr": lr})
    params = [p for group in groups for p in group["params"]]

    def learn_mode() -> None:
        _set_hard(layers, False)
        for layer in layers.values():
            layer.set_mode("learn")

    learn_mode()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(groups, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iters)
    use_amp = config.mixed_precision and device.type == "cuda"
    use_qdrop = config.qdrop_prob > 0 and bool(fp_cache.args)
    scored_at = checkpoint_iterations(iters, config.checkpoints)
    checkpoints = [start.checkpoint()]
    best = start  # the candidate with the lowest held-out block loss so far
    for iteration in range(iters):
        if cancel is not None:
            cancel.raise_if_cancelled()
        pick = torch.randint(
            0, len(train), (min(config.batch_size, len(train)),), generator=generator
        )
        index = train[pick]
        args, kwargs = q_cache.inputs(index, device)
        if use_qdrop:
            fp_args, _ = fp_cache.inputs(index, device)
            args = _mix_qdrop(args, fp_args, config.qdrop_prob, generator)
        targets = fp_cache.targets(index, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            rec = _block_loss(block, args, kwargs, targets)
        loss = rec
        if config.method == "adaround":
            beta = _adaround_beta(iteration, iters)
            if beta is not None:
                reg = sum(layer.quantizer.regularizer(beta) for layer in layers.values())
                loss = rec + ADAROUND_REG_WEIGHT * reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = float(rec.detach())
        history.append(value)
        if iteration + 1 in scored_at:
            candidate = score(iteration + 1)
            checkpoints.append(candidate.checkpoint())
            if candidate.loss < best.loss:
                candidate.state = _snapshot(layers)  # copies only for a new best
                best = candidate
            learn_mode()
        report(
            Progress(
                step=step_offset + iteration + 1,
                total=total_steps,
                message=f"block {name or '(model)'}: iteration {iteration + 1}/{iters}",
                values={"loss": value},
                stage="reconstruction",
            )
        )
    for p in params:
        p.requires_grad_(False)
    _restore(layers, best.state)
    _set_hard(layers, True)
    return _outcome(history, checkpoints, start, best, "")


def _outcome(
    history: list[float],
    checkpoints: list[Checkpoint],
    start: _Candidate,
    kept: _Candidate,
    why_nearest: str,
) -> BlockOutcome:
    """The outcome of keeping ``kept`` (``start`` is round-to-nearest)."""
    if why_nearest:
        reason = why_nearest
    elif kept is start:
        reason = (
            f"no checkpoint lowered the held-out block loss below round-to-nearest's "
            f"({start.loss:.4g}; lowest {min(c.loss for c in checkpoints[1:]):.4g})"
        )
    else:
        reason = (
            f"iteration {kept.iteration}: held-out block loss {kept.loss:.4g} "
            f"(round-to-nearest {start.loss:.4g})"
        )
    return BlockOutcome(
        history=history,
        checkpoints=checkpoints,
        loss_before=start.loss,
        loss_after=kept.loss,
        layer_loss_before=dict(start.layer_losses),
        layer_loss_after=dict(kept.layer_losses),
        kept_iteration=kept.iteration,
        kept_nearest=kept is start,
        kept_reason=reason,
    )

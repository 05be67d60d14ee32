"""The settings of one post-training quantization run, validated when they are created."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_ITERS",
    "DEFAULT_LR",
    "METHODS",
    "GRANULARITIES",
    "RECONSTRUCTIONS",
    "QuantConfig",
    "default_lr",
]

METHODS = ("flexround", "adaround", "rtn", "rtn-minmax")
GRANULARITIES = ("tensor", "channel")
RECONSTRUCTIONS = ("block", "layer")
# The one default of every front end (API, CLI, GUI panel). FlexRound's is in grid levels per
# step: each layer's log factors get lr / reach, reach being the largest |code - z| of
# round-to-nearest (about 2 at W2, 130 at W8), so the largest weights' codes move at the same
# pace at every bit width. AdaRound's is on V, which does not scale with the bits.
# Chosen on a calibration split by benchmarks/bench_flexround.py (docs/FLEXROUND_IMPL.md).
DEFAULT_LR = {"flexround": 5e-2, "adaround": 3e-1}


#: Optimizer steps per block (or layer) of every front end (API, CLI, GUI panel). At W2 on the
#: demo, 500 steps put FlexRound 1.0 Dice point below FP32 and ahead of AdaRound in every seed;
#: 150 left both 3-5 points lower and their order to the seed (docs/FLEXROUND_IMPL.md).
DEFAULT_ITERS = 500


def default_lr(method: str) -> float | None:
    """The learning rate a method uses when none is given (None for round-to-nearest)."""
    return DEFAULT_LR.get(method)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model's weights.

    Parameters
    ----------
    method : {'flexround', 'adaround', 'rtn', 'rtn-minmax'}
        ``'flexround'`` learns the element-wise divisor of Lee et al. (2023); ``'adaround'`` learns
        up/down rounding (Nagel et al. 2020); ``'rtn'`` rounds to nearest on a grid found by the
        Lp(2.4) range search; ``'rtn-minmax'`` rounds to nearest on the min/max grid.
    bits : int
        Weight bits of every quantized layer except the first and the last (2 to 8).
    granularity : {'tensor', 'channel'}
        One grid size per weight tensor (the paper's setting) or one per output channel.
    symmetric : bool
        Symmetric grids put the zero point at ``2**(bits-1)``; asymmetric grids learn nothing
        about it but take it from the range search.
    first_last_bits : int or None
        Bits of the first and last quantized layers in execution order; None uses ``bits``.
    reconstruction : {'block', 'layer'}
        Reconstruct the output of whole blocks (BRECQ style) or of single layers.
    iters : int
        Optimizer steps per block (ignored by the round-to-nearest methods).
    lr : float or None
        Adam learning rate; None picks the method's default (:data:`DEFAULT_LR`). FlexRound's is
        in grid levels per step: each layer's log factors learn at ``lr / reach`` with
        ``reach`` the largest ``|code - z|`` of round-to-nearest, so one value works from 2 to 8
        bits. AdaRound's acts on V directly (V must travel several units to saturate the
        rectified sigmoid within the schedule; at 1e-3, BRECQ's value for 20k iterations, a
        few hundred iterations leave AdaRound at round-to-nearest).
    learn_grid : bool
        FlexRound learns the grid size ``s1`` as well as the element-wise divisor (the paper's
        setting). Off by default: chosen on the calibration split of both benchmark networks
        at W2 (FCN 93.4 against 91.8 % agreement, demo 97.2 against 97.1;
        docs/FLEXROUND_IMPL.md). Other methods ignore it.
    batch_size : int
        Calibration samples per optimizer step and per forward pass while caching activations.
    qdrop_prob : float
        Probability that a block input element comes from the full-precision path (QDrop); 0
        turns the mixing off.
    seed : int
        Seed of the batch sampling and QDrop masks.
    device : str
        ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (see :func:`core.device.select_device`).
    skip : tuple of str
        ``fnmatch`` patterns of layer names (as in ``model.named_modules()``) kept in float.
    blocks : tuple of str or None
        Module names to use as reconstruction blocks, in execution order; None finds them.
    mixed_precision : bool
        Run block forwards under bfloat16 autocast on CUDA (ignored on the CPU).
    act_bits : int or None
        Fake-quantize the input of every quantized layer per tensor with this many bits and an
        LSQ-style learned step, trained jointly with the weights (the paper's W/A settings);
        None (default) quantizes weights only.
    max_cache_fraction : float
        Largest share of free CUDA memory the cached block inputs and targets may take before
        they are kept on the CPU and streamed batch by batch.
    holdout_fraction : float
        Share of the calibration samples (at least one when there are two or more) that is never
        trained on and decides which iterate is kept: round-to-nearest or the checkpoint with
        the lowest held-out block loss that raises no layer's held-out error.
    checkpoints : int
        How many times per block the iterate is scored on the held-out samples (evenly spaced,
        the last at the final iteration); round-to-nearest is always scored first.
    """

    method: str = "flexround"
    bits: int = 4
    granularity: str = "tensor"
    symmetric: bool = False
    first_last_bits: int | None = 8
    reconstruction: str = "block"
    iters: int = DEFAULT_ITERS
    lr: float | None = None
    learn_grid: bool = False
    batch_size: int = 32
    qdrop_prob: float = 0.0
    seed: int = 0
    device: str = "auto"
    skip: tuple[str, ...] = field(default_factory=tuple)
    blocks: tuple[str, ...] | None = None
    mixed_precision: bool = False
    act_bits: int | None = None
    max_cache_fraction: float = 0.5
    holdout_fraction: float = 0.25
    checkpoints: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown quantization method {self.method!r}: use one of {METHODS}")
        for label, value in (
            ("bits", self.bits),
            ("first_last_bits", self.first_last_bits),
            ("act_bits", self.act_bits),
        ):
            if value is None and label != "bits":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
                raise ValueError(f"{label} must be an integer from 2 to 8, got {value!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"unknown granularity {self.granularity!r}: use one of {GRANULARITIES}"
            )
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"unknown reconstruction {self.reconstruction!r}: use one of {RECONSTRUCTIONS}"
            )
        if not isinstance(self.iters, int) or self.iters < 0:
            raise ValueError(f"iters must be a non-negative integer, got {self.iters!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not isinstance(self.learn_grid, bool):
            raise ValueError(f"learn_grid must be True or False, got {self.learn_grid!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not 0.0 <= self.qdrop_prob <= 1.0:
            raise ValueError(f"qdrop_prob must lie in [0, 1], got {self.qdrop_prob!r}")
        if not 0.0 < self.max_cache_fraction <= 1.0:
            raise ValueError(
                f"max_cache_fraction must lie in (0, 1], got {self.max_cache_fraction!r}"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must lie in (0, 1), got {self.holdout_fraction!r}")
        if (
            isinstance(self.checkpoints, bool)
            or not isinstance(self.checkpoints, int)
            or (self.checkpoints < 1)
        ):
            raise ValueError(f"checkpoints must be a positive integer, got {self.checkpoints!r}")
        if isinstance(self.skip, str):
            raise ValueError("skip must be a tuple of name patterns, not a single string")
        object.__setattr__(self, "skip", tuple(self.skip))
        if self.blocks is not None:
            if isinstance(self.blocks, str):
                raise ValueError("blocks must be a tuple of module names, not a single string")
            object.__setattr__(self, "blocks", tuple(self.blocks))

    @property
    def learned(self) -> bool:
        """True for the methods that run an optimizer (FlexRound, AdaRound)."""
        return self.method in ("flexround", "adaround")

    @property
    def effective_lr(self) -> float:
        """The learning rate used, after the per-method default."""
        if self.lr is not None:
            return self.lr
        return default_lr(self.method) or DEFAULT_LR["flexround"]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dictionary."""
        out = asdict(self)
        out["skip"] = list(self.skip)
        out["blocks"] = list(self.blocks) if self.blocks is not None else None
        return out

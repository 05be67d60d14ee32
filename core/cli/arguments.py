"""Argument types and option groups shared by the headless commands.

Types raise ``argparse.ArgumentTypeError``, so a value that parses but makes no sense
(``--pruning 1.5``) is reported by argparse itself with exit code 2, before any file is read.
The choice tuples are repeated here rather than imported from ``core.pipeline`` and
``core.quant`` so that ``main.py --help`` does not import torch; tests check they agree.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = [
    "BACKEND_CHOICES",
    "DECISION_CHOICES",
    "DEVICE_HELP",
    "DEFAULT_ITERS",
    "GRANULARITY_CHOICES",
    "METHOD_CHOICES",
    "add_backend_option",
    "add_decision_options",
    "add_device_option",
    "add_model_options",
    "add_trust_option",
    "model_options",
    "bits",
    "decision_list",
    "device_name",
    "positive_float",
    "positive_int",
    "non_negative_int",
    "probability_below_one",
    "unit_interval",
]

#: Same values as ``core.pipeline.DECISIONS``.
DECISION_CHOICES: tuple[str, ...] = ("argmax", "threshold", "rma-dice", "rma-iou", "guarded")
#: Same values as ``core.quant.config.METHODS``.
METHOD_CHOICES: tuple[str, ...] = ("flexround", "adaround", "rtn", "rtn-minmax")
#: Same values as ``core.deploy.onnx_runtime.BACKENDS``.
BACKEND_CHOICES: tuple[str, ...] = ("torch", "onnxruntime")
#: Same values as ``core.quant.config.GRANULARITIES``.
GRANULARITY_CHOICES: tuple[str, ...] = ("tensor", "channel")
#: Same value as ``core.quant.config.DEFAULT_ITERS`` (kept here so `--help` needs no torch).
DEFAULT_ITERS = 500

DEVICE_HELP = "where torch computes: auto (CUDA when present), cpu, cuda or cuda:N (default auto)"


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def unit_interval(text: str) -> float:
    """A float in [0, 1] (a probability threshold)."""
    value = _number(float, text, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def probability_below_one(text: str) -> float:
    """A float in [0, 1): RankSEG-RMA's pruning probability (1 would prune every class)."""
    value = _number(float, text, "a number")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1)")
    return value


def positive_float(text: str) -> float:
    """A float above 0 (a learning rate)."""
    value = _number(float, text, "a number")
    if not value > 0.0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = int(_number(int, text, "an integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = int(_number(int, text, "an integer"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def bits(text: str) -> int:
    """A weight bit width from 2 to 8 (what ``core.quant.QuantConfig`` accepts)."""
    value = int(_number(int, text, "an integer"))
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"{text} bits is outside 2-8")
    return value


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (availability is checked when the job starts)."""
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return value
    raise argparse.ArgumentTypeError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N")


def decision_list(text: str) -> list[str]:
    """Comma-separated decision rules, for example ``argmax,rma-dice`` (no duplicates)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no decision rule given")
    unknown = [name for name in names if name not in DECISION_CHOICES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown decision rule(s) {', '.join(unknown)}: use {', '.join(DECISION_CHOICES)}"
        )
    return list(dict.fromkeys(names))


def add_decision_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--pruning P``, ``--per-slice`` and ``--threshold T``: the decision rules' settings."""
    parser.add_argument(
        "--pruning",
        type=probability_below_one,
        default=0.5,
        metavar="P",
        help="RankSEG-RMA pruning probability in [0, 1): classes whose largest probability is "
        "at or below P stay empty (default 0.5)",
    )
    parser.add_argument(
        "--per-slice",
        action="store_true",
        help="optimise RankSEG-RMA per slice (axis k), not per volume",
    )
    parser.add_argument(
        "--threshold",
        type=unit_interval,
        default=0.5,
        metavar="T",
        help="cut-off of the 'threshold' decision (default 0.5)",
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--device auto|cpu|cuda|cuda:N``."""
    parser.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--backend torch|onnxruntime`` (read by :func:`model_options`)."""
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        help="what runs the network: torch, or onnxruntime (a torch model is exported to ONNX "
        "in memory first; an .onnx model runs only there; nnU-Net and MONAI models run each "
        "network in ONNX Runtime inside their own pipeline); default: the model's own",
    )


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust`` (allow pickled model files, which run code when loaded)."""
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow loading a pickled PyTorch module (.pt); unpickling runs code from the file, "
        "so pass this only for files from a source you trust",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust`` and the framework model options (nnU-Net folds, checkpoint, mirroring)."""
    add_trust_option(parser)
    group = parser.add_argument_group("nnU-Net model folders")
    group.add_argument(
        "--folds",
        nargs="+",
        metavar="K",
        help="folds to ensemble (e.g. --folds 0 1, or all); default: every fold present, as "
        "nnUNetv2_predict does",
    )
    group.add_argument(
        "--checkpoint",
        choices=("checkpoint_final.pth", "checkpoint_best.pth"),
        help="checkpoint file read in each fold (default: checkpoint_final.pth when present)",
    )
    group.add_argument(
        "--no-mirroring",
        dest="mirroring",
        action="store_false",
        help="switch off nnU-Net's test-time mirroring (on by default, as in nnU-Net)",
    )


def model_options(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of :func:`core.cli.model_loading.load_cli_model` given on the
    command line (``load_model``'s, and ``--backend``)."""
    return {
        "trust": bool(getattr(args, "trust", False)),
        "folds": getattr(args, "folds", None),
        "checkpoint": getattr(args, "checkpoint", None),
        "mirroring": bool(getattr(args, "mirroring", True)),
        "backend": getattr(args, "backend", None),
    }

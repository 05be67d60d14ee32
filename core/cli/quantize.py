"""``main.py quantize``: post-training weight quantization of a model, saved as a model folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.cli.arguments import (
    DEFAULT_ITERS,
    GRANULARITY_CHOICES,
    METHOD_CHOICES,
    add_device_option,
    add_model_options,
    bits,
    model_options,
    non_negative_int,
    positive_float,
    positive_int,
)
from core.cli.errors import EXIT_OK, UsageError, handle_errors
from core.cli.outputs import check_outputs
from core.cli.progress import ProgressPrinter
from core.cli.tables import Column, format_table
from core.report_files import write_json_atomic

__all__ = [
    "HELP",
    "LAYER_COLUMNS",
    "NAME",
    "add_arguments",
    "add_reconstruction_options",
    "quant_config",
    "run",
]

NAME = "quantize"
HELP = "quantize a model's weights (FlexRound, AdaRound, round-to-nearest) and save it"
DESCRIPTION = """\
Quantize the weights of MODEL post-training: calibration inputs are sampled from the --calib
images with the model's own preprocessing, each block is reconstructed (FlexRound or AdaRound)
or rounded to nearest, and the result is saved as a model folder that `segment --model QMODEL`
and `evaluate` accept. The per-layer diagnostics (bits, grid-step ratio s1 learned/initial,
codes changed from round-to-nearest, loss before/after, relative weight error) are printed and,
with --report, written as JSON with the timings."""
EPILOG = """\
examples:
  main.py quantize --model resources/demo/model --calib resources/demo/image.nii.gz --out q4
  main.py quantize --model m --calib a.nii.gz b.nii.gz --out q --method rtn --bits 8

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""

#: Columns of the per-layer table printed on stdout.
LAYER_COLUMNS: tuple[Column, ...] = (
    ("name", "layer", ""),
    ("bits", "bits", "d"),
    ("s1_ratio", "s1 ratio", ".4f"),
    ("percent_changed", "% changed", ".2f"),
    ("percent_moved_2plus", "% moved 2+", ".2f"),
    ("loss_before", "held-out loss before", ".4g"),
    ("loss_after", "held-out loss after", ".4g"),
    ("weight_rel_error", "rel. weight err", ".4f"),
    ("kept_nearest", "nearest kept", ""),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``quantize`` options to its sub-parser."""
    parser.add_argument(
        "--model", required=True, metavar="MODEL", help="float model folder or file"
    )
    parser.add_argument(
        "--calib",
        required=True,
        nargs="+",
        metavar="IMAGE",
        help="calibration images (files or DICOM folders); no labels needed",
    )
    parser.add_argument(
        "--out", required=True, metavar="QMODEL", help="folder to write the quantized model to"
    )
    parser.add_argument(
        "--method", choices=METHOD_CHOICES, default="flexround", help="default flexround"
    )
    parser.add_argument(
        "--bits", type=bits, default=4, help="weight bits of the inner layers, 2-8 (default 4)"
    )
    add_reconstruction_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and batching")
    parser.add_argument("--report", metavar="REPORT.json", help="write a JSON report here")
    add_device_option(parser)
    add_model_options(parser)


def add_reconstruction_options(parser: argparse.ArgumentParser) -> None:
    """Add the quantizer settings besides method, bits and seed (shared with ``sweep``)."""
    parser.add_argument(
        "--first-last-bits",
        type=bits,
        default=8,
        metavar="BITS",
        help="weight bits of the first and last layers (default 8)",
    )
    parser.add_argument(
        "--act-bits",
        type=bits,
        default=None,
        metavar="BITS",
        help="also fake-quantize each quantized layer's input with a learned step (LSQ), "
        "e.g. 8 for W4A8 (default: weights only)",
    )
    parser.add_argument(
        "--granularity",
        choices=GRANULARITY_CHOICES,
        default="tensor",
        help="one grid step per tensor or per output channel (default tensor)",
    )
    parser.add_argument(
        "--symmetric",
        action="store_true",
        help="grids centred on zero (zero point 2^(bits-1)); `export` stores them as signed "
        "integers, which ONNX Runtime's fast W8A8 kernels need",
    )
    parser.add_argument(
        "--iters",
        type=non_negative_int,
        default=DEFAULT_ITERS,
        metavar="N",
        help=f"optimizer steps per block for flexround/adaround (default {DEFAULT_ITERS})",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate; flexround's is in grid levels per step, scaled per layer so one "
        "value suits 2 to 8 bits (default: the method's own, core.quant.config.DEFAULT_LR, "
        "which the GUI uses too)",
    )
    parser.add_argument(
        "--learn-grid",
        action="store_true",
        help="flexround: learn the grid size s1 as well as the element-wise divisor (the "
        "paper's setting; off by default, where it lowered accuracy on one benchmark network)",
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=64,
        metavar="N",
        help="calibration samples (slices or patches) drawn from the images (default 64)",
    )
    parser.add_argument(
        "--crop",
        type=non_negative_int,
        default=64,
        metavar="PX",
        help="random square (2-D) or cubic (3-D) patches of this size; 0 takes whole slices "
        "(default 64: several times faster on a CPU at about the same accuracy)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="calibration samples per optimizer step (default 8)",
    )


def quant_config(args: argparse.Namespace, method: str, width: int, seed: int) -> Any:
    """The :class:`core.quant.QuantConfig` of the options, for one method, bit width and seed.

    Raises
    ------
    UsageError
        A combination the quantizer refuses (exit 2).
    """
    from core.quant import QuantConfig

    try:
        return QuantConfig(
            method=method,
            bits=width,
            first_last_bits=args.first_last_bits,
            act_bits=args.act_bits,
            granularity=args.granularity,
            symmetric=bool(getattr(args, "symmetric", False)),
            iters=args.iters,
            lr=args.lr,
            learn_grid=bool(getattr(args, "learn_grid", False)),
            batch_size=args.batch_size,
            seed=seed,
            device=args.device,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_paths(args: argparse.Namespace) -> None:
    check_outputs(
        {"--out": args.out, "--report": args.report},
        [args.model, *args.calib],
        folder_outputs=("--out",),
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if args.report is not None and not Path(args.report).parent.is_dir():
        raise UsageError(
            f"--report {args.report}: folder {Path(args.report).parent} does not exist"
        )
    from core.atomic_files import output_folder
    from core.models.loading import MODEL_FILES

    try:
        output_folder(out, replaceable=MODEL_FILES)  # the user's own files there would be lost
    except ValueError as error:
        raise UsageError(f"--out {error}") from None
    spec_file = out / "model.json"
    if spec_file.exists():
        # Replacing an earlier quantized result is fine; replacing a float model is not.
        try:
            quantized = json.loads(spec_file.read_text(encoding="utf-8")).get("quantization")
        except (OSError, ValueError, AttributeError):
            quantized = None
        if not quantized:
            raise UsageError(
                f"--out {out}: holds a float model, not a quantized one; refusing to replace it"
            )


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Run ``quantize``; returns the exit code."""
    _check_paths(args)
    start = time.perf_counter()
    from core import __version__
    from core.cli.model_loading import load_cli_model
    from core.io import read_image
    from core.models.calibration import calibration_shortfall
    from core.quant.diagnostics import layer_summary
    from core.quant.variant import quantize_to_folder

    quiet = bool(getattr(args, "quiet", False))
    config = quant_config(args, args.method, args.bits, args.seed)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model = load_cli_model(args.model, **model_options(args))
    timings["load_model"] = time.perf_counter() - clock
    images = [read_image(path) for path in args.calib]
    with ProgressPrinter.for_command(quiet) as printer:
        variant = quantize_to_folder(
            model, images, config, args.out, samples=args.samples, crop=args.crop or None,
            on_progress=printer,
        )  # fmt: skip
    result, calib_shape = variant.result, variant.calibration_shape
    shortfall = calibration_shortfall(model, int(calib_shape[0]), args.samples, args.crop or None)
    if shortfall:  # one picture with whole slices gives one sample, not --samples
        print(f"main.py {NAME}: note: {shortfall}", file=sys.stderr)
    timings.update(variant.timings)
    timings["total"] = time.perf_counter() - start

    layers = [layer_summary(layer) for layer in result.layers]
    report = {
        "command": NAME,
        "segbench_version": __version__,
        "model": {"name": model.name, "path": str(model.path)},
        "out": str(args.out),
        "calibration": {
            "images": [str(p) for p in args.calib],
            "samples": int(calib_shape[0]),
            "sample_shape": list(calib_shape[1:]),
        },
        "config": config.to_dict(),
        "device": result.device,
        "folded_batchnorm": [list(pair) for pair in result.folded_batchnorm],
        "blocks": [
            {"name": name, "loss_rtn": before, "loss_after": after}
            for name, (before, after) in result.block_losses.items()
        ],
        "layers": layers,
        "timings_s": timings,
    }
    if args.report:
        write_json_atomic(report, args.report)
    if not quiet:
        print(
            f"{model.name} -> {args.method} W{args.bits} ({len(layers)} layers, "
            f"{calib_shape[0]} calibration samples, {result.device}): {timings['total']:.2f} s"
        )
        print(format_table(layers, LAYER_COLUMNS))
        print(f"quantized model written to {args.out}")
        if args.report:
            print(f"report written to {args.report}")
    return EXIT_OK

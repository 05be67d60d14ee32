"""``main.py sweep``: quantize a model over methods x bits x seeds and evaluate every variant."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.cli.arguments import (
    METHOD_CHOICES,
    add_decision_options,
    add_device_option,
    add_model_options,
    bits,
    decision_list,
)
from core.cli.cluster_arguments import add_cluster_options, cluster_options
from core.cli.errors import EXIT_OK, UsageError, handle_errors
from core.cli.evaluate import evaluation_settings
from core.cli.outputs import check_outputs
from core.cli.progress import ProgressPrinter
from core.cli.quantize import add_reconstruction_options, quant_config
from core.cli.tables import format_table
from core.report_files import write_csv_atomic, write_json_atomic

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "sweep"
HELP = "quantize a model over methods x bits x seeds, evaluate every variant, table and plot"
DESCRIPTION = """\
Quantize --model with every combination of --methods, --bits and --seeds (one task each, as Ray
tasks with --executor ray), save each variant under OUT/variants/METHOD-wBITS-sSEED, then score
the float model and every variant on the labelled --images/--labels exactly as `evaluate` does
(OUT/evaluate.json). Writes OUT/sweep.csv and OUT/sweep.json (method, bits, seed, decision, mean
Dice per class, mean foreground Dice, quantization and evaluation seconds) and
OUT/dice_vs_bits.png and .svg (mean foreground Dice against bits, one line per method)."""
EPILOG = """\
examples:
  main.py sweep --model m --calib a.nii.gz --images imgs/ --labels labels/ --out sweep \\
      --methods rtn,flexround --bits 2,3,4,8 --seeds 0,1,2 --executor ray --address auto

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""


def _comma_list(kind, what: str):
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"no {what} given")
        return list(dict.fromkeys(kind(p) for p in parts))

    return parse


def _method(text: str) -> str:
    if text not in METHOD_CHOICES:
        raise argparse.ArgumentTypeError(
            f"unknown method {text!r}: use {', '.join(METHOD_CHOICES)}"
        )
    return text


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sweep`` options to its sub-parser."""
    parser.add_argument("--model", required=True, metavar="MODEL", help="float model")
    parser.add_argument(
        "--calib", required=True, nargs="+", metavar="IMAGE", help="calibration images"
    )
    parser.add_argument(
        "--images", required=True, nargs="+", metavar="DIR_OR_FILE", help="images to score on"
    )
    parser.add_argument(
        "--labels", required=True, nargs="+", metavar="DIR_OR_FILE", help="their label files"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--methods",
        type=_comma_list(_method, "method"),
        default=["rtn", "flexround"],
        metavar="LIST",
        help=f"comma-separated among {', '.join(METHOD_CHOICES)} (default rtn,flexround)",
    )
    parser.add_argument(
        "--bits",
        type=_comma_list(bits, "bit width"),
        default=[2, 4, 8],
        metavar="LIST",
        help="comma-separated weight bits of the inner layers, 2-8 (default 2,4,8)",
    )
    parser.add_argument(
        "--seeds",
        type=_comma_list(_seed, "seed"),
        default=[0],
        metavar="LIST",
        help="comma-separated seeds of calibration sampling and batching (default 0)",
    )
    parser.add_argument(
        "--decisions",
        type=decision_list,
        default=["argmax"],
        metavar="RULES",
        help="decision rules scored for every variant (default argmax); the plot shows the first",
    )
    add_reconstruction_options(parser)
    add_decision_options(parser)
    add_device_option(parser)
    add_model_options(parser)
    add_cluster_options(parser)


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Run ``sweep``; returns the exit code."""
    from core.cli.matching import expand_files, pair_cases

    images = expand_files(args.images, "--images")
    labels = expand_files(args.labels, "--labels")
    out = Path(args.out)
    check_outputs(
        {"--out": out}, [args.model, *args.calib, *images, *labels], folder_outputs=("--out",)
    )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    cases = pair_cases(images, labels).cases
    if not cases:
        raise ValueError("no image matched a label by file name")

    from core.sweep import SweepPoint, run_sweep
    from core.sweep_plot import plot_dice_vs_bits

    base = quant_config(args, args.methods[0], args.bits[0], args.seeds[0])
    points = [
        SweepPoint(method, width, seed)
        for method in args.methods
        for width in args.bits
        for seed in args.seeds
    ]
    settings = evaluation_settings(args)
    quiet = bool(getattr(args, "quiet", False))
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with ProgressPrinter.for_command(quiet) as printer:
        rows, _ = run_sweep(
            args.model, args.calib, cases, points, base, settings, out,
            samples=args.samples, crop=args.crop or None, executor=args.executor,
            cluster=cluster_options(args), on_progress=printer,
        )  # fmt: skip
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv_atomic(rows, columns, out / "sweep.csv")
    write_json_atomic(
        {"command": NAME, "config": base.to_dict(), "points": len(points), "rows": rows},
        out / "sweep.json",
    )
    plots = plot_dice_vs_bits(
        rows, [out / "dice_vs_bits.png", out / "dice_vs_bits.svg"], args.decisions[0]
    )
    if not quiet:
        print(
            f"{len(points)} variant(s) x {len(cases)} case(s), {args.executor}: "
            f"{time.perf_counter() - start:.2f} s"
        )
        formats = {"bits": "d", "quantize_s": ".2f", "evaluate_s": ".2f"}
        print(
            format_table(
                rows, [(c, c, formats.get(c, ".4f" if "dice" in c else "")) for c in columns]
            )
        )
        print(f"table written to {out / 'sweep.csv'}; plot to {', '.join(map(str, plots))}")
    return EXIT_OK

"""``main.py segment``: decide a mask for one image with one model, write it and a report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core.cli.arguments import (
    DECISION_CHOICES,
    add_backend_option,
    add_decision_options,
    add_device_option,
    add_model_options,
    model_options,
    non_negative_int,
)
from core.cli.errors import EXIT_OK, UsageError, handle_errors
from core.cli.image_choice import read_chosen_image
from core.cli.outputs import check_outputs
from core.cli.progress import ProgressPrinter
from core.cli.tables import Column, format_table
from core.report_files import write_json_atomic

__all__ = [
    "CLASS_COLUMNS",
    "HELP",
    "NATURAL_CLASS_COLUMNS",
    "NAME",
    "add_arguments",
    "run",
    "segmentation_report",
]

NAME = "segment"
HELP = "segment one image with a model and write the mask (and a JSON report)"
DESCRIPTION = """\
Segment IMAGE with MODEL: run the network, turn its probabilities into a label mask with the
chosen decision rule, and write the mask with the image's geometry (affine, orientation).
The per-class table (voxels, volume in mL, expected Dice, and Dice/IoU against --gt) is printed
and, with --report, written as JSON together with the timings of each stage."""
EPILOG = """\
examples:
  main.py segment ct.nii.gz --model resources/demo/model --out ct_mask.nii.gz
  main.py segment ct.nii.gz --model qmodel --decision argmax --gt label.nii.gz --report r.json

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""

#: Values of --out-format.
OUT_FORMATS = ("auto", "dicom-seg", "dicom-seg-fractional")

#: Columns of the per-class table printed on stdout.
CLASS_COLUMNS: tuple[Column, ...] = (
    ("label", "label", "d"),
    ("name", "class", ""),
    ("voxels", "voxels", "d"),
    ("volume_ml", "volume mL", ".3f"),
    ("expected_dice", "E[Dice]", ".4f"),
    ("dice", "Dice", ".4f"),
    ("iou", "IoU", ".4f"),
)

#: The same for a natural image (a photograph): a pixel count, no volume (as the GUI shows).
NATURAL_CLASS_COLUMNS: tuple[Column, ...] = (
    ("label", "label", "d"),
    ("name", "class", ""),
    ("pixels", "pixels", "d"),
    *CLASS_COLUMNS[4:],
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``segment`` options to its sub-parser."""
    parser.add_argument(
        "image", metavar="IMAGE", help="image file (NIfTI, NRRD, MHA, PNG, ...) or DICOM folder"
    )
    parser.add_argument(
        "--model", required=True, metavar="MODEL", help="model folder or file (float or quantized)"
    )
    parser.add_argument(
        "--decision",
        choices=DECISION_CHOICES,
        default="rma-dice",
        help="how probabilities become labels (default rma-dice: RankSEG-RMA for Dice)",
    )
    add_decision_options(parser)
    parser.add_argument(
        "--out",
        metavar="MASK",
        help="write the mask here (.nii, .nii.gz, .nrrd, .mha, .png; .dcm: DICOM SEG)",
    )
    parser.add_argument(
        "--out-format",
        choices=OUT_FORMATS,
        default="auto",
        help="auto: by the --out ending; dicom-seg: a binary DICOM SEG of the DICOM series "
        "IMAGE; dicom-seg-fractional: a DICOM SEG of the class probabilities",
    )
    parser.add_argument(
        "--gt", metavar="LABEL", help="ground-truth label mask: adds Dice and IoU per class"
    )
    parser.add_argument("--report", metavar="REPORT.json", help="write a JSON report here")
    parser.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    parser.add_argument(
        "--volume",
        type=non_negative_int,
        metavar="N",
        help="volume to segment when the image holds several (4-D NIfTI/NRRD/MHA, multi-page "
        "TIFF, multi-echo or dynamic DICOM series; `info IMAGE` shows how many)",
    )
    add_device_option(parser)
    add_backend_option(parser)
    add_model_options(parser)


def _check_paths(args: argparse.Namespace) -> None:
    inputs = [args.image, args.model] + ([args.gt] if args.gt else [])
    check_outputs({"--out": args.out, "--report": args.report}, inputs)
    from core.io.mask import MASK_SUFFIXES
    from core.io.reader import suffix_of

    if args.out_format != "auto" and args.out is None:
        raise UsageError(f"--out-format {args.out_format} needs --out")
    if args.out is not None and args.out_format == "auto":
        out = Path(args.out)
        if suffix_of(out) not in MASK_SUFFIXES:
            raise UsageError(
                f"--out {out}: masks are written as {', '.join(MASK_SUFFIXES)}, "
                f"not {suffix_of(out)!r}"
            )
    for option, path in (("--out", args.out), ("--report", args.report)):
        if path is not None and not Path(path).parent.is_dir():
            raise UsageError(f"{option} {path}: folder {Path(path).parent} does not exist")


def segmentation_report(
    result: Any, *, image: Any, model: Any, args: argparse.Namespace, timings: dict[str, float]
) -> dict[str, Any]:
    """The JSON report of one segmentation.

    Parameters
    ----------
    result : core.pipeline.SegmentationResult
    image : core.io.Image
    model : core.models.LoadedModel
    args : argparse.Namespace
        The parsed ``segment`` arguments (paths and options).
    timings : dict
        Seconds of the command's own stages (reading, writing), merged with the pipeline's.

    Returns
    -------
    dict
        command, image (path, shape, spacing, orientation, warnings), model (name, path,
        quantized), decision and its options, device, mask, ground_truth, classes (one row per
        class), mean_foreground, timings_s.
    """
    from core import __version__
    from core.cli.describe import describe_image

    summary = result.to_dict()
    if image.is_natural:  # pixels, not voxels and millilitres of a 1 mm grid
        summary["classes"] = [
            {"pixels" if key == "voxels" else key: value for key, value in row.items()}
            for row in summary["classes"]
        ]
        for row in summary["classes"]:
            row.pop("volume_ml", None)
    image_info = describe_image(image)
    return {
        "command": NAME,
        "segbench_version": __version__,
        "image": {
            key: image_info[key]
            for key in ("path", "shape", "spacing_mm", "orientation", "modality", "warnings")
        },
        "model": {
            "name": model.name,
            "path": str(model.path) if model.path is not None else None,
            "quantized": model.is_quantized,
            "backend": model.backend,
        },
        "decision": result.decision,
        "options": {
            "pruning_prob": result.pruning_prob,
            "per_slice": result.per_slice,
            "threshold": args.threshold,
        },
        "device": result.device,
        "mask": str(args.out) if args.out else None,
        "ground_truth": str(args.gt) if args.gt else None,
        "classes": summary["classes"],
        "mean_foreground": {
            "dice": summary["mean_foreground_dice"],
            "iou": summary["mean_foreground_iou"],
            "expected_dice": summary["mean_foreground_expected_dice"],
        },
        "timings_s": {**timings, **summary["timings_s"]},
    }


def _write_output(result: Any, image: Any, model: Any, args: argparse.Namespace) -> None:
    """Write --out: a DICOM SEG (by --out-format or a .dcm ending) or a mask file."""
    from core.io import write_mask
    from core.io.dicom_seg import SEG_SUFFIX, write_dicom_seg
    from core.io.reader import suffix_of

    names, colors = model.spec.class_names, model.spec.class_colors
    if args.out_format == "auto" and suffix_of(Path(args.out)) != SEG_SUFFIX:
        write_mask(result.mask, args.out, reference=image)
        return
    fractional = args.out_format == "dicom-seg-fractional"
    write_dicom_seg(
        result.mask,
        args.out,
        reference=image,
        class_names=names,
        colors=colors,
        probabilities=result.probs if fractional else None,
    )


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Run ``segment``; returns the exit code."""
    _check_paths(args)
    start = time.perf_counter()
    # Inputs are read before torch is imported, so a bad path or mask fails within a second.
    from core.io import read_mask
    from core.io.mask import check_mask_format

    quiet = bool(getattr(args, "quiet", False))
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    image = read_chosen_image(args.image, series=args.series, volume=args.volume)
    timings["read_image"] = time.perf_counter() - clock
    if args.out:
        try:
            check_mask_format(args.out, image)  # before the network runs, not after
        except ValueError as error:
            raise UsageError(f"--out {error}") from None
    ground_truth = None
    gt_warnings: list[str] = []
    if args.gt:
        clock = time.perf_counter()
        gt = read_mask(args.gt, reference=image)
        ground_truth, gt_warnings = gt.array, gt.warnings
        timings["read_ground_truth"] = time.perf_counter() - clock

    from core.cli.model_loading import load_cli_model
    from core.pipeline import segment_image

    clock = time.perf_counter()
    model = load_cli_model(args.model, **model_options(args))
    timings["load_model"] = time.perf_counter() - clock

    with ProgressPrinter.for_command(quiet) as printer:
        result = segment_image(
            model,
            image,
            decision=args.decision,
            pruning_prob=args.pruning,
            per_slice=args.per_slice,
            threshold=args.threshold,
            device=args.device,
            ground_truth=ground_truth,
            on_progress=printer,
        )
    if args.out:
        clock = time.perf_counter()
        _write_output(result, image, model, args)
        timings["write_mask"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - start
    gt_warnings = [*gt_warnings, *result.warnings]
    image_warnings = [f"{args.image}: {w}" for w in image.warnings]
    for warning in [*image_warnings, *(f"{args.gt}: {w}" for w in gt_warnings)]:
        print(f"main.py {NAME}: warning: {warning}", file=sys.stderr)
    report = segmentation_report(result, image=image, model=model, args=args, timings=timings)
    report["ground_truth_warnings"] = gt_warnings
    if args.report:
        write_json_atomic(report, args.report)
    if not quiet:
        print(
            f"{model.name}, decision {result.decision}, {result.backend} on {result.device}: "
            f"{timings['total']:.2f} s"
        )
        rows = report["classes"]
        columns = NATURAL_CLASS_COLUMNS if image.is_natural else CLASS_COLUMNS
        columns = columns if args.gt else columns[: len(columns) - 2]
        if result.decision == "guarded":  # which rule each class used
            columns = (*columns, ("rule", "rule", ""))
        print(format_table(rows, columns))
        if args.out:
            print(f"mask written to {args.out}")
        if args.report:
            print(f"report written to {args.report}")
    return EXIT_OK

"""``main.py evaluate``: every (model, decision) pair over labelled images, per case and mean."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.cli.arguments import (
    add_backend_option,
    add_decision_options,
    add_device_option,
    add_model_options,
    decision_list,
    model_options,
)
from core.cli.cluster_arguments import add_cluster_options, cluster_options
from core.cli.errors import EXIT_OK, UsageError, handle_errors
from core.cli.outputs import check_outputs
from core.cli.probability_calibration import (
    add_calibration_options,
    calibration_cases,
    calibration_labels,
    calibration_report,
    check_calibration_options,
    fit_calibrated_copy,
    format_calibration_table,
)
from core.cli.progress import ProgressPrinter
from core.cli.tables import Column, format_table
from core.evaluation.means import mean_rows
from core.report_files import write_csv_atomic

__all__ = [
    "CASE_COLUMNS",
    "HELP",
    "MEAN_COLUMNS",
    "NAME",
    "add_arguments",
    "evaluation_settings",
    "mean_rows",
    "run",
]

NAME = "evaluate"
HELP = "score models and decision rules against label masks (per case and mean Dice/IoU)"
DESCRIPTION = """\
Run every --model with every decision rule in --decisions over the images, each paired with
its label file by case name (case01.nii.gz with case01.nii.gz, case01_label.nii.gz,
case01_seg.nii.gz, ...; images named case01_0000.nii.gz pair with case01). The network runs
once per model and image; the decision rules share its probabilities. The report holds the
per-case Dice/IoU/volume of every class, their means per (model, decision, class), and the
timings, so FP32 vs quantized and argmax vs RankSEG-RMA come out of one run. The report is
rewritten after every case (--resume takes an interrupted run's cases back); --executor ray
scores each case as a Ray task, with the same report as a local run. The report also measures
each model's probability calibration on the test cases (reliability, ECE, tail);
--fit-calibration fits a calibrated, guarded copy on a separate calibration split and evaluates
it beside the model (with the 'guarded' rule added)."""
EPILOG = """\
examples:
  main.py evaluate --model fp32 --model q4 --images imgs/ --labels labels/ --report eval.json
  main.py evaluate --model m --images a.nii.gz b.nii.gz --labels a_seg.nii.gz b_seg.nii.gz \\
      --decisions argmax,rma-dice,rma-iou --report eval.json --csv cases.csv
  main.py evaluate --model m --images /shared/imgs --labels /shared/labels --report eval.json \\
      --executor ray --address head:6379   (interrupted? the same plus --resume eval.json)
  main.py evaluate --model m --images test/ --labels labels/ --fit-calibration calib/ \
      --calibrated-model m-calibrated --calibration-plots plots/ --report eval.json

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""

#: Columns of the per-case CSV (and of the report's per_case records).
CASE_COLUMNS: tuple[str, ...] = (
    "model",
    "backend",
    "decision",
    "case",
    "label",
    "class",
    "dice",
    "iou",
    "expected_dice",
    "voxels",
    "volume_ml",
    "volume_ml_gt",
    "rule",
)

#: Columns of the table of means printed on stdout.
MEAN_COLUMNS: tuple[Column, ...] = (
    ("model", "model", ""),
    ("backend", "backend", ""),
    ("decision", "decision", ""),
    ("label", "label", "d"),
    ("class", "class", ""),
    ("dice", "mean Dice", ".4f"),
    ("iou", "mean IoU", ".4f"),
    ("expected_dice", "mean E[Dice]", ".4f"),
    ("cases", "cases", "d"),
    ("rule", "rule", ""),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to its sub-parser."""
    parser.add_argument(
        "--model",
        required=True,
        action="extend",
        nargs="+",
        metavar="MODEL",
        help="model folder or file; repeat (or list several) to compare models",
    )
    parser.add_argument(
        "--images", required=True, nargs="+", metavar="DIR_OR_FILE", help="image files or folders"
    )
    parser.add_argument(
        "--labels", required=True, nargs="+", metavar="DIR_OR_FILE", help="label files or folders"
    )
    parser.add_argument(
        "--decisions",
        type=decision_list,
        default=["argmax", "rma-dice"],
        metavar="RULES",
        help="comma-separated decision rules among argmax, threshold, rma-dice, rma-iou, guarded "
        "(default argmax,rma-dice)",
    )
    parser.add_argument("--report", required=True, metavar="REPORT.json", help="JSON report")
    parser.add_argument("--csv", metavar="CASES.csv", help="also write the per-case rows as CSV")
    parser.add_argument(
        "--resume",
        metavar="REPORT.json",
        help="take the cases an interrupted run (same models and options) already finished from "
        "its report instead of scoring them again; may be the --report file itself",
    )
    add_decision_options(parser)
    add_device_option(parser)
    add_backend_option(parser)
    add_model_options(parser)
    add_cluster_options(parser)
    add_calibration_options(parser)


def evaluation_settings(args: argparse.Namespace) -> Any:
    """The :class:`core.evaluation.EvaluationSettings` of the options (shared with ``sweep``)."""
    from core.evaluation import EvaluationSettings

    return EvaluationSettings(
        decisions=tuple(args.decisions),
        pruning_prob=args.pruning,
        per_slice=args.per_slice,
        threshold=args.threshold,
        device=args.device,
        model_options=model_options(args),
    )


def _some_names(paths: list[Any], limit: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:limit])
    return names + (", ..." if len(paths) > limit else "")


def _warn(message: str) -> None:
    print(f"main.py {NAME}: warning: {message}", file=sys.stderr)


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; returns the exit code."""
    from core.cli.matching import expand_files, pair_cases

    images = expand_files(args.images, "--images")
    labels = expand_files(args.labels, "--labels")
    check_calibration_options(args)
    check_outputs(
        {"--report": args.report, "--csv": args.csv, "--calibrated-model": args.calibrated_model},
        [*args.model, *images, *labels, *(args.fit_calibration or [])],
        folder_outputs=["--calibrated-model"],
    )
    if args.resume is not None and not Path(args.resume).is_file():
        raise UsageError(f"--resume {args.resume}: no such report")
    pairing = pair_cases(images, labels)
    if not pairing.cases:
        raise ValueError(
            f"no image matched a label by file name (images: {_some_names(images)}; "
            f"labels: {_some_names(labels)})"
        )
    for path in pairing.unmatched_images:
        _warn(f"{path}: no label file matches it")
    split = calibration_cases(args, pairing.cases)  # checked before any model is loaded
    expected = calibration_labels(args, pairing.unmatched_labels)
    for path in pairing.unmatched_labels:
        if path not in expected:  # a calibration case's label may sit among --labels
            _warn(f"{path}: no image file matches it")

    from core.evaluation import evaluate_cases

    quiet = bool(getattr(args, "quiet", False))
    model_paths = list(args.model)
    fitted = None
    if split:
        from core.cli.model_loading import load_cli_model

        with ProgressPrinter.for_command(quiet) as printer:
            base = load_cli_model(args.model[0], **model_options(args))
            fitted = fit_calibrated_copy(base, split, args, printer)
        model_paths.append(fitted["written"])
        if "guarded" not in args.decisions:
            args.decisions = [*args.decisions, "guarded"]
    settings = evaluation_settings(args)

    def said(outcome: Any) -> None:
        for warning in outcome.record["warnings"]:
            _warn(f"{outcome.record['image']}: {warning}")
        for warning in outcome.warnings:
            _warn(f"{warning['case']}: {warning['model']}: {warning['warning']}")

    with ProgressPrinter.for_command(quiet) as printer:
        report = evaluate_cases(
            pairing.cases,
            model_paths,
            settings,
            args.report,
            executor=args.executor,
            cluster=cluster_options(args),
            resume=args.resume,
            extra={
                "unmatched": {
                    "images": [str(p) for p in pairing.unmatched_images],
                    "labels": [str(p) for p in pairing.unmatched_labels],
                },
                **({"calibration_fit": fitted} if fitted is not None else {}),
            },
            on_outcome=said,
            on_progress=printer,
        )
    if args.csv:
        write_csv_atomic(report["per_case"], CASE_COLUMNS, args.csv)
    calibration_rows, plots = calibration_report(report["calibration"], args.calibration_plots)
    if not quiet:
        resumed = report["run"]["resumed"]
        print(
            f"{len(pairing.cases)} case(s)"
            + (f" ({resumed} resumed)" if resumed else "")
            + f", {len(report['models'])} model(s), {len(args.decisions)} decision rule(s): "
            f"{report['timings']['total_s']:.2f} s ({args.executor})"
        )
        print(format_table(report["means"], MEAN_COLUMNS))
        print("probability calibration on the test cases:")
        print(format_calibration_table(calibration_rows))
        if fitted is not None:
            print(f"calibrated copy written to {fitted['written']}")
        for path in plots:
            print(f"reliability diagram written to {path}")
        print(f"report written to {args.report}")
        if args.csv:
            print(f"per-case rows written to {args.csv}")
    return EXIT_OK

"""``main.py evaluate``: every (model, decision) pair over labelled images, per case and mean."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

from core.cli.arguments import (
    add_decision_options,
    add_device_option,
    add_model_options,
    decision_list,
    model_options,
)
from core.cli.errors import EXIT_OK, handle_errors
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
from core.report_files import write_csv_atomic, write_json_atomic

__all__ = [
    "CASE_COLUMNS",
    "HELP",
    "MEAN_COLUMNS",
    "NAME",
    "add_arguments",
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
timings, so FP32 vs quantized and argmax vs RankSEG-RMA come out of one run. The report also
measures each model's probability calibration on the test cases (reliability, ECE, tail);
--fit-calibration fits a calibrated, guarded copy on a separate calibration split and evaluates
it beside the model (with the 'guarded' rule added)."""
EPILOG = """\
examples:
  main.py evaluate --model fp32 --model q4 --images imgs/ --labels labels/ --report eval.json
  main.py evaluate --model m --images a.nii.gz b.nii.gz --labels a_seg.nii.gz b_seg.nii.gz \\
      --decisions argmax,rma-dice,rma-iou --report eval.json --csv cases.csv
  main.py evaluate --model m --images test/ --labels labels/ --fit-calibration calib/ \
      --calibrated-model m-calibrated --calibration-plots plots/ --report eval.json

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""

#: Columns of the per-case CSV (and of the report's per_case records).
CASE_COLUMNS: tuple[str, ...] = (
    "model",
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
    ("decision", "decision", ""),
    ("label", "label", "d"),
    ("class", "class", ""),
    ("dice", "mean Dice", ".4f"),
    ("iou", "mean IoU", ".4f"),
    ("expected_dice", "mean E[Dice]", ".4f"),
    ("cases", "cases", "d"),
    ("rule", "rule", ""),
)

_METRICS = ("dice", "iou", "expected_dice", "volume_ml", "volume_ml_gt")


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
    add_decision_options(parser)
    add_device_option(parser)
    add_model_options(parser)
    add_calibration_options(parser)


def _mean(values: list[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and v == v]  # v == v drops NaN
    return sum(finite) / len(finite) if finite else None


def mean_rows(per_case: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over cases per (model, decision, class), plus a foreground row per pair.

    Parameters
    ----------
    per_case : list of dict
        Records with the :data:`CASE_COLUMNS` keys.

    Returns
    -------
    list of dict
        model, decision, label, class, dice, iou, expected_dice, volume_ml, volume_ml_gt
        (means; None where no case has a value) and cases (count), in first-seen order. After
        the classes of each (model, decision) comes a row with label None and class
        ``"mean foreground"``: the mean over cases of each case's mean over labels 1 and up.
    """
    groups: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in per_case:
        pair = groups.setdefault((row["model"], row["decision"]), {})
        pair.setdefault(row["label"], []).append(row)
    means = []
    for (model, decision), by_label in groups.items():
        for label, rows in by_label.items():
            record = {
                "model": model,
                "decision": decision,
                "label": label,
                "class": rows[0]["class"],
            }
            record.update({key: _mean([r[key] for r in rows]) for key in _METRICS})
            record["cases"] = len(rows)
            record["rule"] = rows[0].get("rule")  # the guarded rule's per-class choice
            means.append(record)
        case_means: dict[str, dict[str, list[float | None]]] = {}
        for label, rows in by_label.items():
            if label == 0:
                continue
            for r in rows:
                per = case_means.setdefault(r["case"], {"dice": [], "iou": [], "expected_dice": []})
                for key in per:
                    per[key].append(r[key])
        record = {"model": model, "decision": decision, "label": None, "class": "mean foreground"}
        for key in ("dice", "iou", "expected_dice"):
            record[key] = _mean([_mean(per[key]) for per in case_means.values()])
        record["cases"] = len(case_means)
        means.append(record)
    return means


def _unique_ids(models: list[Any]) -> list[str]:
    """Display names, with the path added where two models would share one."""
    names = [m.name for m in models]
    return [f"{m.name} [{m.path}]" if names.count(m.name) > 1 else m.name for m in models]


def _some_names(paths: list[Any], limit: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:limit])
    return names + (", ..." if len(paths) > limit else "")


def _labelled(printer: ProgressPrinter, prefix: str) -> Callable[[Any], None]:
    def forward(progress: Any) -> None:
        printer(dataclasses.replace(progress, message=f"{prefix}: {progress.message}"))

    return forward


@dataclasses.dataclass
class _Collected:
    """Rows gathered over the run, in the order the report lists them."""

    per_case: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    inference: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    warnings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reliability: dict[str, Any] = dataclasses.field(default_factory=dict)  # per model


def _score_model_on_case(
    model: Any,
    model_id: str,
    case: str,
    image: Any,
    ground_truth: Any,
    args: argparse.Namespace,
    on_progress: Callable[[str], Callable[[Any], None]],
    collected: _Collected,
) -> None:
    """Run one model on one case once and score every decision rule on its probabilities."""
    from core.metrics import volume_ml
    from core.pipeline import segment_image

    gt_volumes = volume_ml(
        ground_truth.astype("int64"), image.spacing, num_classes=model.spec.num_classes
    )
    probs = None  # the first rule runs the network; the others reuse its probabilities
    for decision in args.decisions:
        result = segment_image(
            model,
            image,
            decision=decision,
            pruning_prob=args.pruning,
            per_slice=args.per_slice,
            threshold=args.threshold,
            device=args.device,
            ground_truth=ground_truth,
            probs=probs,
            on_progress=on_progress(f"{case}, {model_id}, {decision}"),
        )
        if probs is None:
            for warning in result.warnings:  # the same for every rule: said once per model
                _warn(f"{case}: {model_id}: {warning}")
                collected.warnings.append({"model": model_id, "case": case, "warning": warning})
            collected.inference.append(
                {
                    "model": model_id,
                    "case": case,
                    "seconds": result.timings.get("inference"),
                    "device": result.device,
                }
            )
            probs = result.probs
            if model_id not in collected.reliability:
                from core.probability_calibration import ReliabilityTally

                names = list(model.spec.class_names)
                collected.reliability[model_id] = ReliabilityTally(names)
            collected.reliability[model_id].add(probs, ground_truth)
        collected.decisions.append(
            {
                "model": model_id,
                "decision": decision,
                "case": case,
                "decision_s": result.timings.get("decision"),
                "metrics_s": result.timings.get("metrics"),
            }
        )
        for row in result.rows:
            collected.per_case.append(
                {
                    "model": model_id,
                    "decision": decision,
                    "case": case,
                    "label": row.label,
                    "class": row.name,
                    "dice": row.dice,
                    "iou": row.iou,
                    "expected_dice": row.expected_dice,
                    "voxels": row.voxels,
                    "volume_ml": row.volume_ml,
                    "volume_ml_gt": float(gt_volumes[row.label]),
                    "rule": row.rule,
                }
            )


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

    start = time.perf_counter()
    from core import __version__
    from core.cli.model_loading import load_cli_model
    from core.io import read_image, read_mask

    quiet = bool(getattr(args, "quiet", False))
    models = [load_cli_model(path, **model_options(args)) for path in args.model]
    fitted = None
    collected = _Collected()
    case_records: list[dict[str, Any]] = []
    with ProgressPrinter.for_command(quiet) as printer:
        if args.fit_calibration:
            calibrated, fitted = fit_calibrated_copy(
                models[0], split, args, _labelled(printer, "probability calibration")
            )
            models.append(calibrated)
            if "guarded" not in args.decisions:
                args.decisions = [*args.decisions, "guarded"]
        ids = _unique_ids(models)
        for number, case in enumerate(pairing.cases, start=1):
            image = read_image(case.image)
            gt = read_mask(case.label, reference=image)
            warnings = [*image.warnings, *(f"label: {w}" for w in gt.warnings)]
            for warning in warnings:
                _warn(f"{case.image}: {warning}")
            case_records.append(
                {
                    "name": case.name,
                    "image": str(case.image),
                    "label": str(case.label),
                    "shape": list(image.shape3),
                    "warnings": warnings,
                }
            )
            step = f"case {number}/{len(pairing.cases)}"
            for model, model_id in zip(models, ids, strict=True):
                _score_model_on_case(
                    model,
                    model_id,
                    case.name,
                    image,
                    gt.array,
                    args,
                    lambda what, step=step: _labelled(printer, f"{step} {what}"),
                    collected,
                )
    per_case = collected.per_case
    means = mean_rows(per_case)
    calibration, calibration_rows, plots = calibration_report(
        collected.reliability, args.calibration_plots
    )
    report = {
        "command": NAME,
        "segbench_version": __version__,
        "models": [
            {"id": model_id, "name": m.name, "path": str(m.path), "quantized": m.is_quantized}
            for m, model_id in zip(models, ids, strict=True)
        ],
        "decisions": list(args.decisions),
        "options": {
            "pruning_prob": args.pruning,
            "per_slice": args.per_slice,
            "threshold": args.threshold,
            "device": args.device,
        },
        "cases": case_records,
        "unmatched": {
            "images": [str(p) for p in pairing.unmatched_images],
            "labels": [str(p) for p in pairing.unmatched_labels],
        },
        "warnings": collected.warnings,
        "means": means,
        "calibration": calibration,
        "calibration_fit": fitted,
        "calibration_plots": plots,
        "per_case": per_case,
        "timings": {
            "total_s": time.perf_counter() - start,
            "inference": collected.inference,
            "decisions": collected.decisions,
        },
    }
    write_json_atomic(report, args.report)
    if args.csv:
        write_csv_atomic(per_case, CASE_COLUMNS, args.csv)
    if not quiet:
        print(
            f"{len(pairing.cases)} case(s), {len(models)} model(s), "
            f"{len(args.decisions)} decision rule(s): {report['timings']['total_s']:.2f} s"
        )
        print(format_table(means, MEAN_COLUMNS))
        print("probability calibration on the test cases:")
        print(format_calibration_table(calibration_rows))
        if fitted is not None:
            print(f"calibrated copy written to {fitted['written']}")
        print(f"report written to {args.report}")
        if args.csv:
            print(f"per-case rows written to {args.csv}")
    return EXIT_OK

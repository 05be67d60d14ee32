"""``evaluate``'s probability-calibration options: fit a calibrated copy, measure, plot.

Kept out of :mod:`core.cli.evaluate` so that command stays a loop over cases and models;
it calls :func:`add_calibration_options`, :func:`fit_calibrated_copy` and
:func:`calibration_report`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from core.cli.errors import UsageError
from core.cli.tables import Column, format_table

__all__ = [
    "CALIBRATION_COLUMNS",
    "add_calibration_options",
    "calibration_cases",
    "calibration_labels",
    "calibration_report",
    "check_calibration_options",
    "fit_calibrated_copy",
    "format_calibration_table",
]

#: Columns of the calibration table printed after the means.
CALIBRATION_COLUMNS: tuple[Column, ...] = (
    ("model", "model", ""),
    ("class", "class", ""),
    ("ece", "ECE", ".4f"),
    ("tail_mass", "tail mass (p<0.05)", ".1f"),
    ("tail_positives", "tail true", "d"),
    ("expected_volume_px", "sum p", ".0f"),
    ("true_volume_px", "true px", "d"),
)


def add_calibration_options(parser: argparse.ArgumentParser) -> None:
    """The probability-calibration options of ``evaluate``."""
    group = parser.add_argument_group(
        "probability calibration (not quantization calibration)",
        "Fit temperature scaling and the per-class decision guard on a calibration split kept "
        "apart from the test cases; the calibrated copy is evaluated beside the model.",
    )
    group.add_argument(
        "--fit-calibration",
        nargs="+",
        metavar="CASES",
        help="calibration images (files or folders), paired with their labels by case name",
    )
    group.add_argument(
        "--calibration-labels",
        nargs="+",
        metavar="DIR_OR_FILE",
        help="labels of the calibration images (default: looked up in --labels)",
    )
    group.add_argument(
        "--calibrated-model", metavar="DIR", help="folder for the calibrated copy of --model"
    )
    group.add_argument(
        "--vector-scaling",
        action="store_true",
        help="fit a scale and a bias per class instead of one temperature",
    )
    group.add_argument(
        "--calibration-plots",
        metavar="DIR",
        help="write reliability diagrams (PNG and SVG) per model, measured on the test cases",
    )


def check_calibration_options(args: argparse.Namespace) -> None:
    """Refuse inconsistent calibration options (UsageError, exit 2) before any work."""
    fitting = args.fit_calibration is not None
    if not fitting and (args.calibrated_model or args.calibration_labels or args.vector_scaling):
        raise UsageError(
            "--calibrated-model, --calibration-labels and --vector-scaling need --fit-calibration"
        )
    if fitting and not args.calibrated_model:
        raise UsageError("--fit-calibration needs --calibrated-model DIR for the calibrated copy")
    if fitting and len(args.model) != 1:
        raise UsageError(f"--fit-calibration calibrates one --model, got {len(args.model)}")
    if args.calibration_plots and Path(args.calibration_plots).exists():
        if not Path(args.calibration_plots).is_dir():
            raise UsageError(f"--calibration-plots {args.calibration_plots} is not a folder")


def calibration_labels(args: argparse.Namespace, labels: list[Path]) -> set[Path]:
    """Those of ``labels`` that label a ``--fit-calibration`` image (expected in --labels)."""
    from core.cli.matching import expand_files, pair_cases

    if not args.fit_calibration or not labels:
        return set()
    images = expand_files(args.fit_calibration, "--fit-calibration")
    return {case.label for case in pair_cases(images, labels).cases}


def calibration_cases(args: argparse.Namespace, test_cases: list[Any]) -> list[Any]:
    """The ``--fit-calibration`` cases paired with their labels; none may be a test case.

    Raises
    ------
    UsageError
        No calibration image has a label, or one is also a test case (exit 2).
    """
    from core.cli.matching import expand_files, pair_cases

    if not args.fit_calibration:
        return []
    images = expand_files(args.fit_calibration, "--fit-calibration")
    labels = expand_files(args.calibration_labels or args.labels, "--calibration-labels")
    cases = pair_cases(images, labels).cases
    if not cases:
        raise UsageError("--fit-calibration: no calibration image matched a label by file name")
    tested = {case.name for case in test_cases} | {case.image.resolve() for case in test_cases}
    shared = [c.name for c in cases if c.name in tested or c.image.resolve() in tested]
    if shared:
        raise UsageError(
            f"--fit-calibration: case(s) {', '.join(shared)} are also test cases; a calibration "
            "split must be separate from the cases it is judged on"
        )
    return cases


def fit_calibrated_copy(
    model: Any, cases: list[Any], args: argparse.Namespace, printer: Any
) -> dict[str, Any]:
    """Fit the calibration of ``model`` on the calibration ``cases`` and write the copy.

    Returns
    -------
    dict
        The report's ``calibration_fit`` entry; ``written`` is the copy's folder.
    """
    from core.probability_calibration.model_fit import (
        case_loader,
        fit_model_calibration,
        save_calibrated_model,
    )

    fit = fit_model_calibration(
        model,
        [case_loader(case.image, case.label) for case in cases],
        vector=args.vector_scaling,
        device=args.device,
        on_progress=printer,
    )
    folder = save_calibrated_model(model, fit.calibration, args.calibrated_model, overwrite=True)
    return {
        "cases": [{"name": c.name, "image": str(c.image), "label": str(c.label)} for c in cases],
        "written": str(folder),
        **fit.to_dict(),
    }


def _safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def calibration_report(
    section: dict[str, list[dict[str, Any]]], plots: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The table rows of the report's ``calibration`` entry, and the plot files written."""
    from core.probability_calibration.measure import classes_from_records

    rows: list[dict[str, Any]] = []
    written: list[str] = []
    if plots:
        Path(plots).mkdir(parents=True, exist_ok=True)
    for model_id, classes in section.items():
        rows += [{"model": model_id, **c} for c in classes]
        if plots:
            from core.probability_calibration.plots import write_reliability_diagrams

            stem = Path(plots) / f"reliability_{_safe_stem(model_id)}"
            title = f"{model_id}: reliability on the test cases"
            parsed = classes_from_records(classes)
            written += [str(p) for p in write_reliability_diagrams(parsed, title, stem)]
    return rows, written


def format_calibration_table(rows: list[dict[str, Any]]) -> str:
    """The calibration rows as a text table."""
    return format_table(rows, CALIBRATION_COLUMNS)

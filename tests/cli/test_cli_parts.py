"""The shared parts of the headless commands, in-process: arguments, errors, progress, reports,
output guards, file pairing, tables and means."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import pytest

from core.cli import arguments
from core.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, handle_errors
from core.cli.evaluate import mean_rows
from core.cli.matching import case_name, expand_files, pair_cases
from core.cli.outputs import check_outputs
from core.cli.parser import build_parser
from core.cli.progress import ProgressPrinter, format_progress
from core.cli.tables import format_table
from core.jobs import Progress
from core.report_files import (
    format_report_json,
    json_ready,
    write_csv_atomic,
    write_json_atomic,
)

# --- argument types -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1.5", "-0.1", "1", "nan", "x"])
def test_pruning_outside_zero_one_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.probability_below_one(text)


def test_pruning_accepts_the_half_open_interval():
    assert arguments.probability_below_one("0") == 0.0
    assert arguments.probability_below_one("0.999") == pytest.approx(0.999)


def test_bits_lr_iters_and_device_types():
    assert arguments.bits("2") == 2 and arguments.bits("8") == 8
    for bad in ("1", "9", "4.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            arguments.bits(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.positive_float("0")
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.non_negative_int("-1")
    assert arguments.device_name("CUDA:1") == "cuda:1"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown device 'gpu'"):
        arguments.device_name("gpu")


def test_decision_list_keeps_order_drops_duplicates_and_names_unknown_rules():
    assert arguments.decision_list("rma-dice, argmax,rma-dice") == ["rma-dice", "argmax"]
    with pytest.raises(argparse.ArgumentTypeError, match="max, dice"):
        arguments.decision_list("argmax,max,dice")


def test_choice_tuples_agree_with_the_core():
    from core.pipeline import DECISIONS
    from core.quant.config import DEFAULT_ITERS, GRANULARITIES, METHODS

    assert arguments.DEFAULT_ITERS == DEFAULT_ITERS
    assert arguments.DECISION_CHOICES == DECISIONS
    assert arguments.METHOD_CHOICES == METHODS
    assert arguments.GRANULARITY_CHOICES == GRANULARITIES


# --- parser ---------------------------------------------------------------------------------


def test_quiet_and_debug_work_before_and_after_the_command():
    parser = build_parser()
    before = parser.parse_args(["--quiet", "info", "x"])
    after = parser.parse_args(["info", "x", "--debug"])
    neither = parser.parse_args(["info", "x"])
    assert (before.quiet, before.debug) == (True, False)
    assert (after.quiet, after.debug) == (False, True)
    assert (neither.quiet, neither.debug) == (False, False)


def test_no_command_leaves_the_gui_path_open():
    args = build_parser().parse_args([])
    assert args.command is None


def test_every_command_is_registered():
    parser = build_parser()
    for name in ("segment", "quantize", "evaluate", "info"):
        assert parser.parse_args(_minimal(name)).command == name


def _minimal(name):
    return {
        "segment": ["segment", "img", "--model", "m"],
        "quantize": ["quantize", "--model", "m", "--calib", "a", "--out", "q"],
        "evaluate": ["evaluate", "--model", "m", "--images", "i", "--labels", "l", "--report", "r"],
        "info": ["info", "p"],
    }[name]


def test_evaluate_collects_repeated_and_listed_models():
    args = build_parser().parse_args(
        ["evaluate", "--model", "a", "--model", "b", "c", "--images", "i", "--labels", "l"]
        + ["--report", "r.json"]
    )
    assert args.model == ["a", "b", "c"]
    assert args.decisions == ["argmax", "rma-dice"]


# --- errors ---------------------------------------------------------------------------------


def _namespace(debug=False):
    return argparse.Namespace(debug=debug, quiet=False)


def test_failures_become_one_line_and_exit_codes(capsys):
    @handle_errors("demo")
    def usage(args):
        raise UsageError("--out x.nii is an input")

    @handle_errors("demo")
    def bad_input(args):
        raise ValueError("a.nii: not a readable NIfTI file\n(details on a second line)")

    @handle_errors("demo")
    def missing(args):
        raise FileNotFoundError(2, "No such file or directory", "b.nii")

    @handle_errors("demo")
    def ok(args):
        return EXIT_OK

    assert usage(_namespace()) == EXIT_USAGE
    assert bad_input(_namespace()) == EXIT_FAILURE
    assert missing(_namespace()) == EXIT_FAILURE
    assert ok(_namespace()) == EXIT_OK
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "main.py demo: error: --out x.nii is an input (see `main.py demo --help`)",
        "main.py demo: error: a.nii: not a readable NIfTI file; (details on a second line)",
        "main.py demo: error: b.nii: No such file or directory",
    ]


def test_unexpected_errors_hint_at_debug_and_debug_shows_the_traceback(capsys):
    @handle_errors("demo")
    def broken(args):
        raise RuntimeError("CUDA out of memory")

    assert broken(_namespace()) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == (
        "main.py demo: error: RuntimeError: CUDA out of memory (run with --debug for the traceback)"
    )
    assert broken(_namespace(debug=True)) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.strip().endswith("main.py demo: error: RuntimeError: CUDA out of memory")


# --- progress -------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_draws_on_a_terminal_and_ends_the_line():
    stream = FakeTerminal()
    with ProgressPrinter(stream, interval=0.0) as printer:
        printer(Progress(1, 4, "slice batch 1", stage="inference"))
        printer(Progress(4, 4, "slice batch 4", stage="inference"))
        printer(Progress(0, 2, "deciding", stage="decision"))
    text = stream.getvalue()
    assert text.count("\r") == 3
    assert "inference [######------------------]  25% 1/4 slice batch 1" in text
    assert "100% 4/4" in text
    # A new stage starts on a new line, and the printer ends with one.
    assert "\n\rdecision" in text and text.endswith("\n")


def test_progress_is_silent_off_a_terminal_and_when_quiet():
    plain = io.StringIO()
    printer = ProgressPrinter(plain)
    printer(Progress(1, 2, "x", stage="s"))
    printer.finish()
    assert plain.getvalue() == ""
    assert ProgressPrinter.for_command(quiet=True).enabled is False


def test_progress_line_without_total_shows_the_step_and_values():
    line = format_progress(Progress(7, None, "block enc1", values={"loss": 0.012345}, stage="q"))
    assert line == "q step 7 block enc1 loss=0.01235"


# --- reports --------------------------------------------------------------------------------


def test_report_json_round_trips_and_puts_each_row_on_one_line(tmp_path):
    import numpy as np

    report = {
        "decision": "rma-dice",
        "shape": (3, 4, 5),
        "classes": [
            {"label": 0, "name": "background", "dice": np.float32(0.5), "iou": None},
            {"label": 1, "name": "liver", "dice": float("nan"), "iou": 1 / 3},
        ],
        "path": tmp_path,
    }
    path = write_json_atomic(report, tmp_path / "r.json")
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded == json_ready(report)
    assert loaded["classes"][1] == {"label": 1, "name": "liver", "dice": None, "iou": 0.333333}
    lines = text.splitlines()
    assert '    {"label": 0, "name": "background", "dice": 0.5, "iou": null},' in lines
    assert '  "shape": [3, 4, 5],' in lines
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_atomic_write_keeps_the_old_report_when_writing_fails(tmp_path, monkeypatch):
    from core import report_files as reports

    target = tmp_path / "r.json"
    target.write_text("old")

    def failing_replace(*args):
        raise OSError(28, "No space left on device")  # a failure between write and rename

    monkeypatch.setattr(reports.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic({"x": 1}, target)
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # temporary file removed
    with pytest.raises(ValueError, match="does not exist"):
        write_json_atomic({}, tmp_path / "missing" / "r.json")


def test_csv_rows_read_back_with_the_csv_module(tmp_path):
    rows = [
        {"case": "a,b", "dice": 0.1234567891, "iou": None, "extra": "ignored"},
        {"case": "c", "dice": 1.0, "iou": 0.5},
    ]
    path = write_csv_atomic(rows, ["case", "dice", "iou"], tmp_path / "c.csv")
    with path.open(newline="") as stream:
        back = list(csv.DictReader(stream))
    assert back == [
        {"case": "a,b", "dice": "0.123457", "iou": ""},
        {"case": "c", "dice": "1.0", "iou": "0.5"},
    ]


def test_flat_lists_stay_on_one_line_and_nesting_is_indented():
    text = format_report_json({"a": {"b": [1, 2], "c": [{"d": 1}]}})
    assert text == '{\n  "a": {\n    "b": [1, 2],\n    "c": [\n      {"d": 1}\n    ]\n  }\n}\n'


# --- output guards --------------------------------------------------------------------------


def test_outputs_may_not_be_inputs_even_through_a_link(tmp_path):
    image = tmp_path / "ct.nii.gz"
    image.write_bytes(b"x")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(image)
    with pytest.raises(UsageError, match="--out .*link.nii.gz is an input"):
        check_outputs({"--out": link}, [image])
    with pytest.raises(UsageError, match="--out and --report name the same file"):
        check_outputs({"--out": tmp_path / "a", "--report": tmp_path / "a"}, [image])
    check_outputs({"--out": tmp_path / "mask.nii.gz", "--report": None}, [image])


def test_folder_outputs_may_not_hold_inputs_and_files_stay_out_of_input_folders(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(UsageError, match="holds the input"):
        check_outputs({"--out": tmp_path}, [model], folder_outputs=("--out",))
    with pytest.raises(UsageError, match="inside the input folder"):
        check_outputs({"--report": model / "r.json"}, [model])
    check_outputs({"--out": tmp_path / "q"}, [model], folder_outputs=("--out",))


# --- pairing images with labels -------------------------------------------------------------


def _touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_pairing_by_case_name_with_label_tags_and_channel_tags(tmp_path):
    images = _touch(tmp_path / "img", "a.nii.gz", "b_0000.nii.gz", "c.nrrd", "d.nii", "notes.txt")
    labels = _touch(tmp_path / "lab", "a_seg.nii.gz", "b.nii.gz", "c_label.mha", "e.nii.gz")
    image_files = expand_files([images], "--images")
    assert [p.name for p in image_files] == ["a.nii.gz", "b_0000.nii.gz", "c.nrrd", "d.nii"]
    pairing = pair_cases(image_files, expand_files([labels], "--labels"))
    assert [(c.name, c.label.name) for c in pairing.cases] == [
        ("a", "a_seg.nii.gz"),
        ("b_0000", "b.nii.gz"),
        ("c", "c_label.mha"),
    ]
    assert [p.name for p in pairing.unmatched_images] == ["d.nii"]
    assert [p.name for p in pairing.unmatched_labels] == ["e.nii.gz"]
    assert case_name(images / "x.nii.gz") == "x"


def test_pairing_refuses_ambiguity_and_missing_entries(tmp_path):
    labels = _touch(tmp_path / "lab", "a.nii.gz", "a_seg.nii.gz")
    with pytest.raises(ValueError, match="labels the same case 'a'"):
        pair_cases([tmp_path / "a.nii.gz"], sorted(labels.iterdir()))
    same = _touch(tmp_path / "one", "x.nii.gz")
    with pytest.raises(ValueError, match="its own label"):
        pair_cases([same / "x.nii.gz"], [same / "x.nii.gz"])
    with pytest.raises(ValueError, match="nowhere: no such file or folder"):
        expand_files([tmp_path / "nowhere"], "--images")
    empty = _touch(tmp_path / "empty", "readme.txt")
    with pytest.raises(ValueError, match="--images: no image files found"):
        expand_files([empty], "--images")


# --- tables and means -----------------------------------------------------------------------


def test_table_aligns_numbers_right_and_prints_missing_values_as_dashes():
    text = format_table(
        [{"name": "liver", "dice": 0.5}, {"name": "kidney-left", "dice": None}],
        [("name", "class", ""), ("dice", "Dice", ".3f")],
    )
    assert text.splitlines() == ["class         Dice", "liver        0.500", "kidney-left      -"]


def test_means_per_class_and_foreground_against_hand_computation():
    def row(case, label, dice, iou):
        return {
            "model": "m",
            "decision": "argmax",
            "case": case,
            "label": label,
            "class": f"c{label}",
            "dice": dice,
            "iou": iou,
            "expected_dice": 0.5,
            "volume_ml": 1.0 * label,
            "volume_ml_gt": 2.0,
        }

    per_case = [
        row("a", 0, 1.0, 1.0),
        row("a", 1, 0.6, 0.4),
        row("a", 2, 0.2, 0.1),
        row("b", 0, 0.8, 0.7),
        row("b", 1, 0.4, 0.2),
        row("b", 2, None, None),
    ]
    means = {(r["label"]): r for r in mean_rows(per_case)}
    assert means[0]["dice"] == pytest.approx(0.9) and means[0]["cases"] == 2
    assert means[1]["iou"] == pytest.approx(0.3)
    assert means[2]["dice"] == pytest.approx(0.2)  # the missing value is left out, not zero
    # Foreground: case a mean (0.6 + 0.2) / 2 = 0.4, case b 0.4 alone; mean 0.4.
    assert means[None]["class"] == "mean foreground"
    assert means[None]["dice"] == pytest.approx(0.4)
    assert means[None]["cases"] == 2


def test_cli_modules_do_not_import_torch_for_help():
    import subprocess

    script = (
        "import sys\n"
        "from core.cli.parser import build_parser\n"
        "build_parser()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.stdout.strip() == "False"


def test_learn_grid_flag_reaches_the_config():
    from core.cli.quantize import quant_config

    parser = build_parser()
    for extra, expected in (([], False), (["--learn-grid"], True)):
        args = parser.parse_args([*_minimal("quantize"), *extra])
        assert quant_config(args, "flexround", 2, 0).learn_grid is expected

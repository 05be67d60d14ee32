"""``main.py review FOLDER_OR_CSV``: open the workbench on a worklist of cases to review.

The one command that is not headless: it checks the worklist here (a bad folder or CSV is a
usage error, exit 2, before any window opens) and then starts the GUI on it, with ``--model``
opened first so that every case is segmented as it is opened.
"""

from __future__ import annotations

import argparse
import importlib

from core.cli.errors import UsageError, handle_errors

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "review"
HELP = "open the GUI on a worklist (folder or CSV) to accept, reject or correct each case"
DESCRIPTION = """\
Open the workbench on a worklist: a folder of cases (images/, optional labels/ and
predictions/, paired by case name as `evaluate` pairs them; or one flat folder of images with
tagged ground truths such as case01_seg.nii.gz), or a CSV with the columns
case,image[,label][,prediction]. The Cases panel lists every case with its status, comment and
time; verdicts, comments and corrected masks are saved in the worklist's review folder after
every change, and reopening the worklist resumes where the review stopped."""
EPILOG = """\
examples:
  main.py review cases/ --model resources/demo/model
  main.py review worklist.csv

exit status: 0 window closed, 2 bad worklist"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``review`` options to its sub-parser."""
    parser.add_argument("worklist", metavar="FOLDER_OR_CSV", help="the worklist to review")
    parser.add_argument("--model", metavar="MODEL", help="segment each case with this model")
    parser.add_argument(
        "--device", default="auto", help="where jobs compute: auto (CUDA if present), cpu, cuda"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot once the first case is shown"
    )
    parser.add_argument(
        "--quit-after", type=float, metavar="SECONDS", default=None, help="close after this long"
    )
    parser.set_defaults(image=None, gt=None, no_demo=True)


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Check the worklist, then run the GUI on it; returns the GUI's exit code."""
    from core.review import read_worklist

    try:
        read_worklist(args.worklist)
    except ValueError as error:
        raise UsageError(str(error)) from None
    # The GUI is imported only here, when the command runs: importing core stays Qt-free.
    run_gui = importlib.import_module("gui.app").run_gui
    return int(run_gui(args))

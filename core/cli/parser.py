"""The command-line parser shared by the GUI launcher and the headless commands.

``python main.py [GUI OPTIONS]`` starts the GUI; ``python main.py COMMAND ...`` runs a headless
command. Each command lives in its own module under ``core.cli`` and is listed in
``COMMAND_MODULES``; a command module provides ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``.
``--quiet`` and ``--debug`` are accepted both before and after the command name.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from core import __version__
from core.cli.arguments import non_negative_int

__all__ = ["COMMAND_MODULES", "build_parser", "command_modules", "parse_command_line"]

# Module paths, imported on demand so `--version` and `--help` stay fast.
COMMAND_MODULES: tuple[str, ...] = (
    "core.cli.segment",
    "core.cli.quantize",
    "core.cli.evaluate",
    "core.cli.sweep",
    "core.cli.info",
    "core.cli.review",
)

_QUIET_HELP = "no progress bars and no summary on stdout (errors still go to stderr)"
_DEBUG_HELP = "print the full traceback when a command fails"


def command_modules() -> list[ModuleType]:
    """The command modules, imported (they import torch and the core lazily, in ``run``)."""
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    """Build the parser: GUI options at the top level, headless commands as sub-commands."""
    parser = argparse.ArgumentParser(
        prog="main.py",
        usage="main.py [GUI OPTIONS] [IMAGE]\n       main.py COMMAND [OPTIONS] ...",
        description=(
            "segbench: a workbench for segmentation models. With no command it opens the GUI "
            "(on the bundled demo unless told otherwise); with a command it runs headless."
        ),
    )
    parser.add_argument("--version", action="version", version=f"segbench {__version__}")
    parser.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # The same flags after the command name; SUPPRESS keeps a sub-command's default from
    # overwriting a flag given before the command (an argparse quirk with shared dests).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    gui = parser.add_argument_group("GUI options (no command)")
    gui.add_argument(
        "--image",
        metavar="PATH",
        help="open this image (file or DICOM folder) instead of the demo; `main.py PATH` does "
        "the same",
    )
    gui.add_argument("--series", metavar="UID", help="series of a DICOM folder --image to open")
    gui.add_argument(
        "--volume",
        type=non_negative_int,
        metavar="N",
        help="volume of a 4-D --image to open (counted from 0), instead of asking",
    )
    gui.add_argument("--gt", metavar="PATH", help="open this ground-truth mask")
    gui.add_argument("--model", metavar="PATH", help="open this model")
    gui.add_argument("--no-demo", action="store_true", help="start empty, without the demo")
    gui.add_argument(
        "--device", default="auto", help="where jobs compute: auto (CUDA if present), cpu, cuda"
    )
    gui.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: one per physical core, less one for the GUI)",
    )
    gui.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot of the window once it is ready"
    )
    gui.add_argument(
        "--quit-after",
        type=float,
        metavar="SECONDS",
        default=None,
        help="close the window after this many seconds (for scripted screenshots)",
    )
    modules = command_modules()
    sub = parser.add_subparsers(
        dest="command",
        title="headless commands",
        metavar="COMMAND",
        description="run `main.py COMMAND --help` for each command's options"
        if modules
        else "(none yet)",
    )
    for module in modules:
        command = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None),
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(run=module.run)
        module.add_arguments(command)
    return parser


def _gui_image_argument(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``main.py IMAGE [options]`` as ``main.py --image IMAGE [options]``.

    argparse cannot hold an optional positional beside sub-commands, so the first positional
    word is looked at here: a command name stays a command; anything that looks like a path
    (it exists, or holds a dot or a slash) becomes ``--image``; anything else is left for
    argparse to refuse as an unknown command (``main.py segmnet`` must not open a file).
    """
    valued = {
        option
        for action in parser._actions  # argparse's own list of what each option takes
        if action.option_strings and action.nargs != 0
        for option in action.option_strings
    }
    commands = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands.update(action.choices)
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if word.startswith("-") and word != "-":
            index += 2 if word in valued else 1  # "--image=x" carries its own value
            continue
        break
    if index >= len(argv):
        return argv
    word = argv[index]
    if word in commands:
        return argv
    looks_like_path = os.path.exists(word) or "." in word or "/" in word or os.sep in word
    if not looks_like_path:
        return argv
    rest = [w for w in argv[:index] if w != "--"] + argv[index + 1 :]
    if any(w == "--image" or w.startswith("--image=") for w in rest):
        parser.error(f"the image is given twice: {word} and --image")
    return [*rest, "--image", word]


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``main.py``'s arguments: a headless command, or the GUI's options and image.

    GUI options that only make sense with an image (``--series``, ``--volume``) without one
    are refused here, with argparse's exit code 2.
    """
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_gui_image_argument(parser, words))
    if args.command is None and not args.image:
        for option in ("series", "volume"):
            if getattr(args, option) is not None:
                parser.error(f"--{option} needs an image (--image PATH or main.py PATH)")
    return args

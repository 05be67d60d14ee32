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
from types import ModuleType

from core import __version__

__all__ = ["COMMAND_MODULES", "build_parser", "command_modules"]

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
    gui.add_argument("--image", metavar="PATH", help="open this image instead of the demo")
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

"""segbench: open the workbench GUI, or run a headless command (`python main.py --help`)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from core.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    if args.command is not None:
        return int(args.run(args))
    from gui.app import run_gui

    return run_gui(args)


if __name__ == "__main__":
    sys.exit(main())

"""segbench: open the workbench GUI, or run a headless command (`python main.py --help`)."""

from __future__ import annotations

import os
import sys


def configure_threads() -> None:
    """Set OpenMP's wait policy for torch's CPU threads; call it before torch is imported.

    OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it. Its default lets an idle thread
    spin for a while before it sleeps: between the many short parallel regions of RankSEG-RMA's
    passes two threads then spun against each other, the GUI thread and other programs, and the
    decision of a 512x512x300 CT ran 3.2x slower on two threads than on one while burning 4x
    the CPU. With passive waiting two threads come close to one (RMA 6.8 s against 5.8 s on a
    busy two-core machine, 22 s before; benchmarks/bench_gui_volume.py --threads), and the GUI
    leaves one core to its own thread (:func:`core.device.gui_torch_threads`). A value set by the
    user is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    configure_threads()
    from core.cli.parser import parse_command_line

    args = parse_command_line(argv)
    if args.command is not None:
        return int(args.run(args))
    from gui.app import run_gui

    return run_gui(args)


if __name__ == "__main__":
    sys.exit(main())

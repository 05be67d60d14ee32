"""Start the Qt application and the main window."""

from __future__ import annotations

import argparse
import logging
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from core.device import select_device
from core.logs import configure_logging
from gui.main_window import MainWindow

__all__ = ["run_gui", "create_window"]

log = logging.getLogger("segbench.gui")


def create_window(args: argparse.Namespace) -> MainWindow:
    """Build the main window for the parsed command-line options."""
    window = MainWindow()
    choice = select_device(args.device, threads=args.threads)
    window.device_label.setText(choice.description)
    log.info("device: %s", choice.description)
    return window


def run_gui(args: argparse.Namespace) -> int:
    """Open the main window and run the event loop; returns the exit code."""
    log_path = configure_logging()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("segbench")
    app.setOrganizationName("segbench")
    try:
        window = create_window(args)
    except ValueError as exc:  # a bad option such as --device cuda without CUDA
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("log file: %s", log_path)
    window.show()
    if args.screenshot:
        QTimer.singleShot(1500, lambda: window.grab().save(args.screenshot))
    if args.quit_after is not None:
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    return app.exec()

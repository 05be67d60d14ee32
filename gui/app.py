"""Start the Qt application and the main window."""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import sys

import torch
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from core.device import select_device
from core.logs import configure_logging
from gui.workbench_window import WorkbenchWindow

__all__ = ["run_gui", "create_window", "freeze_startup_objects", "gui_torch_threads"]

log = logging.getLogger("segbench.gui")


def create_window(args: argparse.Namespace) -> WorkbenchWindow:
    """Build the main window and start opening what the command line asked for.

    With no ``--image``/``--model`` and no ``--no-demo``, the bundled demo opens and is
    segmented (argmax and RankSEG-RMA), so a new user sees every feature at once.
    """
    threads = args.threads if args.threads is not None else gui_torch_threads()
    choice = select_device(args.device, threads=threads)
    window = WorkbenchWindow()
    window.device_label.setText(choice.description)
    log.info("device: %s", choice.description)
    if args.image or args.model or getattr(args, "worklist", None):
        _open_requested(window, args)
    elif not args.no_demo:
        window.load_demo()
    return window


@functools.cache  # torch's default, read once at start-up (select_device then changes it)
def gui_torch_threads() -> int:
    """torch's CPU threads in the app: its default (one per physical core) less one.

    The GUI thread needs a core of its own while a job runs; on two cores a second torch thread
    only competed with it (and with other programs) and made RankSEG-RMA slower than one thread
    (benchmarks/bench_gui_volume.py --threads). ``--threads`` overrides it.
    """
    return max(1, torch.get_num_threads() - 1)


def freeze_startup_objects() -> None:
    """Take the objects alive after start-up out of the garbage collector's full passes.

    torch, Qt and the window leave about 260,000 objects that live as long as the app; a full
    collection walks them all (about 250 ms here) in whichever thread happens to allocate,
    holding the GIL, so it froze the GUI at random moments. Frozen, they are never walked;
    objects made later (results, jobs) are collected as usual.
    """
    gc.collect()
    gc.freeze()


def _open_requested(window: WorkbenchWindow, args: argparse.Namespace) -> None:
    """Open --model, then --image, then --gt (or a worklist), each after the previous one."""
    steps = []
    if args.model:
        steps.append(lambda: window.open_model(args.model))
    if args.image:
        steps.append(lambda: window.open_image(args.image))
    if args.gt:
        steps.append(lambda: window.open_ground_truth(args.gt))
    if getattr(args, "worklist", None):
        steps.append(lambda: window.review.open_worklist(args.worklist))

    def next_step():
        if steps:
            worker = steps.pop(0)()
            if worker is not None:
                worker.signals.succeeded.connect(lambda *_: next_step())

    next_step()


def _screenshot_when_idle(window: WorkbenchWindow, path: str) -> None:
    """Save a screenshot once the start-up jobs (demo, --image ...) have finished."""

    def check():
        if window.runner.is_busy:
            QTimer.singleShot(200, check)
        else:
            QTimer.singleShot(500, lambda: window.grab().save(path))

    QTimer.singleShot(500, check)


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
    freeze_startup_objects()
    window.show()
    if args.screenshot:
        _screenshot_when_idle(window, args.screenshot)
    if args.quit_after is not None:
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    return app.exec()

"""Start the Qt application and the main window."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from core.device import gui_torch_threads, select_device
from core.logs import configure_logging
from gui.workbench_window import WorkbenchWindow

__all__ = ["run_gui", "create_window", "freeze_startup_objects"]

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
    window.startup_opener = None
    if args.image or args.model or getattr(args, "worklist", None):
        window.startup_opener = _open_requested(window, args)
    elif not args.no_demo:
        window.load_demo()
    return window


def freeze_startup_objects() -> None:
    """Take the objects alive after start-up out of the garbage collector's full passes.

    torch, Qt and the window leave about 260,000 objects that live as long as the app; a full
    collection walks them all (about 250 ms here) in whichever thread happens to allocate,
    holding the GIL, so it froze the GUI at random moments. Frozen, they are never walked;
    objects made later (results, jobs) are collected as usual.
    """
    gc.collect()
    gc.freeze()


class StartupOpener:
    """Opens --model, then --image, then --gt (or a worklist), each once the previous one is open.

    The image step may ask a question first (which volume of a 4-D file, which series of a
    DICOM folder) and run a second job after the answer, so the next step waits for the image
    to reach the session, not for the first job to end. :attr:`done` tells ``--screenshot``
    when every requested file is open (or failed, or the question was declined).
    """

    def __init__(self, window: WorkbenchWindow, args: argparse.Namespace) -> None:
        self._window = window
        # (what the step waits for, how it starts)
        self._steps: list[tuple[str, Callable[[], object]]] = []
        self._waiting_for: str | None = None
        if args.model:
            self._steps.append(("model", lambda: window.open_model(args.model)))
        if args.image:
            self._steps.append(
                (
                    "image",
                    lambda: window.open_image(args.image, series=args.series, volume=args.volume),
                )
            )
        if args.gt:
            self._steps.append(("ground truth", lambda: window.open_ground_truth(args.gt)))
        if getattr(args, "worklist", None):  # `main.py review`: ends when its jobs have run
            self._steps.append(("worklist", lambda: window.review.open_worklist(args.worklist)))
        session = window.session
        session.variants_changed.connect(lambda: self._arrived("model"))
        session.image_changed.connect(lambda _image: self._arrived("image"))
        # A new image clears the ground truth (None): only a truth that arrives counts.
        session.ground_truth_changed.connect(
            lambda truth: truth is not None and self._arrived("ground truth")
        )
        window.runner.busy_changed.connect(self._on_busy_changed)

    @property
    def done(self) -> bool:
        """Every step ran and no job or question of theirs is still open."""
        window = self._window
        return (
            self._waiting_for is None
            and not self._steps
            and not window.runner.is_busy
            and not window.is_asking
        )

    def start(self) -> None:
        """Start the first step."""
        self._next()

    def _next(self) -> None:
        self._waiting_for = None
        if self._steps:
            kind, start = self._steps.pop(0)
            self._waiting_for = kind
            start()

    def _arrived(self, kind: str) -> None:
        if self._waiting_for == kind:
            # The next step starts once the window has finished showing this one.
            self._waiting_for = f"{kind} (shown)"
            QTimer.singleShot(0, self._next)

    def _on_busy_changed(self, busy: bool) -> None:
        # A step that failed (dialog shown) or whose question was declined ends the chain:
        # opening the ground truth of an image that did not open would only fail too.
        if not busy and self._waiting_for is not None:
            QTimer.singleShot(0, self._give_up_if_idle)

    def _give_up_if_idle(self) -> None:
        window = self._window
        if self._waiting_for is not None and not window.runner.is_busy and not window.is_asking:
            self._waiting_for = None
            self._steps.clear()


def _open_requested(window: WorkbenchWindow, args: argparse.Namespace) -> StartupOpener:
    """Open --model, then --image (with --series/--volume), then --gt or a worklist."""
    opener = StartupOpener(window, args)
    opener.start()
    return opener


def _screenshot_when_idle(
    window: WorkbenchWindow, path: str, opener: StartupOpener | None = None
) -> None:
    """Save a screenshot once the start-up jobs (demo, --image ...) have finished.

    A question (which volume, which series) counts as unfinished: the screenshot waits for the
    answer rather than saving an empty window.
    """

    def ready() -> bool:
        if opener is not None and not opener.done:
            return False
        return not window.runner.is_busy and not window.is_asking

    def check():
        if ready():
            QTimer.singleShot(500, lambda: window.grab().save(path) if ready() else check())
        else:
            QTimer.singleShot(200, check)

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
        _screenshot_when_idle(window, args.screenshot, window.startup_opener)
    if args.quit_after is not None:
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    return app.exec()

"""The main window: docks around a central viewer, a status bar, and the job runner."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QWidget,
)

from core import __version__
from core.jobs import Progress
from gui.widgets.error_dialog import show_error
from gui.widgets.log_panel import LogPanel
from gui.workers import JobFailure, JobRunner, JobWorker, first_line

__all__ = ["MainWindow"]

log = logging.getLogger("segbench.gui")

EMPTY_STATE_TEXT = (
    "<h2>No image open</h2>"
    "<p>Open a NIfTI, DICOM, NRRD, MHA or PNG/JPEG/TIFF image with <b>File &gt; Open image</b> "
    "(Ctrl+O) or drop a file here.<br>Then open a model to segment it, quantize it, and compare "
    "decision rules.</p>"
)


class MainWindow(QMainWindow):
    """The workbench window.

    Long work goes through :meth:`run_job`, which runs a core job on the worker pool, shows its
    progress in the status bar with a Cancel button, and turns failures into dialogs.
    """

    job_succeeded = Signal(str, object)  # title, result: lets tests and panels observe results

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"segbench {__version__}")
        self.resize(1400, 900)
        self.runner = JobRunner(self)
        self.runner.busy_changed.connect(self._on_runner_busy_changed)
        self.error_boxes: list[QMessageBox] = []

        self.central = QStackedWidget(self)
        self.empty_state = QLabel(EMPTY_STATE_TEXT, self)
        self.empty_state.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_state.setWordWrap(True)
        self.empty_state.setObjectName("emptyState")
        self.central.addWidget(self.empty_state)
        self.setCentralWidget(self.central)

        self.log_panel = LogPanel(self)
        self.log_dock = self.add_dock("Log", self.log_panel, Qt.DockWidgetArea.BottomDockWidgetArea)

        self._build_status_bar()
        self._build_menus()

    # --- layout helpers -------------------------------------------------------------------
    def add_dock(
        self, title: str, widget: QWidget, area: Qt.DockWidgetArea, *, scroll: bool = False
    ) -> QDockWidget:
        """Put ``widget`` in a dock titled ``title``.

        ``scroll=True`` wraps a tall panel in a scroll area so the dock can be smaller than the
        panel's minimum size (otherwise the window would grow past the screen).
        """
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower().replace(' ', '_')}")
        if scroll:
            area_widget = QScrollArea(dock)
            area_widget.setWidgetResizable(True)
            area_widget.setFrameShape(QScrollArea.Shape.NoFrame)
            area_widget.setWidget(widget)
            dock.setWidget(area_widget)
        else:
            dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.cursor_label = QLabel("", self)
        self.cursor_label.setObjectName("cursorLabel")
        bar.addWidget(self.cursor_label, 1)
        self.job_label = QLabel("", self)
        bar.addPermanentWidget(self.job_label)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setMaximumWidth(220)
        self.progress_bar.setVisible(False)
        bar.addPermanentWidget(self.progress_bar)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_jobs)
        bar.addPermanentWidget(self.cancel_button)
        self.device_label = QLabel("", self)
        self.device_label.setObjectName("deviceLabel")
        bar.addPermanentWidget(self.device_label)

    def _build_menus(self) -> None:
        self.file_menu = self.menuBar().addMenu("&File")
        self.view_menu = self.menuBar().addMenu("&View")
        self.help_menu = self.menuBar().addMenu("&Help")
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.quit_action = quit_action
        self.file_menu.addAction(quit_action)
        self.view_menu.addAction(self.log_dock.toggleViewAction())
        about = QAction("&About", self)
        about.triggered.connect(self._on_about_triggered)
        self.help_menu.addAction(about)

    # --- jobs ------------------------------------------------------------------------------
    def run_job(
        self,
        fn: Callable[..., Any],
        *args: Any,
        title: str,
        on_success: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_end: Callable[[], None] | None = None,
        on_failed: Callable[[JobFailure], None] | None = None,
        **kwargs: Any,
    ) -> JobWorker:
        """Run the core job ``fn`` off the GUI thread.

        ``on_success(result)`` and ``on_progress(progress)`` run on the GUI thread. Failures show
        the error dialog unless ``on_failed(failure)`` is given to handle them (for example to
        ask a question and retry); cancellation shows a status message. ``on_end`` runs last in
        every case.
        """
        worker = JobWorker(fn, *args, title=title, **kwargs)
        signals = worker.signals
        signals.progressed.connect(lambda p: self._on_job_progressed(title, p))
        if on_progress is not None:
            signals.progressed.connect(on_progress)
        if on_success is not None:
            signals.succeeded.connect(lambda result: self._guarded(title, on_success, result))
        signals.succeeded.connect(lambda result: self.job_succeeded.emit(title, result))
        failed = on_failed if on_failed is not None else self._on_job_failed
        signals.failed.connect(lambda failure: self._guarded(title, failed, failure))
        signals.cancelled.connect(lambda: self.statusBar().showMessage(f"{title}: cancelled", 5000))
        if on_end is not None:
            signals.finished.connect(on_end)
        self.job_label.setText(f"{title}…")
        self.runner.start(worker)
        return worker

    def _guarded(self, title: str, slot: Callable[[Any], None], value: Any) -> None:
        """Run a job's result handler; an exception becomes the error dialog, not a Qt crash.

        The steps after a successful read (showing the image, its window, the session state)
        can still fail on an odd file; an exception escaping a slot would reach the Qt event
        loop, where PySide6 only prints it and the window is left half updated.
        """
        try:
            slot(value)
        except Exception as error:  # noqa: BLE001 - every failure becomes a dialog
            message = first_line(error)
            log.error("%s: failed after the job: %s", title, message)
            self.show_error(title, message, "".join(traceback.format_exception(error)))

    def cancel_jobs(self) -> None:
        """Ask every running job to stop."""
        self.runner.cancel_all()
        self.job_label.setText("Cancelling…")

    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """Show an error dialog; boxes are kept so tests can find and close them."""
        box = show_error(self, title, message, details)
        self.error_boxes.append(box)
        box.finished.connect(lambda *_: self._forget_error_box(box))
        return box

    def _forget_error_box(self, box: QMessageBox) -> None:
        if box in self.error_boxes:
            self.error_boxes.remove(box)

    def _on_job_progressed(self, title: str, progress: Progress) -> None:
        fraction = progress.fraction
        if fraction is None:
            self.progress_bar.setRange(0, 0)
        else:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(fraction * 1000))
        self.job_label.setText(f"{title}: {progress.message}" if progress.message else title)

    def _on_job_failed(self, failure: JobFailure) -> None:
        self.show_error(failure.title, failure.message, failure.details)

    def _on_runner_busy_changed(self, busy: bool) -> None:
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if not busy:
            self.job_label.setText("")
            self.progress_bar.reset()

    # --- closing ---------------------------------------------------------------------------
    def confirm_close_during_job(self) -> bool:
        """Ask whether to cancel the running job and quit. Tests replace this method."""
        answer = QMessageBox.question(
            self,
            "A job is running",
            "A job is still running. Cancel it and quit?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.runner.is_busy:
            if not self.confirm_close_during_job():
                event.ignore()
                return
            self.runner.cancel_all()
            self.runner.wait(10000)
        self.log_panel.detach()
        event.accept()

    def _on_about_triggered(self) -> None:
        QMessageBox.about(
            self,
            "About segbench",
            f"segbench {__version__}: FlexRound quantization and RankSEG-RMA decisions for "
            "segmentation models.",
        )

"""File > Evaluate on a cluster: ``evaluate`` of the open models over a labelled folder on Ray.

The dialog takes a Ray address (empty: a Ray started on this computer), the images and labels
folders and the report file, runs :func:`core.evaluation.evaluate_cases` with the Ray executor
off the GUI thread, and shows the driver's progress: cases done out of the total, lost attempts
and retries, and each node's cases per minute. Cancel cancels the Ray tasks; the partial report
keeps every finished case, and "Resume" takes them back on the next start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.jobs import Progress
from gui.workers import JobFailure, JobRunner, JobWorker

__all__ = ["ClusterEvaluateDialog", "open_cluster_dialog"]

DEFAULT_DECISIONS = "argmax,rma-dice"


class ClusterEvaluateDialog(QDialog):
    """Point ``evaluate`` at a Ray cluster and watch it run.

    Parameters
    ----------
    model_paths : list of str
        Saved models to score (every node must read them).
    parent : QWidget, optional
    """

    def __init__(self, model_paths: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Evaluate on a cluster")
        self.setObjectName("clusterEvaluateDialog")
        self.model_paths = list(model_paths)
        self.runner = JobRunner(self, max_threads=1)
        self.worker: JobWorker | None = None
        self.report: dict[str, Any] | None = None

        self.address = QLineEdit(self)
        self.address.setPlaceholderText("empty: start Ray on this computer; or host:6379, auto")
        self.images = QLineEdit(self)
        self.labels = QLineEdit(self)
        self.report_path = QLineEdit(self)
        self.decisions = QLineEdit(DEFAULT_DECISIONS, self)
        self.resume = QCheckBox("Resume: keep the cases the report already holds", self)
        form = QFormLayout()
        form.addRow("Ray address", self.address)
        form.addRow("Images folder", self._with_browse(self.images, folder=True))
        form.addRow("Labels folder", self._with_browse(self.labels, folder=True))
        form.addRow("Report (JSON)", self._with_browse(self.report_path, folder=False))
        form.addRow("Decision rules", self.decisions)
        form.addRow("", self.resume)
        names = ", ".join(Path(p).name for p in self.model_paths) or "none (open or save a model)"
        form.addRow("Models", QLabel(names, self))

        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.nodes = QLabel("", self)
        self.nodes.setWordWrap(True)
        buttons = QDialogButtonBox(self)
        self.start_button = buttons.addButton("Start", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = buttons.addButton("Cancel run", QDialogButtonBox.ButtonRole.ActionRole)
        close = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        close.clicked.connect(self.close)
        self.cancel_button.setEnabled(False)
        self.start_button.setEnabled(bool(self.model_paths))

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.nodes)
        layout.addWidget(buttons)

    def _with_browse(self, edit: QLineEdit, *, folder: bool) -> QWidget:
        row = QWidget(self)
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(edit)
        browse = QPushButton("Browse…", row)

        def choose() -> None:
            if folder:
                chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
            else:
                chosen, _ = QFileDialog.getSaveFileName(
                    self, "Report file", edit.text(), "JSON (*.json)"
                )
            if chosen:
                edit.setText(chosen)

        browse.clicked.connect(choose)
        box.addWidget(browse)
        return row

    # --- running -----------------------------------------------------------------------------
    def _job_arguments(self) -> tuple[list[Any], Any, dict[str, Any]]:
        """Cases, settings and keyword arguments of the run; ValueError says what is wrong."""
        from core.cli.arguments import decision_list
        from core.cli.matching import expand_files, pair_cases
        from core.cluster import ClusterOptions
        from core.evaluation import EvaluationSettings

        images, labels = self.images.text().strip(), self.labels.text().strip()
        report = self.report_path.text().strip()
        if not images or not labels or not report:
            raise ValueError("choose the images folder, the labels folder and the report file")
        if not Path(report).parent.is_dir():
            raise ValueError(f"{report}: folder {Path(report).parent} does not exist")
        try:
            decisions = decision_list(self.decisions.text())
        except Exception as error:  # argparse.ArgumentTypeError: a plain message
            raise ValueError(f"decision rules: {error}") from None
        cases = pair_cases(expand_files([images], "images"), expand_files([labels], "labels"))
        if not cases.cases:
            raise ValueError(f"no image in {images} matched a label in {labels} by file name")
        resume = report if self.resume.isChecked() and Path(report).is_file() else None
        options = ClusterOptions(address=self.address.text().strip() or None)
        settings = EvaluationSettings(decisions=tuple(decisions))
        return cases.cases, settings, {"cluster": options, "resume": resume, "report": report}

    def start(self) -> None:
        """Start the run (a message in the dialog, not a traceback, when the inputs are wrong)."""
        from core.evaluation import evaluate_cases

        try:
            cases, settings, extra = self._job_arguments()
        except (ValueError, OSError) as error:
            self.status.setText(f"Cannot start: {error}")
            return
        self.report = None
        self.progress.setRange(0, len(cases))
        self.progress.setValue(0)
        self.status.setText(f"Starting {len(cases)} case(s) on Ray…")
        self.nodes.setText("")
        worker = JobWorker(
            evaluate_cases,
            cases,
            self.model_paths,
            settings,
            extra["report"],
            executor="ray",
            cluster=extra["cluster"],
            resume=extra["resume"],
            title="Evaluate on a cluster",
        )
        worker.signals.progressed.connect(self._on_progress)
        worker.signals.succeeded.connect(self._on_succeeded)
        worker.signals.failed.connect(self._on_failed)
        worker.signals.cancelled.connect(self._on_cancelled)
        worker.signals.finished.connect(self._on_finished)
        self.worker = worker
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.runner.start(worker)

    def cancel(self) -> None:
        """Cancel the run: its Ray tasks are cancelled, finished cases stay in the report."""
        if self.worker is not None:
            self.status.setText("Cancelling the Ray tasks…")
            self.worker.cancel()

    def _on_progress(self, progress: Progress) -> None:
        if progress.stage != "cases":
            return
        if progress.total:
            self.progress.setRange(0, progress.total)
        self.progress.setValue(progress.step)
        self.status.setText(progress.message)
        rates = [
            f"{key.removeprefix('cases/min ')}: {value:.1f} cases/min"
            for key, value in progress.values.items()
            if key.startswith("cases/min ")
        ]
        self.nodes.setText("Nodes: " + "; ".join(rates) if rates else "")

    def _on_succeeded(self, report: dict[str, Any]) -> None:
        self.report = report
        self.status.setText(
            f"Done: {len(report['cases'])} case(s), report written to {self.report_path.text()}"
        )

    def _on_failed(self, failure: JobFailure) -> None:
        self.status.setText(f"Failed: {failure.message}")

    def _on_cancelled(self) -> None:
        self.status.setText(
            "Cancelled. The report keeps the finished cases; tick Resume to continue."
        )

    def _on_finished(self) -> None:
        self.worker = None
        self.start_button.setEnabled(bool(self.model_paths))
        self.cancel_button.setEnabled(False)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        self.runner.cancel_all()
        self.runner.wait(30000)
        super().closeEvent(event)


def open_cluster_dialog(window: Any) -> ClusterEvaluateDialog:
    """Open the dialog on the saved models of ``window.session`` (non-blocking)."""
    paths = [
        str(v.model.path) for v in window.session.variants.values() if v.model.path is not None
    ]
    dialog = ClusterEvaluateDialog(list(dict.fromkeys(paths)), window)
    dialog.open()
    return dialog

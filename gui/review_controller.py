"""Reviewing a worklist in the workbench: the Cases panel, the Review menu and its keys.

Opening a worklist reads it and its saved review (:mod:`core.review`), shows the Cases panel and
resumes on the case the reviewer was on. Each case is read, and with a model open segmented
with the Segmentation panel's rule, on the worker (:func:`gui.review_jobs.load_review_case`);
as soon as a case is on screen the next one is read and segmented ahead of time, so moving on
shows it at once. Verdicts, comments, time spent and corrections (from
:class:`gui.mask_editor.MaskEditor`) are saved as they happen.

Keys: Alt+Down next case, Alt+Up previous, Alt+N next unreviewed, Alt+A accept, Alt+X reject.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu

from core.io import Image
from core.review import ReviewState, class_volumes, mask_result, read_worklist
from gui.review_jobs import LoadedCase, load_review_case
from gui.widgets.cases_panel import CasesPanel

if TYPE_CHECKING:
    from gui.workbench_window import WorkbenchWindow
    from gui.workers import JobWorker

__all__ = ["PREDICTION_FILE", "ReviewController", "open_review"]

log = logging.getLogger("segbench.review")

#: The results-table name of a prediction read from the worklist.
PREDICTION_FILE = "prediction file"
#: Cases kept read ahead of time (each holds an image, its masks and probabilities).
_CACHE_SIZE = 2


@dataclass(frozen=True)
class _PendingSave:
    """A corrected mask waiting to be written, with what its case's row said."""

    state: ReviewState
    name: str
    mask: np.ndarray
    image: Image
    edit_dice: float | None
    volumes: dict[str, float]


def open_review(path: str | Path) -> ReviewState:
    """Read a worklist and its saved review (a core job for ``run_job``)."""
    return ReviewState(read_worklist(path))


class ReviewController(QObject):
    """The worklist review of a :class:`gui.workbench_window.WorkbenchWindow`.

    Signals
    -------
    case_shown(str)
        A case is on screen with its masks.
    """

    case_shown = Signal(str)

    def __init__(self, window: WorkbenchWindow) -> None:
        super().__init__(window)
        self.window = window
        self.editor = window.mask_editor
        self.state: ReviewState | None = None
        self.current: str | None = None
        self.panel = CasesPanel(window)
        self.panel.reviewer_edit.setText(str(window.settings.value("review/reviewer", "")))
        self.dock = window.add_dock("Cases", self.panel, Qt.DockWidgetArea.RightDockWidgetArea)
        window.view_menu.addAction(self.dock.toggleViewAction())
        # A tab beside Overlay: a reviewer needs the case list more than the overlay settings.
        window.tabifyDockWidget(window.overlay_dock, self.dock)
        self.dock.hide()
        #: Read and segment the next case as soon as one is shown (off: only on request).
        self.read_ahead = True
        #: Seconds from asking for a case to seeing it, with whether it had been read ahead.
        self.waits: list[tuple[str, float, bool]] = []
        self._cache: dict[str, LoadedCase] = {}
        self._loading: dict[str, JobWorker] = {}
        self._wanted: str | None = None
        self._asked_at = 0.0
        self._opened_at: float | None = None
        self._saving = False  # a corrected mask is being written
        self._pending_save: _PendingSave | None = None  # the correction to write next
        self.panel.case_requested.connect(self.go_to)
        self.panel.step_requested.connect(self.step)
        self.panel.next_unreviewed_requested.connect(self.next_unreviewed)
        self.panel.status_requested.connect(self.set_status)
        self.panel.comment_edited.connect(self.set_comment)
        self.panel.reviewer_edited.connect(
            lambda name: window.settings.setValue("review/reviewer", name)
        )
        self.panel.export_requested.connect(self._on_export_requested)
        self.editor.corrected.connect(self._on_corrected)
        window.installEventFilter(self)
        self._build_menu()

    # --- menu -------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        window = self.window
        menu = QMenu("Revie&w", window)
        window.menuBar().insertMenu(window.view_menu.menuAction(), menu)
        self.open_action = QAction("Open &worklist…", window)
        self.open_action.triggered.connect(self._on_open_clicked)
        menu.addAction(self.open_action)
        open_csv = QAction("Open worklist &CSV…", window)
        open_csv.triggered.connect(self._on_open_csv_clicked)
        menu.addAction(open_csv)
        file_actions = window.file_menu.actions()
        window.file_menu.insertAction(file_actions[1] if len(file_actions) > 1 else None,
                                      self.open_action)  # fmt: skip
        menu.addSeparator()
        for text, key, slot in (
            ("&Next case", "Alt+Down", lambda: self.step(1)),
            ("&Previous case", "Alt+Up", lambda: self.step(-1)),
            ("Next &unreviewed case", "Alt+N", self.next_unreviewed),
            ("&Accept", "Alt+A", lambda: self.set_status("accepted")),
            ("&Reject", "Alt+X", lambda: self.set_status("rejected")),
        ):
            action = QAction(text, window)
            action.setShortcut(QKeySequence(key))
            action.triggered.connect(slot)
            menu.addAction(action)
        menu.addSeparator()
        export = QAction("&Export review…", window)
        export.triggered.connect(self._on_export_requested)
        menu.addAction(export)
        self.menu = menu

    def _on_open_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self.window, "Open worklist folder")
        if path:
            self.open_worklist(path)

    def _on_open_csv_clicked(self) -> None:
        path = QFileDialog.getOpenFileName(
            self.window, "Open worklist CSV", "", "Worklist (*.csv)"
        )[0]
        if path:
            self.open_worklist(path)

    # --- worklist ---------------------------------------------------------------------------
    def open_worklist(self, path: str | Path):
        """Read the worklist (folder or CSV) and its saved review on the worker, then resume."""

        def job(*, on_progress=None, cancel=None):
            return open_review(path)

        return self.window.run_job(job, title="Open worklist", on_success=self._start)

    def _start(self, state: ReviewState) -> None:
        self._leave()
        self.state = state
        self.current = None
        self._cache.clear()
        self.dock.show()
        self.dock.raise_()
        names = state.worklist.names
        first = state.current or state.next_case(None, unreviewed=True) or names[0]
        self.window.statusBar().showMessage(
            f"Worklist {state.worklist.source.name}: {len(names)} cases, review saved in "
            f"{state.folder}",
            8000,
        )
        self.go_to(first)

    def step(self, steps: int) -> None:
        """Open the case ``steps`` places after (before) the current one."""
        if self.state is not None:
            target = self.state.next_case(self.current, steps)
            if target is None:
                self.window.statusBar().showMessage("No more cases in this direction", 4000)
            else:
                self.go_to(target)

    def next_unreviewed(self) -> None:
        """Open the next case without a verdict."""
        if self.state is not None:
            target = self.state.next_case(self.current, unreviewed=True)
            if target is None:
                self.window.statusBar().showMessage("Every case has a verdict", 6000)
            else:
                self.go_to(target)

    def go_to(self, name: str) -> None:
        """Open case ``name``: at once when it was read ahead, else on the worker."""
        if self.state is None or name == self.current:
            return
        self._leave()
        self._wanted = name
        self._asked_at = time.perf_counter()
        self.state.set_current(name)
        if name in self._cache:
            self._show(self._cache.pop(name), prefetched=True)
        elif name not in self._loading:
            self._load(name, title=f"Open case {name}")
        # else: it is being read ahead; it shows when that job ends.

    def _load(self, name: str, *, title: str, ahead: bool = False) -> None:
        window = self.window
        case = self.state.worklist.case(name)
        request = window.segmentation_panel.request()
        variant = window.session.variants.get(request.variant)
        options = {
            "decision": request.decision,
            "pruning_prob": request.pruning_prob,
            "threshold": request.threshold,
            "per_slice": request.per_slice,
            "device": request.device,
        }

        def failed(failure) -> None:
            self._loading.pop(name, None)
            if name == self._wanted:
                window.show_error(failure.title, failure.message, failure.details)
            else:
                log.warning("reading %s ahead failed: %s", name, failure.message)

        self._loading[name] = window.run_job(
            load_review_case,
            case,
            self.state,
            model=None if variant is None else variant.model,
            variant=None if variant is None else variant.name,
            segment_options=options,
            title=title,
            on_success=self._on_loaded,
            on_failed=failed,
        )
        log.info("%s %s", "reading ahead" if ahead else "reading", name)

    def _on_loaded(self, loaded: LoadedCase) -> None:
        name = loaded.case.name
        self._loading.pop(name, None)
        if self.state is None or name not in self.state.cases:
            return
        if name == self._wanted and name != self.current:
            self._show(loaded, prefetched=False)
        else:
            self._cache[name] = loaded
            while len(self._cache) > _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))

    def _show(self, loaded: LoadedCase, *, prefetched: bool) -> None:
        window = self.window
        case = loaded.case
        window._on_image_read(str(case.image), loaded.opened, remember=False)
        truth = None
        if loaded.truth is not None:
            window._on_ground_truth_read(str(case.label), loaded.truth)
            truth = loaded.truth.labels.array
        model_key = None
        if loaded.prediction is not None:
            image = loaded.opened.image
            result = mask_result(
                loaded.prediction.labels.array,
                spacing=image.spacing,
                class_names=window.viewer.label_names,
                model_name=PREDICTION_FILE,
                decision=Path(case.prediction).name,
                reference=truth,
                natural=image.is_natural,
            )
            model_key = window.session.add_result(
                PREDICTION_FILE, result, loaded.prediction.labels
            ).key
        if loaded.segmented is not None:
            segmented = loaded.segmented
            entry = window.session.add_result(
                loaded.variant, segmented.result, segmented.labels, segmented.probs
            )
            model_key = entry.key
        shown = model_key
        if loaded.corrected is not None and model_key is not None:
            model_entry = window.session.results[model_key]
            shown = self.editor.start_correction(model_entry, mask=loaded.corrected).key
        if shown is not None:
            window.show_result(shown)
        self.current = case.name
        self._opened_at = time.monotonic()
        wait = time.perf_counter() - self._asked_at
        self.waits.append((case.name, wait, prefetched))
        log.info(
            "case %s on screen %.3f s after it was asked for (%s)",
            case.name,
            wait,
            "read ahead" if prefetched else "read now",
        )
        names = self.state.worklist.names
        position = names.index(case.name) + 1
        window.setWindowTitle(f"segbench — review {case.name} ({position} of {len(names)})")
        self._refresh_panel()
        self.case_shown.emit(case.name)
        following = self.state.next_case(case.name)
        if (
            self.read_ahead
            and following is not None
            and following not in self._cache | self._loading
        ):
            self._load(following, title=f"Read ahead {following}", ahead=True)

    def _refresh_panel(self) -> None:
        if self.state is not None:
            self.panel.show_rows(self.state.rows(), self.current)

    # --- verdicts, comments, time -----------------------------------------------------------
    @property
    def reviewer(self) -> str:
        """The reviewer's name from the settings."""
        return str(self.window.settings.value("review/reviewer", "") or "")

    def _leave(self) -> None:
        """Add the time spent on the current case (also on every save, so a kill loses little)."""
        if self.state is None or self.current is None or self._opened_at is None:
            return
        now = time.monotonic()
        self.state.add_seconds(self.current, now - self._opened_at)
        self._opened_at = now

    def _shown_volumes(self) -> None:
        entry = self.window.session.results.get(self.window.current_key or "")
        if entry is not None and self.current is not None:
            self.state.set_volumes(self.current, class_volumes(entry.result))

    def set_status(self, status: str) -> None:
        """Record a verdict on the current case (the volumes of the mask shown go with it)."""
        if self.state is None or self.current is None:
            return
        self._leave()
        self._shown_volumes()
        self.state.set_status(self.current, status, self.reviewer)
        self._refresh_panel()
        self.window.statusBar().showMessage(f"{self.current}: {status}", 4000)

    def set_comment(self, text: str) -> None:
        """Record the reviewer's comment on the current case."""
        if self.state is None or self.current is None:
            return
        if text != self.state.cases[self.current].comment:
            self.state.set_comment(self.current, text)
            self._refresh_panel()

    def _on_corrected(self, key: str) -> None:
        """Save the corrected mask of the current case on the worker, one save at a time.

        Strokes can come faster than a CT's mask is written: while a save runs, the latest
        stroke is remembered and saved when it ends, so the file always ends as the last
        stroke left it (two saves finishing out of order could leave an older one).
        """
        entry = self.window.session.results.get(key)
        if self.state is None or self.current is None or entry is None:
            return
        # The case's own arrays and readouts, as they are now: by the time an earlier save ends
        # the reviewer may be on another case, whose rows reuse the same keys.
        self._pending_save = _PendingSave(
            self.state,
            self.current,
            entry.labels.array,
            self.window.session.image,
            entry.result.mean_foreground("dice"),
            class_volumes(entry.result),
        )
        if not self._saving:
            self._save_pending()

    def _save_pending(self) -> None:
        pending, self._pending_save = self._pending_save, None
        if pending is None:
            return
        self._leave()
        mask = pending.mask.copy()  # later strokes must not change what is being written
        reviewer = self.reviewer

        def job(*, on_progress=None, cancel=None):
            return pending.state.save_corrected(
                pending.name,
                mask,
                pending.image,
                edit_dice=pending.edit_dice,
                volumes=pending.volumes,
                reviewer=reviewer,
            )

        def ended() -> None:
            self._saving = False
            self._refresh_panel()
            self._save_pending()

        self._saving = True
        self.window.run_job(job, title="Save correction", on_end=ended)

    # --- export and close -------------------------------------------------------------------
    def _on_export_requested(self) -> None:
        if self.state is None:
            self.window.show_error("Export review", "Open a worklist first.")
            return
        suggested = str(self.state.folder / "review_export.csv")
        path = self.window.ask_save_path("Export review", suggested, "CSV (*.csv);;JSON (*.json)")
        if path:
            self.export(path)

    def export(self, path: str | Path):
        """Write the review (one row per case) as CSV or JSON on the worker."""
        self._leave()
        state = self.state

        def job(*, on_progress=None, cancel=None):
            return state.export(path)

        return self.window.run_job(
            job,
            title="Export review",
            on_success=lambda _p: self.window.statusBar().showMessage(f"Saved {path}", 6000),
        )

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.window and event.type() == QEvent.Type.Close:
            self._leave()  # the time on the last case
        return False

"""The workbench: the main window with the viewer, the panels and the flows between them.

Every long action (reading an image, loading a model, inference, decisions, quantization) is a
core function run through :meth:`MainWindow.run_job`; the slots here only move results between
the session, the panels and the viewer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QUndoCommand,
    QUndoStack,
)
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QFileDialog,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from core.io import (
    Image,
    VolumeChoiceRequired,
    list_dicom_series,
    read_image,
    write_mask,
)
from core.io.dicom import series_titles
from core.io.errors import NO_DICOM_IMAGES
from core.models import LoadedModel, UntrustedCodeError, load_model
from core.models.frameworks import locate_framework_folder
from core.report_files import write_csv_atomic, write_json_atomic
from gui.calibration_flow import CalibrationFlow
from gui.display_jobs import (
    OpenedImage,
    OpenedMask,
    SegmentedImage,
    read_image_for_display,
    read_mask_for_display,
    segment_variant,
    with_default_window,
)
from gui.main_window import MainWindow
from gui.review_setup import install_review
from gui.session import ResultEntry, Session
from gui.widgets.calibration_panel import CalibrationPanel
from gui.widgets.cluster_dialog import open_cluster_dialog
from gui.widgets.compare_viewer import CompareViewer
from gui.widgets.data_panel import DataPanel
from gui.widgets.help_dialog import show_shortcuts
from gui.widgets.memory_indicator import MemoryIndicator
from gui.widgets.ortho_viewer import OrthoViewer, save_pixmap
from gui.widgets.overlay_panel import OverlayPanel
from gui.widgets.quantization_panel import QuantizationPanel
from gui.widgets.results_table import ResultsTable
from gui.widgets.segmentation_panel import DECISION_TITLES, SegmentationPanel
from gui.widgets.weight_scales_panel import WeightScalesPanel

__all__ = ["WorkbenchWindow"]

log = logging.getLogger("segbench.gui")

MODEL_SUFFIXES = (".json", ".safetensors", ".pt", ".pth", ".ts", ".onnx")
HINT_DEMO = (
    "Demo: a synthetic CT with a held-out label. Try: switch the decision rule (argmax vs "
    "RankSEG-RMA) and Run; quantize the model to W4 or W2 in the Quantization tab and segment "
    "with the variant; select two rows of the results table and Compare."
)
HINT_NATURAL_DEMO = (
    "Natural-image demo: discs and boxes pasted on a texture photograph. Compare argmax with "
    "RankSEG-RMA in the results table; quantize the small model in the Quantization tab."
)
HINT_DEFAULT = (
    "Open an image (Ctrl+O, or drop a file or DICOM folder here) and a model (Ctrl+M), then Run "
    "segmentation (Ctrl+R); open a ground truth (Ctrl+G) to see Dice/IoU; quantize the model "
    "and compare variants. File > Open CT demo shows every feature on a bundled CT."
)


def next_steps_hint(
    image_name: str,
    image: Image,
    model: LoadedModel | None,
    has_truth: bool,
    n_results: int = 0,
) -> str:
    """The hint line for the user's own image: what is open and what to do next."""
    parts = [f"{image_name} ({image.modality or 'modality unknown'}, {image.size_text()})."]
    if image.warnings:
        count = len(image.warnings)
        parts.append(f"{count} warning{'s' if count > 1 else ''} about this file: see Data.")
    if model is None:
        parts.append("Open a model (Ctrl+M) to segment it.")
    else:
        # The model still runs (core.models.model_input converts), but the user should know.
        if model.spec.in_channels == 3 and not image.is_rgb:
            parts.append(f"{model.name} takes RGB: this grey image is repeated on its channels.")
        elif model.spec.in_channels == 1 and image.is_rgb:
            parts.append(f"{model.name} takes one channel: this RGB image is turned into grey.")
        if n_results == 0:
            parts.append(f"Run segmentation (Ctrl+R) with {model.name};")
            parts.append(
                "ground truth loaded: Dice/IoU will be filled."
                if has_truth
                else "open a ground truth (Ctrl+G) to see Dice/IoU, or read E[Dice] without one."
            )
        else:
            parts.append(
                "Next: switch the decision rule (argmax vs RankSEG-RMA) and Run again; quantize "
                "the model in the Quantization tab and segment with the variant; select two rows "
                "of the results table and Compare."
            )
            if not has_truth:
                parts.append("Open a ground truth (Ctrl+G) for Dice/IoU.")
    return " ".join(parts)


MASK_FILTER = "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MHA (*.mha);;PNG (*.png)"


def _plain(fn, *args, **kwargs):
    """Wrap a plain function (no progress, no cancel) as a core job for run_job."""

    def job(*, on_progress=None, cancel=None):
        return fn(*args, **kwargs)

    return job


class WorkbenchWindow(MainWindow):
    """The main window with the image viewer, Data/Segmentation/Quantization panels, the
    results table and the weight-scale plots."""

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or QSettings()
        self.session = Session(self)
        self.current_key: str | None = None
        self._questions_open = 0  # volume/series questions waiting for an answer
        self.setAcceptDrops(True)

        # Central area: empty state / viewer / compare viewer, with a hint line above.
        self.viewer = OrthoViewer(self)
        self.compare_viewer = CompareViewer(self)
        self.central.addWidget(self.viewer)
        self.central.addWidget(self.compare_viewer)
        self._showing_demo = False  # a demo keeps its own hint line
        self._shown_choice = ""  # the volume or series of the open image, for title and hint
        self.hint = QLabel(HINT_DEFAULT, self)
        self.hint.setObjectName("hintLine")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("QLabel#hintLine { padding: 4px 8px; background: #fff8d6; }")
        container = QWidget(self)
        column = QVBoxLayout(container)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.hint)
        column.addWidget(self.central, 1)
        self.setCentralWidget(container)
        self.viewer.cursor_moved.connect(self._on_viewer_cursor_moved)
        self.compare_viewer.cursor_moved.connect(self._on_viewer_cursor_moved)

        # Panels.
        left = Qt.DockWidgetArea.LeftDockWidgetArea
        right = Qt.DockWidgetArea.RightDockWidgetArea
        bottom = Qt.DockWidgetArea.BottomDockWidgetArea
        self.data_panel = DataPanel(self.settings, self)
        self.segmentation_panel = SegmentationPanel(self.settings, self)
        self.quantization_panel = QuantizationPanel(run_job=self.run_job, settings=self.settings)
        self.overlay_panel = OverlayPanel(self.viewer, self)
        self.results_table = ResultsTable(self)
        self.weight_panel = WeightScalesPanel()
        self.data_dock = self.add_dock("Data", self.data_panel, left)
        self.segmentation_dock = self.add_dock("Segmentation", self.segmentation_panel, left)
        self.quantization_dock = self.add_dock(
            "Quantization", self.quantization_panel, left, scroll=True
        )
        self.overlay_dock = self.add_dock("Overlay", self.overlay_panel, right, scroll=True)
        self.tabifyDockWidget(self.data_dock, self.segmentation_dock)
        self.tabifyDockWidget(self.segmentation_dock, self.quantization_dock)
        self.segmentation_dock.raise_()
        self.results_dock = self.add_dock("Results", self.results_table, bottom)
        self.weights_dock = self.add_dock("Weight scales", self.weight_panel, bottom, scroll=True)
        # The live loss curve needs width and a readable height: in the left dock, under the
        # quantization settings, it had 45 px at 1400 x 900. It gets a bottom tab of its own.
        loss_curve = self.quantization_panel.loss_curve
        self.quantization_panel.layout().removeWidget(loss_curve)
        self.loss_dock = self.add_dock("Quantization loss", loss_curve, bottom)
        self.quantization_panel.run_started.connect(self.loss_dock.raise_)
        self.calibration_panel = CalibrationPanel()
        self.calibration_dock = self.add_dock("Calibration", self.calibration_panel, bottom)
        self.calibration_flow = CalibrationFlow(self, self.calibration_panel)
        self.tabifyDockWidget(self.results_dock, self.weights_dock)
        self.tabifyDockWidget(self.weights_dock, self.calibration_dock)
        self.tabifyDockWidget(self.calibration_dock, self.loss_dock)
        self.tabifyDockWidget(self.loss_dock, self.log_dock)
        self.results_dock.raise_()
        # Dock sizes are set on the first show unless the last session's layout is restored.
        self._docks_sized = self._restore_layout()
        # The weight-scale plots need room: raising their tab makes the bottom area taller, the
        # results table gives it back.
        self.weights_dock.visibilityChanged.connect(self._on_weights_dock_visibility_changed)
        for dock in (
            self.data_dock,
            self.segmentation_dock,
            self.quantization_dock,
            self.overlay_dock,
            self.results_dock,
            self.weights_dock,
            self.calibration_dock,
            self.loss_dock,
        ):
            self.view_menu.addAction(dock.toggleViewAction())

        self.data_panel.image_requested.connect(self.open_image)
        self.data_panel.folder_requested.connect(self.open_dicom_folder)
        self.data_panel.ground_truth_requested.connect(self.open_ground_truth)
        self.data_panel.model_requested.connect(self.open_model)
        self.segmentation_panel.run_requested.connect(self.run_segmentation)
        self.segmentation_panel.cancel_requested.connect(self.cancel_jobs)
        self.results_table.result_selected.connect(self.show_result)
        self.results_table.compare_requested.connect(self.compare_results)
        self.results_table.export_requested.connect(self._on_export_requested)
        self.results_table.save_mask_requested.connect(self._on_save_mask_requested)
        self.results_table.remove_requested.connect(self.remove_results)
        # Removing results is undoable; a new image starts a new history (its results are new).
        self.undo_stack = QUndoStack(self)
        self.session.image_changed.connect(lambda _image: self.undo_stack.clear())
        self.quantization_panel.variant_created.connect(self._on_variant_created)
        self.session.variants_changed.connect(self._on_session_variants_changed)
        self.session.results_changed.connect(self._on_session_results_changed)
        self.runner.busy_changed.connect(self.segmentation_panel.set_busy)
        self.memory_indicator = MemoryIndicator(self)
        self.statusBar().addPermanentWidget(self.memory_indicator)
        self.memory_indicator.free_requested.connect(self.release_probabilities)
        self.session.memory_changed.connect(self._on_session_memory_changed)
        self._build_workbench_menus()
        install_review(self)  # corrections toolbar, Cases panel, Review menu

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._docks_sized:
            # Dock sizes only stick once the window has its geometry: give the views most of
            # the height (the table needs a few rows) and the side panels a compact width.
            self._docks_sized = True
            self.resizeDocks([self.results_dock], [220], Qt.Orientation.Vertical)
            # Side panels a quarter of the width each at most (330 and 340 px at 1400 x 900,
            # 300 and 310 at 1280 x 800): the views keep the middle half.
            width = self.width()
            self.resizeDocks(
                [self.data_dock, self.overlay_dock],
                [min(330, int(width * 0.235)), min(340, int(width * 0.243))],
                Qt.Orientation.Horizontal,
            )
            # An image opened before the first layout was fitted to a view of the wrong size.
            QTimer.singleShot(0, self._fit_views)

    def _restore_layout(self) -> bool:
        """Window size and dock layout from the last session; False when there is none."""
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if geometry is None or state is None:
            return False
        return bool(self.restoreGeometry(geometry) and self.restoreState(state))

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().closeEvent(event)
        if event.isAccepted():
            self.settings.setValue("window/geometry", self.saveGeometry())
            self.settings.setValue("window/state", self.saveState())

    def _give_keys_to_views(self) -> None:
        """Slice, preset and overlay keys act on the views without a click first: the views
        take the keyboard focus unless the user is typing in a field."""
        focused = QApplication.focusWidget()
        typing = isinstance(focused, QLineEdit | QAbstractSpinBox | QTextEdit | QPlainTextEdit)
        if not typing or focused.isReadOnly():  # the log is read-only: not typing there
            self.viewer.focus_active_view()

    def _fit_views(self) -> None:
        if self.session.image is not None:
            self.viewer.reset_zoom()

    def _on_weights_dock_visibility_changed(self, visible: bool) -> None:
        if self._docks_sized and not self.weights_dock.isFloating():
            height = int(self.height() * 0.5) if visible else 220
            self.resizeDocks([self.results_dock], [height], Qt.Orientation.Vertical)

    # --- menus -----------------------------------------------------------------------------
    def _build_workbench_menus(self) -> None:
        first = self.file_menu.actions()[0] if self.file_menu.actions() else None

        def action(text, slot, shortcut=None):
            act = QAction(text, self)
            if shortcut is not None:
                act.setShortcut(shortcut)
            act.triggered.connect(slot)
            self.file_menu.insertAction(first, act)
            return act

        self.open_action = action(
            "&Open image…", self.data_panel._on_open_image_clicked, QKeySequence.StandardKey.Open
        )
        action("Open &DICOM folder…", self.data_panel._on_open_folder_clicked)
        action("Open &ground truth…", self.data_panel._on_open_gt_clicked, "Ctrl+G")
        action("Open &model…", self.data_panel._on_open_model_clicked, "Ctrl+M")
        self.save_mask_action = action(
            "&Save mask…", self._on_save_mask_requested, QKeySequence.StandardKey.Save
        )
        action("&Export results table…", self._on_export_requested, "Ctrl+E")
        action("Evaluate on a &cluster…", lambda: open_cluster_dialog(self))
        action("Save screens&hot…", self._on_screenshot_requested, "Ctrl+Shift+S")
        action("Open CT &demo", lambda: self.load_demo())
        action("Open &natural-image demo", lambda: self.load_demo(natural=True))
        self.file_menu.insertSeparator(first)
        self.run_action = QAction("&Run segmentation", self)
        self.run_action.setShortcut("Ctrl+R")
        self.run_action.triggered.connect(self.segmentation_panel._on_run_clicked)
        self.addAction(self.run_action)
        edit_menu = QMenu("&Edit", self)
        self.menuBar().insertMenu(self.view_menu.menuAction(), edit_menu)
        undo = self.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "&Redo")
        # Ctrl+Y or Ctrl+Shift+Z by platform: offer both.
        redo.setShortcuts([QKeySequence("Ctrl+Y"), QKeySequence("Ctrl+Shift+Z")])
        edit_menu.addActions([undo, redo])
        self.edit_menu = edit_menu
        self.keep_probs_action = QAction("Keep probabilities of every model variant", self)
        self.keep_probs_action.setCheckable(True)
        self.keep_probs_action.setToolTip(
            "Off: only the variant segmented last keeps its probabilities (hundreds of MB on a "
            "CT); switching the rule on another variant runs its network again."
        )
        self.keep_probs_action.toggled.connect(self._on_keep_probs_toggled)
        self.keep_probs_action.setChecked(
            self.settings.value("results/keep_all_probabilities", False, type=bool)
        )
        free = QAction("&Free cached probabilities", self)
        free.triggered.connect(self.release_probabilities)
        edit_menu.addSeparator()
        edit_menu.addActions([self.keep_probs_action, free])
        shortcuts = QAction("&Shortcuts", self)
        shortcuts.setShortcut(QKeySequence.StandardKey.HelpContents)
        shortcuts.triggered.connect(lambda: show_shortcuts(self))
        self.help_menu.insertAction(self.help_menu.actions()[0], shortcuts)

    # --- dialogs that tests replace --------------------------------------------------------
    def ask_volume(self, path: str, choice: VolumeChoiceRequired) -> int | None:
        how = f" ({choice.detail})" if choice.detail else ""
        count = choice.count
        value, ok = QInputDialog.getInt(
            self,
            "Several volumes",
            f"{Path(path).name}: {choice.summary}{how}.\nOpen which one (0 to {count - 1})?",
            0,
            0,
            count - 1,
        )
        return value if ok else None

    def ask_series(self, folder: str, series: list) -> str | None:
        # Number, description, modality, slices, columns x rows, date: no two entries alike.
        items = series_titles(series)
        item, ok = QInputDialog.getItem(
            self, "DICOM series", f"{Path(folder).name} holds several series:", items, 0, False
        )
        return series[items.index(item)].uid if ok else None

    @property
    def is_asking(self) -> bool:
        """True while a question (which volume, which series) waits for the user."""
        return self._questions_open > 0

    def _asked(self, question: Callable[[], Any]) -> Any:
        """Ask through ``question()``, counting it as open meanwhile (see :attr:`is_asking`)."""
        self._questions_open += 1
        try:
            return question()
        finally:
            self._questions_open -= 1

    def ask_trust(self, message: str) -> bool:
        answer = QMessageBox.warning(
            self,
            "Untrusted model file",
            f"{message}.\n\nLoad it anyway? Only do this for files from a source you trust.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def ask_save_path(self, title: str, suggested: str, file_filter: str) -> str:
        return QFileDialog.getSaveFileName(self, title, suggested, file_filter)[0]

    # --- opening ---------------------------------------------------------------------------
    def open_image(self, path: str, *, series: str | None = None, volume: int | None = None):
        """Read an image on the worker; a 4-D file asks which volume first, a DICOM folder
        which series (unless ``series`` names it)."""
        if Path(path).is_dir():
            return self.open_dicom_folder(path, series=series, volume=volume)
        return self._read_image(path, series=series, volume=volume)

    def _read_image(
        self,
        path: str,
        *,
        series: str | None = None,
        volume: int | None = None,
        shown: str = "",
    ):
        """Read ``path`` on the worker; ``shown`` names the series or volume for the title."""

        def on_failed(failure):
            several = failure.exception
            if isinstance(several, VolumeChoiceRequired) and volume is None:
                chosen = self._asked(lambda: self.ask_volume(path, several))
                if chosen is not None:
                    what = f"volume {chosen} of 0-{several.count - 1}"
                    self._read_image(
                        path,
                        series=series,
                        volume=chosen,
                        shown=f"{shown}, {what}" if shown else what,
                    )
                return
            self.show_error(failure.title, failure.message, failure.details)

        if volume is not None and not shown:
            shown = f"volume {volume}"
        return self.run_job(
            read_image_for_display,
            path,
            series=series,
            volume=volume,
            title="Open image",
            on_success=lambda opened: self._on_image_read(path, opened, shown=shown),
            on_failed=on_failed,
        )

    def open_dicom_folder(
        self, folder: str, *, series: str | None = None, volume: int | None = None
    ):
        """List the folder's series on the worker, ask which one when there are several (or
        take ``series``, a SeriesInstanceUID), then read it."""

        def on_listed(found):
            if not found:
                self.show_error("Open DICOM folder", f"{folder}: {NO_DICOM_IMAGES}")
                return
            if series is not None:
                matches = [s for s in found if s.uid == series]
                if not matches:
                    listed = "\n".join(series_titles(found))
                    self.show_error(
                        "Open DICOM folder",
                        f"{folder}: no series with UID {series}",
                        f"Series in this folder:\n{listed}",
                    )
                    return
                chosen = matches[0]
            elif len(found) == 1:
                chosen = found[0]
            else:
                uid = self._asked(lambda: self.ask_series(folder, found))
                chosen = next((s for s in found if s.uid == uid), None)
            if chosen is not None:
                shown = f"series {chosen.title()}" if len(found) > 1 else ""
                self._read_image(folder, series=chosen.uid, volume=volume, shown=shown)

        return self.run_job(
            _plain(list_dicom_series, folder), title="List DICOM series", on_success=on_listed
        )

    def open_ground_truth(self, path: str):
        image = self.session.image
        if image is None:
            self.show_error("Open ground truth", "Open an image first: a ground truth needs one.")
            return None
        return self.run_job(
            read_mask_for_display,
            path,
            image,
            title="Open ground truth",
            on_success=lambda opened: self._on_ground_truth_read(path, opened),
        )

    def open_model(self, path: str, *, trust: bool = False):
        def on_failed(failure):
            if isinstance(failure.exception, UntrustedCodeError) and not trust:
                if self.ask_trust(failure.message):
                    self.open_model(path, trust=True)
                return
            self.show_error(failure.title, failure.message, failure.details)

        return self.run_job(
            _plain(load_model, path, trust=trust),
            title="Open model",
            on_success=self._on_model_loaded,
            on_failed=on_failed,
        )

    def load_demo(self, *, segment: bool = True, natural: bool = False) -> None:
        """Open a bundled demo (the CT phantom, or the natural-image one) with its label and
        model, then segment it with argmax and RankSEG-RMA."""
        from core.demo import demo_paths

        paths = demo_paths()
        missing = paths.natural_missing() if natural else paths.missing()
        if missing:
            self.show_error("Demo", f"demo files missing: {', '.join(str(p) for p in missing)}")
            return
        image_path = paths.natural_image if natural else paths.image
        label_path = paths.natural_label if natural else paths.label
        model_path = paths.natural_model if natural else paths.model

        def job(*, on_progress=None, cancel=None):
            opened = with_default_window(read_image(image_path))
            mask = read_mask_for_display(label_path, opened.image)
            return opened, mask, load_model(model_path)

        def loaded(result):
            opened, mask, model = result
            self._showing_demo = True
            self._on_image_read(str(image_path), opened, remember=False)
            if not natural:
                self.viewer.apply_preset("1")  # soft tissue: the demo is a CT
            self._on_ground_truth_read(str(label_path), mask)
            self._on_model_loaded(model)
            self.hint.setText(HINT_NATURAL_DEMO if natural else HINT_DEMO)
            if segment:
                self._segment_demo()

        self.run_job(job, title="Open demo", on_success=loaded)

    def _segment_demo(self) -> None:
        base = self.session.base_variant
        if base is None:
            return
        # Argmax first (it runs the network), then RMA reuses the cached probabilities; RMA is
        # shown last, as the first thing the user sees.
        self.run_segmentation_with(
            base.name,
            "argmax",
            then=lambda: self.run_segmentation_with(
                base.name, "rma-dice", pruning_prob=self.segmentation_panel.pruning_spin.value()
            ),
        )

    def _on_image_read(
        self, path: str, opened: OpenedImage, *, remember: bool = True, shown: str = ""
    ) -> None:
        image = opened.image
        previous = self.session.image

        def show() -> None:
            # Both viewers take the window computed on the worker: no pass over the volume here.
            self.viewer.set_image(image, window=opened.window, presets=opened.presets)
            self.compare_viewer.set_image(image, window=opened.window, presets=opened.presets)

        self._views_first(show, lambda: self._restore_views(previous))
        if remember:  # the user's own file: the hint line follows what they have open
            self._showing_demo = False
        self.session.set_image(image)
        self.viewer.set_prediction(None)
        self.viewer.set_ground_truth(None)
        self.current_key = None
        self.central.setCurrentWidget(self.viewer)
        QTimer.singleShot(0, self._fit_views)  # once the viewer is laid out at its real size
        self._give_keys_to_views()
        self.data_panel.show_image(image)
        self.data_panel.show_ground_truth(None)
        self.quantization_panel.set_image(image)
        if remember:
            self.data_panel.remember(path)
        for warning in image.warnings:
            log.warning("%s: %s", Path(path).name, warning)
        # Which volume of a 4-D file or which series of a folder: the title and the hint say it.
        self._shown_choice = shown
        self.setWindowTitle(f"segbench — {Path(path).name}" + (f" — {shown}" if shown else ""))
        size = image.size_text()
        if not image.is_natural:  # a photograph's pixels have no size in mm
            size += f" of {' x '.join(f'{s:.3g}' for s in image.spacing)} mm"
        self.statusBar().showMessage(f"Opened {Path(path).name}: {size}", 6000)
        self._update_hint()

    @staticmethod
    def _views_first(show: Callable[[], None], restore: Callable[[], None]) -> None:
        """Update the views before the session: what they cannot show leaves both as they were.

        On failure the views are restored and the error goes on to run_job's guard, which turns
        it into the error dialog.
        """
        try:
            show()
        except Exception:
            restore()
            raise

    def _restore_views(self, image: Image | None) -> None:
        """Show the session's image, ground truth and current result again after a failed open."""
        if image is None:
            self.viewer.clear()
            self.compare_viewer.clear()
            return
        self.viewer.set_image(image)
        self.compare_viewer.set_image(image)
        self.viewer.set_ground_truth(self.session.ground_truth)
        if self.current_key in self.session.results:
            self.viewer.set_prediction(self.session.results[self.current_key].labels)

    def _update_hint(self) -> None:
        """Say what to do next with the user's own files (the demos keep their own hint)."""
        if self._showing_demo:
            return
        image = self.session.image
        if image is None:
            self.hint.setText(HINT_DEFAULT)
            return
        name = Path(image.path).name if image.path is not None else "image"
        if self._shown_choice:
            name += f" — {self._shown_choice}"
        has_truth = self.session.ground_truth is not None
        base = self.session.base_variant
        model = base.model if base is not None else None
        self.hint.setText(next_steps_hint(name, image, model, has_truth, len(self.session.results)))

    def _on_ground_truth_read(self, path: str, opened: OpenedMask) -> None:
        labels = opened.labels  # prepared on the worker, shared by every view
        previous = self.session.ground_truth

        def show(truth) -> None:
            self.viewer.set_ground_truth(truth)
            self.compare_viewer.set_ground_truth(truth)

        self._views_first(lambda: show(labels), lambda: show(previous))
        self.viewer.set_ground_truth_names(opened.mask.names)
        self.session.set_ground_truth(labels.array, path)
        self.data_panel.show_ground_truth(path, list(opened.mask.warnings), opened.mask.names)
        # With a ground truth, show the prediction filled and the truth outlined.
        self.viewer.set_overlay_mode("both")
        self.compare_viewer.set_overlay_mode("both")
        self._update_hint()

    def _on_model_loaded(self, model: LoadedModel) -> None:
        base = self.session.base_variant
        old_spec = base.model.spec if base is not None else None

        def show(spec) -> None:
            colors = [tuple(int(v) for v in c) for c in spec.class_colors]
            self.viewer.set_labels(spec.class_names, colors)
            self.compare_viewer.set_labels(spec.class_names, colors)

        self._views_first(lambda: show(model.spec), lambda: old_spec is not None and show(old_spec))
        self.session.set_model(model)
        self.data_panel.show_model(model)
        # Quantized variants belong to the model they came from: a new model starts afresh.
        self.quantization_panel.clear_variants()
        for name in self.weight_panel.variant_names():
            self.weight_panel.remove_variant(name)
        self.quantization_panel.set_model(model)
        self._update_hint()

    # --- segmentation ----------------------------------------------------------------------
    def run_segmentation(self, request) -> None:
        self.run_segmentation_with(
            request.variant,
            request.decision,
            pruning_prob=request.pruning_prob,
            threshold=request.threshold,
            per_slice=request.per_slice,
            device=request.device,
            backend=request.backend,
        )

    def run_segmentation_with(
        self, variant_name: str, decision: str, *, then=None, backend=None, **options
    ):
        image = self.session.image
        variant = self.session.variants.get(variant_name)
        if image is None or variant is None:
            self.show_error(
                "Run segmentation",
                "Open an image and a model first."
                if image is None or not self.session.variants
                else f"no model variant named {variant_name!r}",
            )
            return None
        backend = backend or variant.model.backend
        if backend == "torch" and variant.model.backend == "onnxruntime":
            # An opened .onnx file or deploy folder has no torch network: it runs where it can,
            # and the row's backend column says so.
            self.statusBar().showMessage(
                f"{variant_name} is ONNX networks only: it runs in ONNX Runtime", 10000
            )
            backend = "onnxruntime"
        name = variant.result_name(backend)
        title = f"Segment: {name} + {DECISION_TITLES.get(decision, decision)}"
        probs = self.session.cached_probs(name)
        if probs is None and not self.session.keep_all_probabilities:
            # This variant's network runs: another variant's probabilities (hundreds of MB on a
            # CT) would be dropped when its result arrives anyway, and only add to the job's peak.
            self.session.release_probabilities()

        def done(segmented: SegmentedImage) -> None:
            result = segmented.result
            if "inference" not in result.timings:  # reused probabilities: the run that made them
                earlier = [
                    e.result.timings["inference"]
                    for e in self.session.results.values()
                    if e.variant == name and "inference" in e.result.timings
                ]
                if earlier:
                    result.timings["inference"] = earlier[-1]
            entry = self.session.add_result(name, result, segmented.labels, segmented.probs)
            self.show_result(entry.key)
            for warning in segmented.result.warnings:  # e.g. ground-truth labels the model lacks
                log.warning("%s: %s", entry.key, warning)
                self.statusBar().showMessage(f"Warning: {warning}", 15000)
            if then is not None:
                then()

        return self.run_job(
            segment_variant,
            variant,
            backend,
            image,
            title=title,
            on_success=done,
            decision=decision,
            ground_truth=self.session.ground_truth,
            probs=probs,
            model_decision=self.session.cached_model_decision(name) if probs is not None else None,
            **options,
        )

    def show_result(self, key: str) -> None:
        entry = self.session.results.get(key)
        if entry is None:
            return
        self.current_key = key
        if self.central.currentWidget() is not self.viewer:
            self.central.setCurrentWidget(self.viewer)
            self.overlay_panel.bind(self.viewer)
        # Selecting the row below calls back here: draw the overlays once.
        if self.viewer.prediction() is not entry.labels.array:
            self.viewer.set_prediction(entry.labels)
        self.results_table.select(key)
        self.statusBar().showMessage(f"Showing {key}", 4000)

    def remove_results(self, keys: list[str]) -> None:
        """Remove results from the table, undoably (Edit > Undo puts them back)."""
        keys = [key for key in keys if key in self.session.results]
        if keys:
            self.undo_stack.push(_RemoveResults(self, keys))

    def _after_results_removed(self) -> None:
        if self.central.currentWidget() is self.compare_viewer:
            self.central.setCurrentWidget(self.viewer)
            self.overlay_panel.bind(self.viewer)
        if self.current_key in self.session.results:
            return
        remaining = list(self.session.results)
        if remaining:
            self.show_result(remaining[-1])
        else:
            self.current_key = None
            self.viewer.set_prediction(None)

    def compare_results(self, left: str, right: str) -> None:
        a, b = self.session.results[left], self.session.results[right]
        self.compare_viewer.set_results(a.labels, a.key, b.labels, b.key)
        self.compare_viewer.set_window(*self.viewer.window)  # keep the user's window/level
        self.central.setCurrentWidget(self.compare_viewer)
        self.compare_viewer.left.focus_active_view()  # T, slice and preset keys at once
        self.overlay_panel.bind(self.compare_viewer)

    def _on_session_results_changed(self) -> None:
        self.results_table.set_entries(list(self.session.results.values()), self.current_key)
        self._update_hint()

    def _on_session_memory_changed(self) -> None:
        memory = self.session.memory()
        self.memory_indicator.show_memory(memory.masks, memory.probabilities)

    def release_probabilities(self) -> None:
        """Drop the cached probabilities (the Free button and Edit > Free cached probabilities)."""
        released = self.session.release_probabilities()
        if released:
            self.statusBar().showMessage(f"Freed {released / 1e6:.0f} MB of probabilities", 6000)

    def _on_keep_probs_toggled(self, keep: bool) -> None:
        self.session.keep_all_probabilities = keep
        self.settings.setValue("results/keep_all_probabilities", keep)

    def _on_session_variants_changed(self) -> None:
        self.segmentation_panel.set_variants(list(self.session.variants))

    def _on_variant_created(self, name: str, model: LoadedModel, quant_result: Any) -> None:
        variant = self.session.add_variant(name, model, quant_result)
        self.weight_panel.add_variant(variant.name, quant_result)
        self.segmentation_panel.set_variants(list(self.session.variants), variant.name)
        self.statusBar().showMessage(f"Quantized variant ready: {variant.name}", 6000)

    # --- saving ----------------------------------------------------------------------------
    def save_mask(self, key: str, path: str) -> None:
        entry = self.session.results[key]
        image = self.session.image
        self.run_job(
            _plain(
                write_mask,
                entry.result.mask,
                path,
                reference=image,
                class_names=self.viewer.label_names,
                colors=self.viewer.label_colors,
            ),
            title="Save mask",
            on_success=lambda _: self.statusBar().showMessage(f"Saved {path}", 6000),
        )

    def export_table(self, path: str) -> None:
        entries = list(self.session.results.values())
        if path.lower().endswith(".json"):
            data = {
                "image": str(self.session.image.path) if self.session.image else None,
                "ground_truth": self.session.ground_truth_path,
                "results": [{"variant": e.variant, **e.result.to_dict()} for e in entries],
            }
            job = _plain(write_json_atomic, data, path)
        else:
            job = _plain(
                write_csv_atomic, self.results_table.rows, self.results_table.columns, path
            )
        self.run_job(
            job,
            title="Export results",
            on_success=lambda _: self.statusBar().showMessage(f"Saved {path}", 6000),
        )

    def _on_save_mask_requested(self) -> None:
        key = self.current_key
        if key is None or self.session.image is None:
            self.show_error("Save mask", "Select a result row to save its mask.")
            return
        image = self.session.image
        suffix = ".png" if image.is_natural else ".nii.gz"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")
        suggested = str(Path(str(image.path)).with_name(f"{stem}_mask{suffix}"))
        path = self.ask_save_path(
            "Save mask",
            suggested,
            "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MHA (*.mha);;PNG (*.png);;DICOM SEG (*.dcm)",
        )
        if path:
            self.save_mask(key, path)

    def _on_export_requested(self) -> None:
        if not self.session.results:
            self.show_error("Export results", "There are no results to export yet.")
            return
        path = self.ask_save_path("Export results", "results.csv", "CSV (*.csv);;JSON (*.json)")
        if path:
            self.export_table(path)

    def _on_screenshot_requested(self) -> None:
        path = self.ask_save_path("Save screenshot", "views.png", "PNG (*.png)")
        if path:
            try:
                save_pixmap(self.central.currentWidget().grab(), path)
            except (ValueError, OSError) as error:
                self.show_error("Save screenshot", str(error))

    # --- viewer glue -----------------------------------------------------------------------
    def _on_viewer_cursor_moved(self, info) -> None:
        self.cursor_label.setText(info.text())

    # --- drag and drop ---------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            self.open_dropped(url.toLocalFile())

    def open_dropped(self, path: str) -> None:
        """A dropped folder is a DICOM series (or a model folder, ours or a framework's, such as
        an nnU-Net trained model folder); files go by their suffix."""
        p = Path(path)
        if p.is_dir():
            if (p / "model.json").exists() or locate_framework_folder(p) is not None:
                self.open_model(path)
            else:
                self.open_dicom_folder(path)
        elif p.suffix.lower() in MODEL_SUFFIXES:
            self.open_model(path)
        else:
            self.open_image(path)


class _RemoveResults(QUndoCommand):
    """Take results out of the table; undo puts each back at its row and shows the first."""

    def __init__(self, window: WorkbenchWindow, keys: list[str]) -> None:
        text = f"Remove {keys[0]}" if len(keys) == 1 else f"Remove {len(keys)} results"
        super().__init__(text)
        self._window = window
        self._keys = keys
        self._removed: list[tuple[int, ResultEntry]] = []

    def redo(self) -> None:
        session = self._window.session
        self._removed = [session.remove_result(k) for k in self._keys if k in session.results]
        self._window._after_results_removed()

    def undo(self) -> None:
        # Reverse order: each recorded row is where the entry sat when it was removed.
        for index, entry in reversed(self._removed):
            self._window.session.restore_result(index, entry)
        if self._removed:
            self._window.show_result(self._removed[0][1].key)

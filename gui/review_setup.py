"""Add corrections and worklist review to the workbench window (one call from its constructor).

Corrections (the Corrections toolbar and :class:`gui.mask_editor.MaskEditor`) work on any result
the window shows; the review (:class:`gui.review_controller.ReviewController`, the Cases panel
and the Review menu) goes through worklists and saves verdicts and corrections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gui.mask_editor import MaskEditor
from gui.review_controller import ReviewController
from gui.widgets.correction_toolbar import CorrectionToolbar

if TYPE_CHECKING:
    from gui.workbench_window import WorkbenchWindow

__all__ = ["install_review"]


def install_review(window: WorkbenchWindow) -> None:
    """Give ``window`` its ``mask_editor``, ``correction_toolbar`` and ``review`` attributes."""
    editor = MaskEditor(window)
    toolbar = CorrectionToolbar(window)
    window.addToolBar(toolbar)
    toolbar.tool_changed.connect(editor.set_tool)
    toolbar.radius_changed.connect(lambda radius: setattr(editor, "radius_mm", radius))
    toolbar.label_changed.connect(lambda label: setattr(editor, "label", label))
    window.viewer.labels_changed.connect(lambda: toolbar.set_labels(window.viewer.label_names))
    toolbar.set_labels(window.viewer.label_names)
    editor.refused.connect(lambda words: window.statusBar().showMessage(words, 6000))
    window.view_menu.addAction(toolbar.toggleViewAction())
    window.mask_editor = editor
    window.correction_toolbar = toolbar
    window.review = ReviewController(window)

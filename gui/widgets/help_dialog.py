"""Help > Shortcuts: every keyboard shortcut of the workbench in one table."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

__all__ = ["NUMBERING", "SHORTCUTS", "show_shortcuts"]

SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Ctrl+O", "Open image"),
    ("Ctrl+G", "Open ground truth"),
    ("Ctrl+M", "Open model"),
    ("Ctrl+R", "Run segmentation with the panel's settings"),
    ("Ctrl+S", "Save the selected result's mask (NIfTI/NRRD/MHA/PNG, DICOM SEG of a series)"),
    ("Ctrl+E", "Export the results table (CSV or JSON)"),
    ("Ctrl+Shift+S", "Save a screenshot of the views"),
    ("Del", "Remove the selected results from the table"),
    ("Ctrl+Z", "Undo removing results or a correction stroke (Edit menu)"),
    ("Ctrl+Y, Ctrl+Shift+Z", "Redo"),
    ("Mouse wheel, PgUp/PgDn, Up/Down", "Previous/next slice in the view under the mouse"),
    ("Left click / drag", "Move the crosshair (all views follow)"),
    ("Shift+PgUp/PgDn, Shift+arrows", "Ten slices at a time"),
    ("Right drag or Ctrl+drag", "Window/level: horizontal = width, vertical = level"),
    ("Middle drag or Shift+drag, Ctrl+wheel", "Pan, zoom"),
    ("Home", "Fit the slices to the views again"),
    ("Double click, M", "Maximise a view / back to three views"),
    (
        "1 … 6",
        "Window presets, listed in the Overlay panel: for CT 1 soft tissue, 2 lung, 3 bone, "
        "4 brain, 5 liver, 6 bone (narrow), in HU; for MR and photographs 1 the 1–99 "
        "percentiles, 2 the full range",
    ),
    ("0", "Default window (DICOM window or 0.1–99.9 percentiles)"),
    ("O", "Toggle the overlay"),
    ("F", "Filled / outline overlay"),
    ("T", "Compare: toggle which result is shown"),
    ("N, B, E, K, X", "Corrections: navigate, paint, erase, fill a closed region, delete a blob"),
    ("[ / ]", "Smaller / larger brush"),
    ("Alt+Down / Alt+Up", "Review: next / previous case of the worklist"),
    ("Alt+N", "Review: next case without a verdict"),
    ("Alt+A / Alt+X", "Review: accept / reject the case"),
    ("Ctrl+Q", "Quit (asks first while a job runs)"),
)


#: How slices and voxels are numbered, the same in every counter and readout.
NUMBERING = (
    "Slice counters (\u201cAxial 24 of 0\u201347\u201d), the IJK readout and the command "
    "line's --volume all count from 0, as nibabel, numpy and ITK do. The keys act on the view "
    "that has the keyboard (the axial view when an image opens, then the last one clicked)."
)


def shortcuts_html() -> str:
    rows = "".join(
        f"<tr><td style='padding-right:16px'><b>{keys}</b></td><td>{what}</td></tr>"
        for keys, what in SHORTCUTS
    )
    return f"<table>{rows}</table><p>{NUMBERING}</p>"


def show_shortcuts(parent: QWidget | None = None) -> QDialog:
    """Show the shortcut table in a non-blocking dialog and return it."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Keyboard shortcuts")
    dialog.setObjectName("shortcutsDialog")
    layout = QVBoxLayout(dialog)
    text = QLabel(shortcuts_html(), dialog)
    text.setWordWrap(True)
    text.setMaximumWidth(640)
    layout.addWidget(text)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
    buttons.rejected.connect(dialog.reject)
    layout.addWidget(buttons)
    dialog.open()
    return dialog

"""The one dialog every error goes through: a line in words, the details behind a button."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

__all__ = ["show_error"]


def show_error(parent: QWidget | None, title: str, message: str, details: str = "") -> QMessageBox:
    """Show a non-blocking, window-modal error box and return it.

    Parameters
    ----------
    title : str
        What failed ("Open image").
    message : str
        One line saying what went wrong, naming the file where there is one.
    details : str
        A traceback or longer text, hidden behind "Show Details...".
    """
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(message)
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setObjectName("errorDialog")
    # open() instead of exec(): the event loop keeps running, so a job's later signals are not
    # held back, and tests can find and close the box.
    box.open()
    return box

"""Status-bar readout of the memory the results hold, with a button that frees probabilities."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget

__all__ = ["MemoryIndicator", "format_bytes"]


def format_bytes(n: int) -> str:
    """``1_300_000_000`` -> ``"1.3 GB"``; decimal units, as file managers show them."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


class MemoryIndicator(QWidget):
    """``Results: 312 MB (probabilities 630 MB)  [Free]``.

    Signals
    -------
    free_requested()
        The user asked to drop the cached probabilities.
    """

    free_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel(self)
        self.label.setObjectName("memoryLabel")
        self.free_button = QToolButton(self)
        self.free_button.setText("Free")
        self.free_button.setAutoRaise(True)
        self.free_button.setToolTip(
            "Drop the cached probabilities: another decision rule then runs the network again. "
            "Removing rows from the results table (Del) frees their masks."
        )
        self.free_button.clicked.connect(self.free_requested)
        layout.addWidget(self.label)
        layout.addWidget(self.free_button)
        self.show_memory(0, 0)

    def show_memory(self, masks: int, probabilities: int) -> None:
        """Show the bytes held by label maps and by cached probabilities."""
        self.setVisible(masks + probabilities > 0)
        text = f"Results: {format_bytes(masks)}"
        if probabilities:
            text += f" (probabilities {format_bytes(probabilities)})"
        self.label.setText(text)
        self.label.setToolTip(
            "Memory held by the results: their label maps, and the probabilities kept so that "
            "another decision rule on the same model variant skips the network."
        )
        self.free_button.setEnabled(probabilities > 0)

"""A read-only panel that shows the application's log records as they arrive."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from core.logs import LOGGER_NAME

__all__ = ["LogPanel"]


class _RecordRelay(QObject):
    """Carries formatted records from any thread to the GUI thread (queued signal)."""

    emitted = Signal(str)


class _QtLogHandler(logging.Handler):
    def __init__(self, relay: _RecordRelay) -> None:
        super().__init__(level=logging.INFO)
        self._relay = relay
        self.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._relay.emitted.emit(self.format(record))
        except RuntimeError:  # the panel was deleted while a worker still logs
            pass


class LogPanel(QWidget):
    """Shows records of the ``segbench`` logger (job starts, stage timings, errors)."""

    def __init__(self, parent: QWidget | None = None, *, max_lines: int = 2000) -> None:
        super().__init__(parent)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(max_lines)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.text)
        self._relay = _RecordRelay(self)
        self._relay.emitted.connect(self.text.appendPlainText)
        self._handler = _QtLogHandler(self._relay)
        logger = logging.getLogger(LOGGER_NAME)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)  # job timings are INFO records
        logger.addHandler(self._handler)
        self.destroyed.connect(lambda *_: self.detach())

    def detach(self) -> None:
        """Stop receiving records (called when the panel goes away)."""
        logging.getLogger(LOGGER_NAME).removeHandler(self._handler)

    def lines(self) -> list[str]:
        return self.text.toPlainText().splitlines()

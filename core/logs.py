"""Where the application writes its log file, shared by the GUI and the headless commands."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

import platformdirs

__all__ = ["LOGGER_NAME", "default_log_path", "configure_logging"]

LOGGER_NAME = "segbench"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_log_path() -> Path:
    """The log file in the user's data directory (``SEGBENCH_DATA_DIR`` overrides the folder)."""
    base = os.environ.get("SEGBENCH_DATA_DIR") or platformdirs.user_data_dir("segbench", False)
    return Path(base) / "logs" / "segbench.log"


def configure_logging(path: Path | None = None, *, level: int = logging.INFO) -> Path:
    """Send the ``segbench`` logger to a rotating log file and return the file's path.

    Calling it twice does not add a second file handler.
    """
    path = Path(path) if path is not None else default_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return path
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    return path

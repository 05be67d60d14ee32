"""What the screenshot tools share: their own X server, waiting for the app, a capture, and
closing down.

Both tools drive the real window in an X server (Xvfb when ``DISPLAY`` is unset) and capture
it with ImageMagick's ``import``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def start_xvfb(display: str, size: tuple[int, int]) -> subprocess.Popen | None:
    """Start Xvfb on ``display`` with a ``size`` screen and point ``DISPLAY`` at it, unless a
    display is already set (None then)."""
    if os.environ.get("DISPLAY"):
        return None
    screen = f"{size[0]}x{size[1]}x24"
    proc = subprocess.Popen(["Xvfb", display, "-screen", "0", screen, "-nolisten", "tcp"])
    time.sleep(1.5)
    os.environ["DISPLAY"] = display
    return proc


def flush(app) -> None:
    """Process events and run deferred deletions.

    ``processEvents()`` alone never runs deferred deletions, which the running app's event
    loop does: Qt's tab bars replaced while the docks were tabbed would stay on screen.
    """
    from PySide6.QtCore import QCoreApplication, QEvent

    app.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def wait(app, condition, timeout: float = 600.0) -> None:
    """Pump events until ``condition()`` holds, then let the last repaint reach the X server."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not finish in time")
        flush(app)
        time.sleep(0.02)
    for _ in range(50):
        flush(app)
        time.sleep(0.01)


def capture(path: Path) -> None:
    """Save the whole X screen to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["import", "-window", "root", str(path)], check=True)
    print("wrote", path)


def close(window, app, xvfb: subprocess.Popen | None) -> None:
    """Stop the window's jobs, close it, and stop the X server this tool started."""
    window.runner.cancel_all()
    window.runner.wait(30000)
    window.close()
    app.processEvents()
    if xvfb is not None:
        xvfb.terminate()

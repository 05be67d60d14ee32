"""A real X server (Xvfb) for tests that launch the app as a user would and take screenshots."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REQUIRED_TOOLS = ("Xvfb", "xdotool", "import")
ROOT = Path(__file__).resolve().parents[1]


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@contextmanager
def xvfb(width: int = 1600, height: int = 1000) -> Iterator[str]:
    """Start Xvfb on a free display and yield its name (":93").

    Xvfb picks the display itself (``-displayfd``) and writes its number to a pipe: choosing a
    number here by looking for a free lock file raced with other test runs on the machine, and
    the loser's app then opened on the winner's display.
    """
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24"]
        + ["-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            ready, _, _ = select.select([pipe], [], [], 10)
            number = pipe.readline().strip() if ready else b""
        if not number.isdigit():
            raise RuntimeError(f"Xvfb did not start (exit code {proc.poll()})")
        yield f":{int(number)}"
    finally:
        proc.terminate()
        proc.wait(10)


def x_env(display: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb", OMP_WAIT_POLICY="PASSIVE")
    return env


def start_app(display: str, args: list[str], data_dir: Path, cwd: Path) -> subprocess.Popen:
    """Launch ``python main.py ARGS`` on ``display`` with its log and settings under data_dir."""
    env = x_env(display)
    env["SEGBENCH_DATA_DIR"] = str(data_dir)
    env["XDG_CONFIG_HOME"] = str(data_dir / "config")  # QSettings: no state from other runs
    return subprocess.Popen(
        [sys.executable, "main.py", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for_window(display: str, name: str, timeout: float = 60.0) -> str:
    """Wait until a window whose title contains ``name`` is mapped; return its X id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", name],
            env=x_env(display),
            capture_output=True,
            text=True,
        )
        ids = found.stdout.split()
        if ids:
            return ids[0]
        time.sleep(0.25)
    raise TimeoutError(f"no window named {name!r} appeared on {display} in {timeout} s")


def screenshot(display: str, path: Path) -> np.ndarray:
    """Take an X-level screenshot of the root window; return it as an (H, W, 3) uint8 array."""
    from PIL import Image

    subprocess.run(["import", "-window", "root", str(path)], env=x_env(display), check=True)
    return np.asarray(Image.open(path).convert("RGB"))


def screenshot_until(
    display: str,
    path: Path,
    condition: Callable[[np.ndarray], bool],
    timeout: float = 60.0,
    interval: float = 0.5,
) -> np.ndarray:
    """Take screenshots until ``condition(pixels)`` holds; return the last one either way.

    A window is mapped before Qt paints it, so the first screenshot after the window appears can
    still be the black X root: the caller's condition decides when the screen is ready.
    """
    deadline = time.monotonic() + timeout
    while True:
        pixels = screenshot(display, path)
        if condition(pixels) or time.monotonic() > deadline:
            return pixels
        time.sleep(interval)


def press_keys(display: str, window_id: str, keys: str) -> None:
    subprocess.run(
        ["xdotool", "windowfocus", "--sync", window_id, "key", keys],
        env=x_env(display),
        check=True,
        timeout=10,
    )


def run_probe(script: Path, *args: str, data_dir: Path, timeout: float = 240) -> dict:
    """Run a probe script (it drives the app with xdotool) on a fresh Xvfb; return its JSON.

    The probe prints its findings as one JSON line, the last line of its stdout.
    """
    with xvfb() as display:
        env = x_env(display)
        env["SEGBENCH_DATA_DIR"] = str(data_dir)
        probe = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if probe.returncode != 0:
        raise AssertionError(f"{script.name} failed:\n{probe.stderr[-2000:]}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


class EventPump:
    """For probe scripts: run Qt's event loop for a while, and send X events with xdotool."""

    def __init__(self, app) -> None:
        self.app = app

    def pump(self, seconds: float) -> None:
        """Process events for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.01)

    def wait_until(self, condition, what: str, seconds: float = 60) -> None:
        """Pump events until ``condition()`` holds (``SystemExit`` naming ``what`` after
        ``seconds``), then one more second for the views to settle."""
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} in {seconds:g} s")
            self.pump(0.1)
        self.pump(1.0)

    def xdotool(self, *args: str) -> None:
        """Run xdotool, then let Qt read the X events and pyqtgraph handle them."""
        subprocess.run(["xdotool", *args], check=True, timeout=10)
        self.pump(0.3)

    def report_and_close(self, window, state: dict) -> None:
        """Print the probe's findings as its last JSON line, then stop the jobs and close."""
        print(json.dumps(state), flush=True)
        window.runner.cancel_all()
        window.runner.wait(10000)
        window.close()
        self.pump(0.2)

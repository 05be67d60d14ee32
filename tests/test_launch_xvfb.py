"""Launch main.py in a real X server as a user would: window appears, is not blank, quits with 0."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.xserver import missing_tools, press_keys, screenshot, wait_for_window, x_env, xvfb

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.xvfb,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (see .ci/run)"),
]


def test_app_opens_a_real_window_and_quits_cleanly(tmp_path):
    with xvfb() as display:
        env = x_env(display)
        env["SEGBENCH_DATA_DIR"] = str(tmp_path / "data")
        app = subprocess.Popen(
            [sys.executable, "main.py", "--no-demo"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            window = wait_for_window(display, "segbench", timeout=90)
            pixels = screenshot(display, tmp_path / "window.png")
            # Not blank: the window paints text and widgets, so the image has many distinct colours
            # and a real spread of intensities (an unpainted X root is a single black colour).
            assert pixels.std() > 20
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
            press_keys(display, window, "ctrl+q")
            output, _ = app.communicate(timeout=30)
        finally:
            if app.poll() is None:
                app.kill()
        assert app.returncode == 0, output.decode(errors="replace")
    assert (tmp_path / "data" / "logs" / "segbench.log").exists()

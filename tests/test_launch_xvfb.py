"""Launch main.py in a real X server as a user would: window appears, is not blank, quits with 0."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.xserver import (
    missing_tools,
    press_keys,
    run_probe,
    screenshot_until,
    start_app,
    wait_for_window,
    x_env,
    xvfb,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.xvfb,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (see .ci/run)"),
]


def quit_app(display: str, window: str, app: subprocess.Popen) -> None:
    """Ctrl+Q; if a job still runs the app asks first, and the user answers Yes (Alt+Y)."""
    press_keys(display, window, "ctrl+q")
    for _ in range(3):
        try:
            app.wait(timeout=8)
            return
        except subprocess.TimeoutExpired:
            subprocess.run(["xdotool", "key", "alt+y"], env=x_env(display), timeout=10)


def _painted(pixels: np.ndarray) -> bool:
    return pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_app_opens_a_real_window_and_quits_cleanly(tmp_path):
    with xvfb() as display:
        app = start_app(display, ["--no-demo"], tmp_path / "data", ROOT)
        try:
            window = wait_for_window(display, "segbench", timeout=90)
            # Not blank: the window paints text and widgets, so the image has many distinct colours
            # and a real spread of intensities (an unpainted X root is a single black colour).
            # The window is mapped before its first paint, so poll until it shows or time runs out.
            pixels = screenshot_until(display, tmp_path / "window.png", _painted, timeout=60)
            assert pixels.std() > 20
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
            quit_app(display, window, app)
            output, _ = app.communicate(timeout=30)
        finally:
            if app.poll() is None:
                app.kill()
        assert app.returncode == 0, output.decode(errors="replace")
    assert (tmp_path / "data" / "logs" / "segbench.log").exists()


def _orange_pixels(pixels: np.ndarray) -> int:
    """Pixels tinted by the demo's liver colour (220, 120, 60) blended over grey CT."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return int(np.count_nonzero((r - b > 60) & (r - g > 30) & (g - b > 15)))


def test_demo_opens_with_coloured_overlays_in_a_real_window(tmp_path):
    with xvfb() as display:
        app = start_app(display, [], tmp_path / "data", ROOT)
        try:
            window = wait_for_window(display, "segbench", timeout=90)
            # The demo segments itself on the worker; poll the real screen until the liver
            # overlay shows (inference takes seconds on a busy 2-core machine).
            pixels = screenshot_until(
                display,
                tmp_path / "demo.png",
                lambda shot: _orange_pixels(shot) > 5000,
                timeout=240,
                interval=2,
            )
            orange = _orange_pixels(pixels)
            assert orange > 5000, f"no liver overlay on screen ({orange} orange pixels)"
            quit_app(display, window, app)
            output, _ = app.communicate(timeout=60)
        finally:
            if app.poll() is None:
                app.kill()
        assert app.returncode == 0, output.decode(errors="replace")


def test_real_mouse_drag_click_and_wheel_reach_the_views(tmp_path):
    # xdotool sends X pointer events; they go through Qt's xcb platform and pyqtgraph's scene
    # as a user's mouse would (offscreen Qt cannot turn synthetic moves into drags).
    state = run_probe(
        ROOT / "tests" / "xmouse_probe.py", str(tmp_path / "s.ini"), data_dir=tmp_path / "data"
    )
    center, width = state["window_before"]
    center_after, width_after = state["window_after_drag"]
    assert width_after > width * 1.2 and center_after == pytest.approx(center)  # right drag
    assert state["picked"] == [state["expected_pick"]]  # the click lands where Qt maps it
    before, after = state["cursor_before_click"], state["cursor_after_click"]
    assert after[2] == before[2] and after[:2] != before[:2]  # in-plane move, same slice
    first, last = state["slice_wheel"]
    assert abs(last - first) == 3  # three wheel steps, three slices

"""Run a program until it has printed some lines, then kill it with SIGKILL (no clean-up runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kill_after_lines(module: str, *args: str, lines: int, data_dir: Path) -> list[str]:
    """Run ``python -m MODULE ARGS``; SIGKILL it right after its ``lines``-th line of stdout.

    Returns the lines read (fewer when the program ended by itself first).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    env["SEGBENCH_DATA_DIR"] = str(data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    done: list[str] = []
    try:
        for line in process.stdout:
            done.append(line.strip())
            if len(done) == lines:
                process.send_signal(signal.SIGKILL)  # while it goes on with the next one
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    return done

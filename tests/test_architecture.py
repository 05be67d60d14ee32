"""The dependency rule: core never imports Qt, pyqtgraph or gui (checked in a fresh interpreter)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("PySide6", "shiboken6", "pyqtgraph", "gui")


def core_module_names() -> list[str]:
    names = ["core"]
    for info in pkgutil.walk_packages(core.__path__, prefix="core."):
        names.append(info.name)
    return names


def test_core_has_modules_to_check():
    names = core_module_names()
    assert "core.jobs" in names and "core.device" in names


def test_core_never_imports_qt_or_gui():
    names = core_module_names()
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print('\\n'.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core imported: {result.stdout.split()}"

"""The ``segbench`` console script (``[project.scripts]`` in pyproject.toml).

It does exactly what ``python main.py`` does: a headless command when one is named, the GUI
otherwise. The top-level ``main`` module is imported only when the script runs, so importing
``core`` never reaches the GUI.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``main.main`` and return its exit code."""
    import main as launcher  # the py-module installed beside the core package

    return launcher.main(argv)

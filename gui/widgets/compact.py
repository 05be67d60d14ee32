"""Widgets that stay narrow, so the side panels fit a laptop screen without scrolling sideways."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QWidget

__all__ = ["narrow_combo"]


def narrow_combo(parent: QWidget | None = None, characters: int = 6) -> QComboBox:
    """A combo box whose width does not follow its longest item.

    A dock at 1280 x 800 must not scroll sideways for "Prediction + ground truth outline" or
    "Slices of the open image"; the full text shows when the list opens.
    """
    combo = QComboBox(parent)
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    return combo

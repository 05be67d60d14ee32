"""Display mathematics for the image viewer: pure numpy, no Qt.

Window/level presets and defaults, label colour tables and RGBA overlay rendering,
difference (TP/FP/FN) classes, label maps prepared for display (off the GUI thread), the
mapping between voxel indices and the three orthogonal display planes with their orientation
letters, and the cursor readout.
"""

from core.display.cursor import CursorInfo, cursor_info
from core.display.difference import (
    DIFFERENCE_CLASS_NAMES,
    DIFFERENCE_COLORS,
    difference_classes,
    difference_lut,
)
from core.display.label_colors import DEFAULT_LABEL_COLORS, label_lut
from core.display.labels import LabelVolume, prepare_labels
from core.display.overlay import composite_outline, label_boundary, render_label_overlay
from core.display.planes import (
    VIEW_NAMES,
    PlaneAxes,
    natural_plane_axes,
    plane_axes,
    plane_to_voxel,
    plane_volume,
    voxel_to_plane,
)
from core.display.window import (
    WINDOW_PRESETS,
    WindowPreset,
    default_window,
    format_window,
    image_presets,
    levels_to_window,
    preset_for_key,
    round_window,
    window_to_levels,
)

__all__ = [
    "CursorInfo",
    "DEFAULT_LABEL_COLORS",
    "DIFFERENCE_CLASS_NAMES",
    "DIFFERENCE_COLORS",
    "LabelVolume",
    "PlaneAxes",
    "VIEW_NAMES",
    "WINDOW_PRESETS",
    "WindowPreset",
    "composite_outline",
    "cursor_info",
    "default_window",
    "format_window",
    "image_presets",
    "difference_classes",
    "difference_lut",
    "label_boundary",
    "label_lut",
    "levels_to_window",
    "natural_plane_axes",
    "plane_axes",
    "plane_to_voxel",
    "plane_volume",
    "prepare_labels",
    "preset_for_key",
    "round_window",
    "render_label_overlay",
    "voxel_to_plane",
    "window_to_levels",
]

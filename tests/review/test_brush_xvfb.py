"""Brush strokes from real X pointer events land on the voxels under the pointer (Xvfb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.xserver import missing_tools, run_probe

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.xvfb,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (see .ci/run)"),
]


def test_brush_paints_under_the_real_pointer_in_every_view_of_an_oblique_volume(tmp_path):
    state = run_probe(
        ROOT / "tests" / "review" / "xbrush_probe.py", str(tmp_path), data_dir=tmp_path / "data"
    )
    # A one-voxel brush paints exactly the voxel the cursor readout reports under the pointer.
    for view, click in state["clicks"].items():
        assert click["new"] == [click["hovered"]], view
    assert state["row"].endswith("+ corrected")
    # The drag stays on its slice, from the voxel under the pointer at the start to the one at
    # the end, and paints the voxels whose centres lie within 3 mm of the path (give or take
    # half a pixel: dab centres are pixel centres).
    drag = state["drag"]
    painted = {tuple(v) for v in drag["new"]}
    assert tuple(drag["start"]) in painted and tuple(drag["end"]) in painted
    affine = np.asarray(state["affine"])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    slice_axis = [a for a in range(3) if len({v[a] for v in painted}) == 1]
    assert len(slice_axis) == 1 and drag["start"][slice_axis[0]] == drag["end"][slice_axis[0]]
    axis = slice_axis[0]
    slack = 0.5 * np.linalg.norm(np.delete(spacing, axis))

    def distance_to_path(ijk) -> float:
        a, b, p = (affine[:3, :3] @ np.asarray(v, float) for v in (drag["start"], drag["end"], ijk))
        t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
        return float(np.linalg.norm(p - (a + t * (b - a))))

    for ijk in np.ndindex(*state["shape"]):
        if ijk[axis] != drag["start"][axis]:
            continue
        distance = distance_to_path(ijk)
        if distance <= 3.0 - slack:
            assert ijk in painted, (ijk, distance)
        if distance > 3.0 + slack:
            assert ijk not in painted, (ijk, distance)
    # Three clicks and one drag: four Undo steps.
    assert state["undo_steps"] == 4

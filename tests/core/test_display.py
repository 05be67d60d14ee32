"""Tests of core.display: window maths, colour tables, overlays, difference classes, planes."""

import itertools
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from core.display import (
    WINDOW_PRESETS,
    composite_outline,
    cursor_info,
    default_window,
    difference_classes,
    difference_lut,
    label_boundary,
    label_lut,
    levels_to_window,
    natural_plane_axes,
    plane_axes,
    plane_to_voxel,
    plane_volume,
    prepare_labels,
    preset_for_key,
    render_label_overlay,
    voxel_to_plane,
    window_to_levels,
)
from core.io import Image

ANATOMICAL = os.path.join(data_path, "anatomical.nii")


# --- window/level ------------------------------------------------------------------------


def test_presets_match_published_values_and_keys_are_unique():
    by_name = {p.name: (p.width, p.center) for p in WINDOW_PRESETS}
    assert by_name["Soft tissue"] == (400, 40)
    assert by_name["Lung"] == (1500, -600)
    assert by_name["Bone"] == (2500, 480)
    assert by_name["Brain"] == (80, 40)
    assert by_name["Liver"] == (150, 90)
    keys = [p.key for p in WINDOW_PRESETS]
    assert len(set(keys)) == len(keys) and all(k.isdigit() and k != "0" for k in keys)
    assert preset_for_key("2").name == "Lung"
    assert preset_for_key("0") is None
    assert preset_for_key("2").label == "2  Lung  W1500 L-600"


def test_window_levels_round_trip_and_reject_bad_width():
    assert window_to_levels(40, 400) == (-160, 240)
    assert levels_to_window(-160, 240) == (40, 400)
    with pytest.raises(ValueError, match="width"):
        window_to_levels(0, 0)


def test_default_window_prefers_dicom_then_percentiles():
    rng = np.random.default_rng(0)
    data = rng.normal(100, 20, size=(20, 30, 10)).astype(np.float32)
    assert default_window(data, dicom_window=(50, 350)) == (50, 350)
    center, width = default_window(data)
    low, high = np.percentile(data, [0.1, 99.9])
    # Rounded to whole units (a width over 10), as a reader states it.
    assert center == round(center) and width == round(width)
    assert center == pytest.approx((low + high) / 2, abs=0.5)
    assert width == pytest.approx(high - low, abs=0.5)


def test_default_window_handles_constant_nan_and_huge_images():
    assert default_window(np.full((4, 4, 1), 7.0)) == (7.0, 1.0)
    assert default_window(np.full((2, 2, 1), np.nan)) == (0.5, 1.0)
    big = np.arange(3_000_000, dtype=np.float32).reshape(300, 100, 100)
    center, width = default_window(big)
    low, high = np.percentile(big, [0.1, 99.9])
    # A strided sample: within 0.1 % of the full-array answer.
    assert center == pytest.approx((low + high) / 2, rel=1e-3)
    assert width == pytest.approx(high - low, rel=1e-3)


# --- colour tables and overlays -----------------------------------------------------------


def test_label_lut_colours_opacity_and_hidden():
    lut = label_lut(
        [(0, 0, 0), (255, 0, 0), (0, 255, 0)],
        n_labels=5,
        opacity=0.5,
        label_opacity={2: 0.5},
        hidden={3},
    )
    assert lut.shape == (5, 4) and lut.dtype == np.uint8
    assert lut[0, 3] == 0
    assert tuple(lut[1]) == (255, 0, 0, 128)
    assert tuple(lut[2]) == (0, 255, 0, 64)
    assert lut[3, 3] == 0
    assert lut[4, 3] == 128 and lut[4, :3].any()  # past the table: a default colour
    with pytest.raises(ValueError, match="opacity"):
        label_lut([(0, 0, 0)], opacity=1.5)
    with pytest.raises(ValueError, match="colour"):
        label_lut([(0, 0, 0), (300, 0, 0)])


def _boundary_brute_force(labels):
    rows, cols = labels.shape
    out = np.zeros_like(labels, dtype=bool)
    for r, c in itertools.product(range(rows), range(cols)):
        if labels[r, c] == 0:
            continue
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            rr, cc = r + dr, c + dc
            neighbour = labels[rr, cc] if 0 <= rr < rows and 0 <= cc < cols else 0
            if neighbour != labels[r, c]:
                out[r, c] = True
    return out


def test_label_boundary_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(5):
        labels = rng.integers(0, 3, size=(9, 11))
        np.testing.assert_array_equal(label_boundary(labels), _boundary_brute_force(labels))


def test_label_boundary_hand_worked_square():
    labels = np.zeros((5, 5), dtype=np.uint8)
    labels[1:4, 1:4] = 1
    expected = labels.astype(bool)
    expected[2, 2] = False  # the one interior pixel
    np.testing.assert_array_equal(label_boundary(labels), expected)


def test_render_overlay_filled_and_outline():
    labels = np.zeros((6, 6), dtype=np.int16)
    labels[1:5, 1:5] = 2
    lut = label_lut([(0, 0, 0), (255, 0, 0), (0, 0, 255)])
    filled = render_label_overlay(labels, lut, filled=True)
    assert filled.shape == (6, 6, 4)
    np.testing.assert_array_equal(filled[labels == 2], np.tile([0, 0, 255, 255], (16, 1)))
    assert not filled[labels == 0].any()
    outline = render_label_overlay(labels, lut, filled=False)
    drawn = outline[..., 3] > 0
    np.testing.assert_array_equal(drawn, _boundary_brute_force(labels))
    assert not drawn[2:4, 2:4].any()


def test_render_overlay_works_on_non_contiguous_views():
    volume = np.zeros((4, 5, 6), dtype=np.uint8)
    volume[1, 2, 3] = 1
    lut = label_lut([(0, 0, 0), (10, 20, 30)])
    rgba = render_label_overlay(volume.transpose(2, 1, 0)[3, ::-1], lut)
    assert tuple(rgba[2, 1]) == (10, 20, 30, 255)
    assert (rgba[..., 3] > 0).sum() == 1


def test_composite_outline_draws_only_where_outline_is_opaque():
    base = np.zeros((2, 2, 4), dtype=np.uint8)
    base[0, 0] = (1, 2, 3, 4)
    outline = np.zeros_like(base)
    outline[1, 1] = (9, 9, 9, 255)
    composite_outline(base, outline)
    assert tuple(base[0, 0]) == (1, 2, 3, 4) and tuple(base[1, 1]) == (9, 9, 9, 255)


def test_difference_classes_hand_worked():
    gt = np.array([[0, 1, 1, 2, 0, 2]])
    pred = np.array([[0, 1, 0, 1, 2, 2]])
    # all labels: bg, TP, FN, wrong label, FP, TP
    np.testing.assert_array_equal(difference_classes(pred, gt), [[0, 1, 3, 4, 2, 1]])
    # label 1 only: bg, TP, FN, FP (pred 1 where gt 2), bg, bg
    np.testing.assert_array_equal(difference_classes(pred, gt, label=1), [[0, 1, 3, 2, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        difference_classes(pred, gt[:, :3])
    lut = difference_lut(opacity=1.0)
    assert lut[0, 3] == 0 and (lut[1:, 3] == 255).all()
    assert len({tuple(c) for c in lut[1:, :3]}) == 4


# --- planes and orientation ---------------------------------------------------------------


@pytest.fixture(scope="module")
def anatomical():
    img = nib.load(ANATOMICAL)
    return img, np.asarray(img.dataobj)


def test_anatomical_letters_in_both_conventions(anatomical):
    img, _ = anatomical
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    rad = {v: plane_axes(img.affine, v, "radiological").letters for v in ("axial", "coronal")}
    neuro = {v: plane_axes(img.affine, v, "neurological").letters for v in ("axial", "coronal")}
    assert rad == {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I")}
    assert neuro == {"axial": ("L", "R", "A", "P"), "coronal": ("L", "R", "S", "I")}
    assert plane_axes(img.affine, "sagittal", "radiological").letters == ("A", "P", "S", "I")


def test_planes_match_nibabel_closest_canonical(anatomical):
    """Hand-derived screen images from nibabel's RAS-reoriented array (can[x, y, z])."""
    img, data = anatomical
    can = np.asarray(nib.as_closest_canonical(img).dataobj)
    nx = can.shape[0]
    axial_r = plane_volume(data, plane_axes(img.affine, "axial", "radiological"))
    axial_n = plane_volume(data, plane_axes(img.affine, "axial", "neurological"))
    coronal = plane_volume(data, plane_axes(img.affine, "coronal", "radiological"))
    sagittal = plane_volume(data, plane_axes(img.affine, "sagittal", "radiological"))
    for z in (0, 7, can.shape[2] - 1):
        np.testing.assert_array_equal(axial_r[z], can[::-1, ::-1, z].T)
        np.testing.assert_array_equal(axial_n[z], can[:, ::-1, z].T)
    for y in (0, 20):
        np.testing.assert_array_equal(coronal[y], can[::-1, y, ::-1].T)
    for i in (0, 10):  # voxel i runs towards L, canonical x towards R
        np.testing.assert_array_equal(sagittal[i], can[nx - 1 - i, ::-1, ::-1].T)
    assert np.shares_memory(axial_r, data)


def _random_affine(rng):
    perm = rng.permutation(3)
    signs = rng.choice([-1.0, 1.0], size=3)
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, sign) in enumerate(zip(perm, signs, strict=True)):
        affine[world_axis, voxel_axis] = sign * rng.uniform(0.5, 3)
    affine[:3, 3] = rng.uniform(-50, 50, size=3)
    return affine


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("convention", ["radiological", "neurological"])
def test_screen_directions_follow_world_for_any_axis_order(seed, convention):
    """Independent check through the affine: the world direction of moving right/down on
    screen matches the letters, and the index maps agree with the rearranged array."""
    rng = np.random.default_rng(seed)
    affine = _random_affine(rng)
    shape = (4, 5, 6)
    data = rng.integers(0, 1000, size=shape)
    letter_vector = {
        "R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1),
    }  # fmt: skip
    for view in ("axial", "coronal", "sagittal"):
        axes = plane_axes(affine, view, convention)
        planes = plane_volume(data, axes)
        n_rows, n_cols = planes.shape[1:]
        corners = {
            name: affine[:3, :3] @ plane_to_voxel(axes, shape, 0, r, c)
            for name, (r, c) in {"o": (0, 0), "r": (0, n_cols - 1), "d": (n_rows - 1, 0)}.items()
        }
        right = corners["r"] - corners["o"]
        down = corners["d"] - corners["o"]
        axis, sign = letter_vector[axes.letters[1]]
        assert np.sign(right[axis]) == sign
        axis, sign = letter_vector[axes.letters[3]]
        assert np.sign(down[axis]) == sign
        for s, r, c in itertools.product(range(planes.shape[0]), range(n_rows), range(n_cols)):
            ijk = tuple(int(v) for v in plane_to_voxel(axes, shape, s, r, c))
            assert planes[s, r, c] == data[ijk]
            assert voxel_to_plane(axes, shape, ijk) == (s, r, c)
    screen_left = plane_axes(affine, "axial", convention).letters[0]
    assert screen_left == ("R" if convention == "radiological" else "L")


def test_natural_plane_is_rows_and_columns():
    image = np.arange(12).reshape(3, 4, 1)
    axes = natural_plane_axes()
    np.testing.assert_array_equal(plane_volume(image, axes)[0], image[:, :, 0])
    rgb = np.zeros((3, 4, 1, 3))
    assert plane_volume(rgb, axes).shape == (1, 3, 4, 3)


def test_plane_axes_rejects_unknown_view_and_convention():
    with pytest.raises(ValueError, match="view"):
        plane_axes(np.eye(4), "oblique")
    with pytest.raises(ValueError, match="convention"):
        plane_axes(np.eye(4), "axial", "upside-down")
    with pytest.raises(ValueError, match="degenerate"):
        plane_axes(np.diag([1.0, 0.0, 1.0, 1.0]), "axial")


def test_oblique_affine_uses_the_closest_axes():
    angle = np.deg2rad(20)  # rotate i and j by 20 degrees about z: still closest to R and A
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    axes = plane_axes(affine, "axial", "radiological")
    assert (axes.row_axis, axes.col_axis, axes.row_flip, axes.col_flip) == (1, 0, True, True)


# --- cursor readout -----------------------------------------------------------------------


def test_cursor_info_world_is_affine_times_ijk(anatomical):
    img, data = anatomical
    image = Image(array=data, affine=img.affine)
    gt = np.zeros(data.shape, dtype=np.uint8)
    gt[10, 20, 5] = 2
    pred = np.ones(data.shape, dtype=np.uint8)
    info = cursor_info(
        image, (10, 20, 5), ground_truth=gt, prediction=pred, names=["bg", "liver", "tumour"]
    )
    expected = img.affine @ np.array([10, 20, 5, 1.0])
    assert info.world == pytest.approx(tuple(expected[:3]))
    assert info.intensity == float(data[10, 20, 5])
    assert (info.ground_truth_name, info.prediction_name) == ("tumour", "liver")
    text = info.text()
    assert "IJK (10, 20, 5)" in text and "GT: tumour" in text and "Pred: liver" in text
    with pytest.raises(ValueError, match="outside"):
        cursor_info(image, (33, 0, 0))


# --- label maps prepared for display -----------------------------------------------------


def test_prepare_labels_narrows_and_follows_the_image_memory_order():
    image = Image(array=np.asfortranarray(np.zeros((4, 5, 6), np.int16)), affine=np.eye(4))
    mask = np.zeros((4, 5, 6), dtype=np.int64)  # torch's argmax: C order, int64
    mask[1, 2, 3] = 3
    labels = prepare_labels(mask, image)
    assert labels.array.dtype == np.uint8 and labels.array.flags.f_contiguous
    assert labels.max_label == 3 and labels.nbytes == 4 * 5 * 6
    np.testing.assert_array_equal(labels.array, mask)
    assert labels.fits(image)
    # A map that already conforms is kept as it is: no copy.
    assert prepare_labels(labels.array, image).array is labels.array
    wide = mask.copy()
    wide[0, 0, 0] = 300
    assert prepare_labels(wide, image).array.dtype == np.uint16
    c_image = Image(array=np.zeros((4, 5, 6), np.int16), affine=np.eye(4))
    assert not labels.fits(c_image)
    assert prepare_labels(labels.array, c_image).array.flags.c_contiguous


def test_prepare_labels_rejects_what_the_viewer_cannot_show():
    image = Image(array=np.zeros((4, 5, 6), np.int16), affine=np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        prepare_labels(np.zeros((4, 5, 7), np.uint8), image, what="prediction")
    with pytest.raises(ValueError, match="integer"):
        prepare_labels(np.zeros((4, 5, 6), np.float32), image)
    with pytest.raises(ValueError, match="negative"):
        prepare_labels(np.full((4, 5, 6), -1, np.int8), image)
    flat = Image(array=np.zeros((4, 5, 1), np.int16), affine=np.eye(4))
    assert prepare_labels(np.ones((4, 5), bool), flat).array.shape == (4, 5, 1)


def test_default_window_of_a_fortran_volume_equals_that_of_its_c_copy():
    rng = np.random.default_rng(0)
    volume = rng.normal(40, 300, (64, 64, 40)).astype(np.int16)
    assert default_window(np.asfortranarray(volume)) == default_window(volume)

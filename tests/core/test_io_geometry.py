"""Geometry helpers against brute force and nibabel's own answers."""

import itertools

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from core.io.geometry import (
    affine_from_itk,
    axis_codes,
    itk_from_affine,
    max_corner_distance,
    reorient_to_ras,
)


def _random_affine(rng, permutation, flips, oblique_degrees=0.0):
    rotation = np.eye(3)[:, permutation] * np.asarray(flips)
    angle = np.radians(oblique_degrees)
    tilt = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = tilt @ rotation * rng.uniform(0.5, 3.0, size=3)
    affine[:3, 3] = rng.uniform(-50, 50, size=3)
    return affine


CASES = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in [(1, 1, 1), (-1, 1, -1), (-1, -1, 1)]
]


@pytest.mark.parametrize(("permutation", "flips"), CASES)
def test_reorient_to_ras_is_a_view_that_keeps_every_voxel_in_place(permutation, flips):
    rng = np.random.default_rng(0)
    affine = _random_affine(rng, permutation, flips, oblique_degrees=12.0)
    array = rng.integers(0, 1000, size=(3, 4, 5)).astype(np.int16)
    view, view_affine, transform = reorient_to_ras(array, affine)
    assert np.shares_memory(view, array)
    assert axis_codes(view_affine) == ("R", "A", "S")
    # Brute force: every view voxel holds the original voxel that sits at the same world point.
    for index in np.ndindex(view.shape):
        original = transform.to_original(index)
        rounded = tuple(int(v) for v in np.round(original))
        np.testing.assert_allclose(original, rounded, atol=1e-12)
        assert view[index] == array[rounded]
        world_view = view_affine[:3, :3] @ index + view_affine[:3, 3]
        world_original = affine[:3, :3] @ original + affine[:3, 3]
        np.testing.assert_allclose(world_view, world_original, atol=1e-9)
        np.testing.assert_allclose(transform.to_view(original), index, atol=1e-9)


def test_reorient_matches_nibabel_closest_canonical_on_anatomical():
    nifti = nib.load(data_path / "anatomical.nii")
    array = np.asanyarray(nifti.dataobj)
    view, view_affine, _ = reorient_to_ras(array, nifti.affine)
    canonical = nib.as_closest_canonical(nifti)
    np.testing.assert_array_equal(view, np.asanyarray(canonical.dataobj))
    np.testing.assert_allclose(view_affine, canonical.affine)


def test_reorient_keeps_a_trailing_colour_axis():
    array = np.arange(2 * 3 * 1 * 3).reshape(2, 3, 1, 3)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    view, _, transform = reorient_to_ras(array, affine)
    assert view.shape == (2, 3, 1, 3)
    np.testing.assert_array_equal(view[0, :, 0], array[1, :, 0])
    np.testing.assert_allclose(transform.to_original([0, 2, 0]), [1, 2, 0])


def test_axis_codes_equal_nibabel_on_its_test_files():
    for name in ("anatomical.nii", "standard.nii.gz", "example4d.nii.gz"):
        affine = nib.load(data_path / name).affine
        assert axis_codes(affine) == nib.aff2axcodes(affine)


def test_itk_round_trip_negates_x_and_y_by_hand():
    # LPS direction identity with spacing (2, 3, 4) and origin (10, 20, 30):
    # RAS affine negates the x and y rows.
    affine = affine_from_itk(np.eye(3).ravel(), (2, 3, 4), (10, 20, 30))
    expected = np.array([[-2.0, 0, 0, -10], [0, -3.0, 0, -20], [0, 0, 4.0, 30], [0, 0, 0, 1]])
    np.testing.assert_allclose(affine, expected)
    direction, spacing, origin = itk_from_affine(affine)
    np.testing.assert_allclose(direction, np.eye(3).ravel())
    np.testing.assert_allclose(spacing, (2, 3, 4))
    np.testing.assert_allclose(origin, (10, 20, 30))


def test_itk_refuses_a_sheared_affine():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(ValueError, match="sheared"):
        itk_from_affine(affine)


def test_max_corner_distance_by_hand():
    shifted = np.eye(4)
    shifted[:3, 3] = [0, 2.5, 0]
    assert max_corner_distance(np.eye(4), shifted, (4, 4, 4)) == pytest.approx(2.5)
    scaled = np.diag([1.0, 1.0, 1.1, 1.0])
    # The far corner along k (index 9) moves by 0.1 * 9 mm.
    assert max_corner_distance(np.eye(4), scaled, (2, 2, 10)) == pytest.approx(0.9)

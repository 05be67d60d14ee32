"""The Image dataclass: derived geometry and voxel/world mapping, checked by hand."""

import numpy as np
import pytest

from core.io import Image


def test_spacing_and_orientation_are_derived_from_the_affine():
    affine = np.array(
        [[0.0, 0.0, 3.0, 10.0], [-2.0, 0.0, 0.0, 20.0], [0.0, 1.5, 0.0, 30.0], [0, 0, 0, 1]]
    )
    image = Image(np.zeros((4, 5, 6), np.int16), affine)
    assert image.spacing == (2.0, 1.5, 3.0)
    # i moves towards -y (Posterior), j towards +z (Superior), k towards +x (Right).
    assert image.orientation == "PSR"
    assert image.shape3 == (4, 5, 6)
    assert not image.is_rgb
    assert image.ndim_spatial == 3
    assert image.warnings == [] and image.window is None and not image.is_natural


def test_voxel_world_round_trip_by_hand():
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [32.0, -40.0, -16.0]
    image = Image(np.zeros((3, 3, 3)), affine)
    np.testing.assert_allclose(image.voxel_to_world([1, 2, 3]), [30.0, -36.0, -7.0])
    points = np.array([[0.0, 0, 0], [1.5, 0.25, 2]])
    np.testing.assert_allclose(image.voxel_to_world(points)[1], [29.0, -39.5, -10.0])
    np.testing.assert_allclose(image.world_to_voxel(image.voxel_to_world(points)), points)


def test_rgb_and_natural_properties():
    image = Image(np.zeros((7, 9, 1, 3), np.uint8), np.eye(4), is_natural=True)
    assert image.is_rgb and image.shape3 == (7, 9, 1) and image.ndim_spatial == 2
    assert image.orientation == "RAS" and image.spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("shape", "affine"),
    [((4, 5), np.eye(4)), ((4, 5, 6, 2), np.eye(4)), ((4, 5, 6), np.eye(3))],
)
def test_bad_shapes_are_rejected(shape, affine):
    with pytest.raises(ValueError, match="shape"):
        Image(np.zeros(shape), affine)

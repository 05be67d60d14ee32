"""The synthetic CT phantom: determinism, geometry, anatomy and intensity relations."""

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage

from core.phantom import PHANTOM_CLASSES, PhantomParams, make_phantom, phantom_affine


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(7)


def test_same_seed_same_volume_other_seed_differs(phantom):
    image, label = phantom
    again, again_label = make_phantom(7)
    np.testing.assert_array_equal(image.array, again.array)
    np.testing.assert_array_equal(label, again_label)
    np.testing.assert_array_equal(image.affine, again.affine)
    other, other_label = make_phantom(8)
    assert not np.array_equal(label, other_label)


def test_types_shape_and_classes(phantom):
    image, label = phantom
    assert image.array.shape == label.shape == (160, 160, 48)
    assert image.array.dtype == np.int16 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 2, 3}
    assert PHANTOM_CLASSES == ("background", "liver", "kidney", "lesion")
    assert image.modality == "CT" and image.window == (40.0, 400.0)


def test_geometry_is_anisotropic_flipped_and_rotated(phantom):
    image, _ = phantom
    np.testing.assert_allclose(image.spacing, (0.8, 0.8, 2.5))
    # nibabel's own reading of the affine: first axis runs to patient Left.
    assert nib.aff2axcodes(image.affine) == ("L", "A", "S")
    assert image.orientation == "LAS"
    linear = image.affine[:3, :3]
    assert not np.allclose(linear, np.diag(np.diag(linear)))  # rotated, not axis-aligned
    np.testing.assert_allclose(np.linalg.norm(linear, axis=0), (0.8, 0.8, 2.5))
    centre = image.voxel_to_world((np.array(image.shape3) - 1) / 2)
    np.testing.assert_allclose(centre, (3.5, -12.0, 40.0), atol=1e-9)


@pytest.mark.parametrize("seed", [7, 1000])
def test_anatomy_is_a_normal_abdomen_in_world_coordinates(seed):
    """Spine and kidneys posterior, liver on the patient's right, read through the affine.

    In nibabel's RAS+ world, +y is Anterior and +x is the patient's Right, so this checks what a
    radiologist sees, whatever the voxel axes do.
    """
    image, label = make_phantom(seed)

    def world_centre(mask):
        return apply_affine(image.affine, np.argwhere(mask).mean(axis=0))

    body = world_centre(image.array > -500)
    spine = world_centre(image.array > 500)
    liver = world_centre(label == 1)
    kidneys, count = ndimage.label(label == 2)
    assert count == 2
    kidney_centres = [world_centre(kidneys == index) for index in (1, 2)]
    body_depth = np.ptp(apply_affine(image.affine, np.argwhere(image.array > -500))[:, 1])
    # The spine sits in the back third of the body, the kidneys behind the centre.
    assert spine[1] < body[1] - body_depth / 6
    for kidney in kidney_centres:
        assert kidney[1] < body[1]
        assert kidney[1] > spine[1] - 10.0  # beside the spine, not behind it
    # One kidney each side of the spine (world x), the liver on the patient's right.
    assert min(k[0] for k in kidney_centres) < spine[0] < max(k[0] for k in kidney_centres)
    assert liver[0] > body[0]


def test_other_shape_and_spacing_follow_the_arguments():
    image, label = make_phantom(1, shape=(64, 48, 20), spacing=(1.5, 1.0, 3.0))
    assert image.array.shape == label.shape == (64, 48, 20)
    np.testing.assert_allclose(image.spacing, (1.5, 1.0, 3.0))
    assert (label == 1).any()


def test_phantom_affine_by_hand():
    affine = phantom_affine((3, 3, 3), (2.0, 1.0, 4.0), rotation_deg=90.0)
    # A 90 degree turn about z maps voxel axis i (flipped) to world -y and j to world -x.
    np.testing.assert_allclose(affine[:3, 0], (0.0, -2.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(affine[:3, 1], (-1.0, 0.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(affine[:3, 2], (0.0, 0.0, 4.0), atol=1e-12)
    np.testing.assert_allclose(affine[:3, :3] @ [1, 1, 1] + affine[:3, 3], (3.5, -12.0, 40.0))


def test_hu_like_intensities_and_faint_lesions(phantom):
    image, label = phantom
    hu = image.array.astype(np.float64)
    params = PhantomParams()
    # Interiors (eroded) avoid the partial-volume blur at borders.
    interior = {c: ndimage.binary_erosion(label == c, iterations=1) for c in (1, 2)}
    liver = np.median(hu[interior[1]])
    kidney = np.median(hu[interior[2]])
    lesion = np.median(hu[label == 3])
    assert abs(liver - params.liver_hu) < 5
    assert abs(kidney - params.kidney_hu) < 10
    assert np.median(hu[label == 0][:1000]) < -900  # the corner of the volume is air
    contrast = liver - lesion
    assert 10 < contrast < 40  # faint: under two noise standard deviations
    noise = hu[interior[1]].std()
    assert abs(noise - params.noise_sd_hu) < 4
    assert hu.min() >= -1024 and hu.max() <= 3071


def test_lesions_are_small_and_inside_the_liver(phantom):
    _, label = phantom
    components, count = ndimage.label(label == 3)
    assert PhantomParams().n_lesions[0] - 1 <= count <= PhantomParams().n_lesions[1]
    voxel_mm3 = 0.8 * 0.8 * 2.5
    largest_mm3 = 4 / 3 * np.pi * 5.0 * (5.0 * 1.2) * (5.0 * 1.4)
    sizes = ndimage.sum_labels(np.ones_like(label), components, range(1, count + 1)) * voxel_mm3
    assert (sizes <= largest_mm3).all()
    # Each lesion touches the liver and never the kidneys.
    grown = ndimage.binary_dilation(label == 3)
    assert (label[grown & (label != 3)] != 2).all()
    for index in range(1, count + 1):
        ring = ndimage.binary_dilation(components == index) & (components != index)
        assert (label[ring] == 1).any()


def test_bad_shape_and_spacing_raise():
    with pytest.raises(ValueError, match="at least 16 voxels"):
        make_phantom(0, shape=(8, 64, 64))
    with pytest.raises(ValueError, match="positive sizes in mm"):
        make_phantom(0, spacing=(0.8, 0.0, 2.5))


def test_texture_scene_is_seeded_rgb_natural_image_with_shape_classes():
    from core.phantom import SCENE_CLASSES, make_texture_scene

    image, label = make_texture_scene(3, size=(96, 128))
    again, again_label = make_texture_scene(3, size=(96, 128))
    np.testing.assert_array_equal(image.array, again.array)
    np.testing.assert_array_equal(label, again_label)
    assert image.array.shape == (96, 128, 1, 3) and image.array.dtype == np.uint8
    assert image.is_natural and image.is_rgb and label.shape == (96, 128, 1)
    assert SCENE_CLASSES == ("background", "disc", "box")
    assert {1, 2} <= set(np.unique(label))
    # Labelled pixels carry the object colours, not the texture: pixel colour statistics differ.
    rgb = image.array[:, :, 0].astype(float)
    assert np.abs(rgb[label[..., 0] > 0].mean(0) - rgb[label[..., 0] == 0].mean(0)).max() > 5
    other, _ = make_texture_scene(4, size=(96, 128))
    assert not np.array_equal(image.array, other.array)


def test_texture_scene_size_is_checked():
    from core.phantom import make_texture_scene

    with pytest.raises(ValueError, match="between 64 and 512 pixels"):
        make_texture_scene(0, size=(32, 600))

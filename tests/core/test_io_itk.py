"""NRRD/MHA reading: files written by SimpleITK from nibabel's anatomical.nii must come back with
nibabel's RAS affine and array, which exercises the LPS -> RAS conversion and the axis order."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from core.io import ImageReadError, read_image

ANATOMICAL = data_path / "anatomical.nii"


@pytest.fixture(scope="module")
def anatomical_itk():
    itk_image = sitk.ReadImage(str(ANATOMICAL))
    # SimpleITK's own view of this file: LPS direction diag(1, -1, 1), array (z, y, x).
    np.testing.assert_allclose(itk_image.GetDirection(), [1, 0, 0, 0, -1, 0, 0, 0, 1])
    return itk_image


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_itk_formats_match_nibabel(tmp_path, anatomical_itk, suffix):
    path = tmp_path / f"anatomical{suffix}"
    sitk.WriteImage(anatomical_itk, str(path))
    image = read_image(path)
    reference = nib.load(ANATOMICAL)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)
    assert image.orientation == "LAS"
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, np.asanyarray(reference.dataobj))


def test_oblique_direction_by_hand(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(4, 3, 2)  # ITK (z, y, x)
    itk_image = sitk.GetImageFromArray(array)
    c, s = np.cos(0.3), np.sin(0.3)
    itk_image.SetDirection([c, -s, 0, s, c, 0, 0, 0, 1])
    itk_image.SetSpacing([0.5, 0.7, 2.0])
    itk_image.SetOrigin([10.0, -20.0, 5.0])
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(itk_image, str(path))
    image = read_image(path)
    assert image.shape3 == (2, 3, 4)
    assert image.array[1, 2, 3] == array[3, 2, 1]
    for index in [(0, 0, 0), (1, 2, 3)]:
        lps = itk_image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose(image.voxel_to_world(index), [-lps[0], -lps[1], lps[2]])


def test_2d_and_4d_images(tmp_path):
    plane = sitk.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    sitk.WriteImage(plane, str(tmp_path / "plane.mha"))
    image = read_image(tmp_path / "plane.mha")
    assert image.shape3 == (4, 3, 1)

    volumes = [sitk.GetImageFromArray(np.full((2, 3, 4), v, np.int16)) for v in (7, 9)]
    sitk.WriteImage(sitk.JoinSeries(volumes), str(tmp_path / "series.nrrd"))
    with pytest.raises(ImageReadError, match=r"series.nrrd: image has 2 volumes"):
        read_image(tmp_path / "series.nrrd")
    second = read_image(tmp_path / "series.nrrd", volume=1)
    assert second.shape3 == (4, 3, 2) and np.all(second.array == 9)


def test_corrupt_itk_file(tmp_path):
    path = tmp_path / "broken.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nElementDataFile = missing.raw\n")
    with pytest.raises(ImageReadError, match="broken.mha: its data file missing.raw does not"):
        read_image(path)

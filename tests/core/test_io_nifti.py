"""NIfTI reading on nibabel's shipped test files, compared with nibabel's own answers."""

import gzip
import hashlib
import shutil

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from core.io import ImageReadError, read_image

ANATOMICAL = data_path / "anatomical.nii"
STANDARD = data_path / "standard.nii.gz"
EXAMPLE_4D = data_path / "example4d.nii.gz"


def test_anatomical_affine_orientation_and_dtype_equal_nibabel():
    before = hashlib.sha256(ANATOMICAL.read_bytes()).hexdigest()
    image = read_image(ANATOMICAL)
    reference = nib.load(ANATOMICAL)
    np.testing.assert_array_equal(image.affine, reference.affine)
    assert image.orientation == "".join(nib.aff2axcodes(reference.affine)) == "LAS"
    assert image.array.dtype == np.int16  # on-disk >i2, made native, not promoted to float
    assert image.array.dtype.isnative
    np.testing.assert_array_equal(image.array, reference.get_fdata())
    assert image.spacing == (2.0, 2.0, 2.0)
    assert image.rescale is None and image.path == ANATOMICAL
    assert hashlib.sha256(ANATOMICAL.read_bytes()).hexdigest() == before


def test_standard_has_anisotropic_spacing():
    image = read_image(STANDARD)
    assert image.shape3 == (4, 5, 7)
    assert image.spacing == (1.0, 3.0, 2.0)
    assert image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, np.asanyarray(nib.load(STANDARD).dataobj))


def test_4d_needs_a_volume_and_returns_the_chosen_one():
    with pytest.raises(ImageReadError, match=r"example4d.nii.gz: 4-D image with 2 volumes"):
        read_image(EXAMPLE_4D)
    reference = nib.load(EXAMPLE_4D)
    image = read_image(EXAMPLE_4D, volume=1)
    assert image.shape3 == (128, 96, 24)
    np.testing.assert_array_equal(image.array, reference.dataobj[..., 1])
    np.testing.assert_allclose(image.affine, reference.affine)  # oblique: off-diagonal terms
    with pytest.raises(ImageReadError, match="volume 2 out of range"):
        read_image(EXAMPLE_4D, volume=2)


def test_scl_slope_is_applied_only_when_not_identity(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nifti = nib.Nifti1Image(data, np.eye(4))
    nifti.header.set_slope_inter(2.0, -5.0)
    path = tmp_path / "scaled.nii"
    nib.save(nifti, path)
    image = read_image(path)
    assert image.rescale == (2.0, -5.0)
    np.testing.assert_allclose(image.array, data * 2.0 - 5.0)


def test_sheared_sform_is_kept_and_qform_disagreement_reported(tmp_path):
    sheared = np.array([[1.0, 0.3, 0, -5], [0, 1.0, 0, 3], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    nifti = nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), sheared)
    nifti.header.set_sform(sheared, code=2)
    nifti.header.set_qform(np.eye(4), code=1)
    path = tmp_path / "sheared.nii.gz"
    nib.save(nifti, path)
    image = read_image(path)
    np.testing.assert_allclose(image.affine, sheared)
    assert any("qform and sform differ" in w for w in image.warnings)


def test_truncated_and_corrupt_files_give_one_line_errors(tmp_path):
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(ANATOMICAL.read_bytes()[:5000])
    with pytest.raises(ImageReadError) as info:
        read_image(truncated)
    assert "truncated.nii" in str(info.value) and "\n" not in str(info.value)

    truncated_gz = tmp_path / "truncated.nii.gz"
    truncated_gz.write_bytes(gzip.compress(ANATOMICAL.read_bytes())[:3000])
    with pytest.raises(ImageReadError, match="truncated.nii.gz"):
        read_image(truncated_gz)

    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"not a nifti header" * 40)
    with pytest.raises(ImageReadError, match="garbage.nii: not a readable NIfTI"):
        read_image(garbage)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing.nii: no such file"):
        read_image(tmp_path / "missing.nii")
    odd = tmp_path / "volume.xyz"
    shutil.copy(ANATOMICAL, odd)
    with pytest.raises(ImageReadError, match=r"volume.xyz: unknown image type '.xyz'"):
        read_image(odd)
    assert issubclass(ImageReadError, ValueError)


def test_writing_into_the_loaded_array_never_reaches_the_file(tmp_path):
    path = tmp_path / "native.nii"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4)), path)
    before = path.read_bytes()
    image = read_image(path)
    image.array[0, 0, 0] = 1234  # nibabel maps uncompressed files copy-on-write
    del image
    assert path.read_bytes() == before
    assert read_image(path).array[0, 0, 0] == 0


def test_series_argument_needs_a_folder():
    with pytest.raises(ImageReadError, match="series= only applies to a folder"):
        read_image(ANATOMICAL, series="1.2.3")

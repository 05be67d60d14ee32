"""Mask writing and reading: geometry round trips, header codes, atomic and safe writes."""

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import skimage.data
import skimage.io
from nibabel.testing import data_path
from pydicom.data import get_testdata_file

from core.io import Image, ImageReadError, read_image, read_mask, write_mask
from core.io import mask as mask_module

ANATOMICAL = data_path / "anatomical.nii"
STANDARD = data_path / "standard.nii.gz"
EXAMPLE_4D = data_path / "example4d.nii.gz"


def _labels(shape, high=3, seed=0):
    return np.random.default_rng(seed).integers(0, high + 1, size=shape)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("source", [ANATOMICAL, STANDARD])
def test_round_trip_keeps_geometry(tmp_path, source, suffix):
    image = read_image(source)
    labels = _labels(image.shape3)
    written = write_mask(labels, tmp_path / f"mask{suffix}", reference=image)
    mask = read_mask(written, reference=image)
    np.testing.assert_array_equal(mask.array, labels)
    assert mask.array.dtype == np.uint8
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    assert mask.warnings == []
    assert os.listdir(tmp_path) == [written.name]  # no temporary file left behind
    assert written.stat().st_mode & 0o644 == 0o644  # not the temp file's owner-only mode


@pytest.mark.parametrize("source", [ANATOMICAL, STANDARD, EXAMPLE_4D])
def test_nifti_keeps_header_codes_and_stores_uint8(tmp_path, source):
    image = read_image(source, volume=0 if source == EXAMPLE_4D else None)
    original = nib.load(source)
    path = write_mask(_labels(image.shape3), tmp_path / "mask.nii.gz", reference=image)
    saved = nib.load(path)
    assert saved.get_data_dtype() == np.uint8
    assert saved.shape == image.shape3
    assert int(saved.header["sform_code"]) == int(original.header["sform_code"])
    assert int(saved.header["qform_code"]) == int(original.header["qform_code"])
    np.testing.assert_allclose(saved.affine, original.affine, atol=1e-5)
    np.testing.assert_allclose(saved.header.get_qform(), original.header.get_qform(), atol=1e-5)
    assert saved.dataobj.slope == 1 and saved.dataobj.inter == 0


def test_nifti_scaled_reference_gives_unscaled_uint16_labels(tmp_path):
    nifti = nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    nifti.header.set_slope_inter(3.0, 1.0)
    nib.save(nifti, tmp_path / "scaled.nii")
    image = read_image(tmp_path / "scaled.nii")
    labels = _labels(image.shape3, high=300)
    path = write_mask(labels, tmp_path / "mask.nii", reference=image)
    assert nib.load(path).get_data_dtype() == np.uint16
    np.testing.assert_array_equal(read_mask(path, reference=image).array, labels)


def test_sheared_reference_round_trips_in_nifti_and_is_refused_by_nrrd(tmp_path):
    sheared = np.array([[1.0, 0.3, 0, -5], [0, 1.0, 0, 3], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), sheared), tmp_path / "sheared.nii")
    image = read_image(tmp_path / "sheared.nii")
    path = write_mask(np.ones(image.shape3, bool), tmp_path / "mask.nii", reference=image)
    np.testing.assert_allclose(nib.load(path).affine, sheared, atol=1e-5)
    with pytest.raises(ValueError, match="mask.nrrd: affine is sheared"):
        write_mask(np.ones(image.shape3), tmp_path / "mask.nrrd", reference=image)


def test_dicom_reference_round_trips(tmp_path):
    image = read_image(get_testdata_file("CT_small.dcm"))
    labels = _labels(image.shape3)
    for suffix in (".nii.gz", ".nrrd"):
        mask = read_mask(
            write_mask(labels, tmp_path / f"m{suffix}", reference=image), reference=image
        )
        np.testing.assert_array_equal(mask.array, labels)
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)


def test_phantom_reference_without_a_file(tmp_path):
    affine = np.array([[0, 0, -1.5, 10], [0.8, 0, 0, -4], [0, 0.8, 0, 2], [0, 0, 0, 1.0]])
    image = Image(np.zeros((6, 7, 8), np.float32), affine)
    labels = _labels(image.shape3)
    for suffix in (".nii", ".mha"):
        mask = read_mask(
            write_mask(labels, tmp_path / f"m{suffix}", reference=image), reference=image
        )
        np.testing.assert_allclose(mask.affine, affine, atol=1e-5)
        np.testing.assert_array_equal(mask.array, labels)


def test_natural_image_mask_as_png(tmp_path):
    skimage.io.imsave(tmp_path / "photo.png", skimage.data.astronaut()[:30, :40])
    image = read_image(tmp_path / "photo.png")
    labels = _labels((30, 40))
    path = write_mask(labels, tmp_path / "photo_mask.png", reference=image)
    mask = read_mask(path, reference=image)
    assert mask.array.shape == (30, 40, 1) and mask.array.dtype == np.uint8
    np.testing.assert_array_equal(mask.array[:, :, 0], labels)


def test_shape_mismatch_names_both_shapes(tmp_path):
    image = read_image(STANDARD)
    other = Image(np.zeros((5, 5, 5)), np.eye(4))
    path = write_mask(np.zeros((5, 5, 5)), tmp_path / "wrong.nii", reference=other)
    with pytest.raises(ValueError, match=r"wrong.nii: mask shape \(5, 5, 5\) .* \(4, 5, 7\)"):
        read_mask(path, reference=image)
    with pytest.raises(ValueError, match=r"mask shape \(4, 5\) does not match"):
        write_mask(np.zeros((4, 5)), tmp_path / "x.nii", reference=image)


def test_affine_mismatch_is_a_warning_in_words(tmp_path):
    image = read_image(STANDARD)
    moved = image.affine.copy()
    moved[1, 3] += 2.5
    shifted = Image(np.zeros(image.shape3), moved)
    path = write_mask(np.ones(image.shape3), tmp_path / "moved.nii", reference=shifted)
    mask = read_mask(path, reference=image)
    assert mask.warnings == ["mask affine differs from image: max 2.5 mm"]


def test_bad_labels_are_refused(tmp_path):
    image = read_image(STANDARD)
    with pytest.raises(ValueError, match="negative labels"):
        write_mask(np.full(image.shape3, -1), tmp_path / "m.nii", reference=image)
    with pytest.raises(ValueError, match="non-integer values"):
        write_mask(np.full(image.shape3, 0.5), tmp_path / "m.nii", reference=image)
    with pytest.raises(ValueError, match="do not fit uint16"):
        write_mask(np.full(image.shape3, 70000), tmp_path / "m.nii", reference=image)
    with pytest.raises(ValueError, match=r"m.jpg: cannot write masks as '.jpg'"):
        write_mask(np.zeros(image.shape3), tmp_path / "m.jpg", reference=image)
    with pytest.raises(ValueError, match="DICOM SEG needs an image read from a DICOM series"):
        write_mask(np.zeros(image.shape3), tmp_path / "m.dcm", reference=image)


def test_refuses_to_overwrite_the_reference_even_through_a_symlink(tmp_path):
    source = tmp_path / "image.nii"
    shutil.copy(ANATOMICAL, source)
    before = source.read_bytes()
    image = read_image(source)
    with pytest.raises(ValueError, match="refusing to overwrite the reference image"):
        write_mask(np.zeros(image.shape3), source, reference=image)
    link = tmp_path / "link.nii"
    link.symlink_to(source)
    with pytest.raises(ValueError, match="link.nii: refusing to overwrite"):
        write_mask(np.zeros(image.shape3), link, reference=image)
    assert source.read_bytes() == before


def test_overwrite_flag_and_atomic_replacement(tmp_path, monkeypatch):
    image = read_image(STANDARD)
    target = tmp_path / "mask.nii"
    write_mask(np.ones(image.shape3), target, reference=image)
    first = target.read_bytes()
    with pytest.raises(ValueError, match="mask.nii: file exists"):
        write_mask(np.zeros(image.shape3), target, reference=image, overwrite=False)

    def failing_save(nifti, temp):
        temp.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(mask_module.nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_mask(np.zeros(image.shape3), target, reference=image)
    assert target.read_bytes() == first  # the old mask is untouched
    assert os.listdir(tmp_path) == ["mask.nii"]  # and the partial temp file is gone


def test_missing_mask_file(tmp_path):
    image = read_image(STANDARD)
    with pytest.raises(ImageReadError, match="none.nii.gz: no such file"):
        read_mask(tmp_path / "none.nii.gz", reference=image)


def test_one_bit_png_mask_reads_as_labels_zero_and_one(tmp_path):
    from PIL import Image as PilImage

    skimage.io.imsave(tmp_path / "photo.png", skimage.data.camera()[:20, :30], check_contrast=False)
    image = read_image(tmp_path / "photo.png")
    labels = np.zeros((20, 30), bool)
    labels[5:9, 10:25] = True
    PilImage.fromarray(labels).convert("1").save(tmp_path / "bits.png")
    mask = read_mask(tmp_path / "bits.png", reference=image)
    np.testing.assert_array_equal(mask.array[:, :, 0], labels.astype(np.uint8))
    assert read_image(tmp_path / "bits.png").array.max() == 255  # as a picture: white

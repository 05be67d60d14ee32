"""Odd and hostile image files: the right pixels or one clear line, never a silent wrong answer."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import SimpleITK as sitk
import skimage.data
import tifffile

from core import memory
from core.io import ImageReadError, VolumeChoiceRequired, read_image
from core.memory import MemoryLimitError


@pytest.fixture
def camera():
    return skimage.data.camera()[100:140, 200:260]  # 40 x 60 grey


@pytest.mark.parametrize("count", [3, 4])
def test_three_or_four_grey_pages_are_pages_not_colours(tmp_path, camera, count):
    # Pages 60 pixels wide would once pass for (H, W, 3|4) colour channels; narrow ones too.
    narrow = camera[:, :count]
    pages = np.stack([narrow + i for i in range(count)])
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, pages, photometric="minisblack")
    with pytest.raises(VolumeChoiceRequired, match=f"{count} pages"):
        read_image(path)
    chosen = read_image(path, volume=count - 1)
    assert not chosen.is_rgb
    np.testing.assert_array_equal(chosen.array[:, :, 0], narrow + count - 1)


def test_pages_of_different_sizes_read_the_chosen_page(tmp_path, camera):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(camera)
        tiff.write(camera[:20, :30].T.copy())
    np.testing.assert_array_equal(read_image(path, volume=1).array[:, :, 0], camera[:20, :30].T)
    np.testing.assert_array_equal(read_image(path, volume=0).array[:, :, 0], camera)


def test_a_page_asked_of_a_single_page_file_is_an_error(tmp_path, camera):
    for suffix in (".tif", ".png"):
        path = tmp_path / f"one{suffix}"
        PIL.Image.fromarray(camera).save(path)
        with pytest.raises(ImageReadError, match="volume 2 requested but the file has one page"):
            read_image(path, volume=2)
        assert read_image(path, volume=0).shape3 == (40, 60, 1)


def test_animated_png_asks_for_a_frame(tmp_path, camera):
    frames = [PIL.Image.fromarray(camera), PIL.Image.fromarray(255 - camera)]
    path = tmp_path / "anim.png"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(VolumeChoiceRequired, match="2 pages/frames"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, volume=1).array[:, :, 0], 255 - camera)


def test_cmyk_jpeg_and_tiff_are_converted_to_rgb(tmp_path):
    rgb = skimage.data.astronaut()[:32, :48]
    picture = PIL.Image.fromarray(rgb).convert("CMYK")
    picture.save(tmp_path / "cmyk.jpg", quality=95)
    jpeg = read_image(tmp_path / "cmyk.jpg")
    assert jpeg.is_rgb and "CMYK colours converted to RGB" in jpeg.warnings
    assert np.abs(jpeg.array[:, :, 0].astype(int) - rgb).mean() < 10

    tifffile.imwrite(tmp_path / "cmyk.tif", np.asarray(picture), photometric="separated")
    tiff = read_image(tmp_path / "cmyk.tif")
    assert tiff.is_rgb and "CMYK colours converted to RGB" in tiff.warnings
    assert np.abs(tiff.array[:, :, 0].astype(int) - rgb).mean() < 3


def test_white_is_zero_and_palette_tiffs(tmp_path, camera):
    tifffile.imwrite(tmp_path / "inverted.tif", 255 - camera, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "inverted.tif").array[:, :, 0], camera)
    palette = PIL.Image.fromarray(camera).convert("P", palette=PIL.Image.Palette.ADAPTIVE)
    palette.save(tmp_path / "palette.png")
    decoded = read_image(tmp_path / "palette.png")
    assert decoded.is_rgb
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(decoded.array[:, :, 0], expected)


def _nifti(path, array, **header):
    image = nib.Nifti1Image(array, np.eye(4))
    for key, value in header.items():
        image.header[key] = value
    image.to_filename(path)
    return path


def test_complex_nifti_is_refused_and_rgb24_read_as_colour(tmp_path):
    complex_path = _nifti(tmp_path / "c.nii", np.ones((4, 5, 6), np.complex64))
    with pytest.raises(ImageReadError, match="c.nii: voxels are complex numbers"):
        read_image(complex_path)
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 9
    image = read_image(_nifti(tmp_path / "rgb.nii.gz", rgb))
    assert image.is_rgb and image.array.shape == (4, 5, 6, 3)
    assert image.array[..., 1].min() == 9 and image.array[..., 0].max() == 0
    assert "RGB24 voxels read as colour" in image.warnings


def test_non_finite_voxels_are_warned_and_all_non_finite_refused(tmp_path):
    array = np.zeros((4, 5, 6), np.float32)
    array[0, 0, 0], array[1, 1, 1], array[2, 2, 2] = np.nan, np.inf, -np.inf
    image = read_image(_nifti(tmp_path / "some.nii", array))
    assert any(w.startswith("1 NaN and 2 infinite voxels (of 120)") for w in image.warnings)
    with pytest.raises(ImageReadError, match="all.nii: every voxel is NaN or infinite"):
        read_image(_nifti(tmp_path / "all.nii", np.full((4, 5, 6), np.inf, np.float32)))


def _header_only_nifti(path, shape, compressed=False):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    data = header.binaryblock + b"\0" * 4 + b"\0" * 4096
    if compressed:
        import gzip

        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["bomb.nii", "bomb.nii.gz"])
def test_a_header_asking_for_more_memory_than_there_is_is_refused(tmp_path, monkeypatch, name):
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 << 30)  # the same on any machine
    path = _header_only_nifti(tmp_path / name, (4096, 4096, 2048), compressed=name.endswith("gz"))
    words = "reading its 4096x4096x2048 int16 voxels needs 64.0 GiB, 8.0 GiB available"
    with pytest.raises(MemoryLimitError, match=rf"{name}: {words}"):
        read_image(path)
    assert path.stat().st_size < 10_000  # nothing of the claimed 64 GiB was ever there


def test_every_reader_checks_the_memory_before_decoding(tmp_path, monkeypatch, camera):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    PIL.Image.fromarray(camera).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", camera)
    sitk.WriteImage(sitk.GetImageFromArray(camera[None].astype(np.int16)), tmp_path / "a.mha")
    sitk.WriteImage(sitk.GetImageFromArray(camera[None].astype(np.int16)), tmp_path / "a.nrrd")
    files = ["a.png", "a.tif", "a.mha", "a.nrrd"]
    _nifti(tmp_path / "a.nii.gz", camera[:, :, None].astype(np.int16))
    files.append("a.nii.gz")
    from pydicom.data import get_testdata_file

    (tmp_path / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    files.append("ct.dcm")
    for name in files:
        with pytest.raises(MemoryLimitError, match=rf"{name}: .* needs .* MiB, 0.0 MiB available"):
            read_image(tmp_path / name)


def test_memory_message_has_both_figures():
    with pytest.raises(MemoryLimitError) as error:
        memory.require_memory(16 * 2**30, "x.nii: reading its voxels", available=int(9.1 * 2**30))
    assert str(error.value) == "x.nii: reading its voxels needs 16.0 GiB, 9.1 GiB available"


def test_metaimage_data_files_that_are_devices_fifos_or_short(tmp_path):
    fifo = tmp_path / "data.raw"
    os.mkfifo(fifo)
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
    (tmp_path / "fifo.mhd").write_text(header + "ElementDataFile = data.raw\n")
    with pytest.raises(ImageReadError, match="its data file data.raw is not a regular file"):
        read_image(tmp_path / "fifo.mhd")  # would block for ever if opened
    (tmp_path / "zero.mhd").write_text(header + "ElementDataFile = /dev/zero\n")
    with pytest.raises(ImageReadError, match="its data file /dev/zero is not a regular file"):
        read_image(tmp_path / "zero.mhd")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 4, 4), np.int16)), tmp_path / "ok.mha")
    (tmp_path / "short.mha").write_bytes((tmp_path / "ok.mha").read_bytes()[:-20])
    with pytest.raises(ImageReadError, match=r"short.mha: the voxel data is truncated \(108 bytes"):
        read_image(tmp_path / "short.mha")


def test_library_messages_do_not_reach_the_terminal(tmp_path, capfd):
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 4, 4), np.int16)), tmp_path / "ok.mha")
    (tmp_path / "short.mha").write_bytes((tmp_path / "ok.mha").read_bytes()[:-20])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "short.mha")
    header = nib.Nifti1Header()
    image = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4), header)
    image.header["pixdim"][0] = 5  # nibabel warns about an invalid qfac while reading
    image.to_filename(tmp_path / "qfac.nii")
    read_image(tmp_path / "qfac.nii")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_decoded_pictures_are_writable_arrays(tmp_path, camera):
    PIL.Image.fromarray(camera).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").array.flags.writeable

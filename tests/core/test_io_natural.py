"""Natural images: scikit-image's sample pictures saved to a temporary folder and read back."""

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import skimage.io

from core.io import ImageReadError, read_image


@pytest.fixture(scope="module")
def camera():
    return skimage.data.camera()[100:164, 200:296]  # 64 x 96, grey uint8


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()[:48, 10:90]  # 48 x 80 x 3


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_lossless_grey_rows_are_i_and_columns_are_j(tmp_path, camera, suffix):
    path = tmp_path / f"camera{suffix}"
    skimage.io.imsave(path, camera, check_contrast=False)
    image = read_image(path)
    assert image.is_natural and not image.is_rgb and image.ndim_spatial == 2
    assert image.shape3 == (64, 96, 1)
    np.testing.assert_array_equal(image.array[:, :, 0], camera)
    np.testing.assert_array_equal(image.affine, np.eye(4))
    assert image.spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_keeps_uint16(tmp_path, camera, suffix):
    deep = camera.astype(np.uint16) * 257
    path = tmp_path / f"deep{suffix}"
    skimage.io.imsave(path, deep, check_contrast=False)
    image = read_image(path)
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array[:, :, 0], deep)


def test_rgb_png_and_jpeg(tmp_path, astronaut):
    skimage.io.imsave(tmp_path / "a.png", astronaut)
    png = read_image(tmp_path / "a.png")
    assert png.is_rgb and png.array.shape == (48, 80, 1, 3)
    np.testing.assert_array_equal(png.array[:, :, 0], astronaut)

    iio.imwrite(tmp_path / "a.jpg", astronaut, quality=95)
    jpeg = read_image(tmp_path / "a.jpg")
    assert jpeg.array.shape == (48, 80, 1, 3) and jpeg.array.dtype == np.uint8
    error = np.abs(jpeg.array[:, :, 0].astype(int) - astronaut).mean()
    assert error < 8  # lossy, but the same picture


def test_alpha_is_dropped_with_a_warning(tmp_path, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 128, np.uint8)])
    skimage.io.imsave(tmp_path / "alpha.png", rgba)
    image = read_image(tmp_path / "alpha.png")
    assert image.array.shape == (48, 80, 1, 3)
    assert image.warnings == ["transparency (alpha channel) ignored"]


def test_multipage_tiff_needs_a_page(tmp_path, camera):
    pages = np.stack([camera, camera[::-1]])
    skimage.io.imsave(tmp_path / "pages.tif", pages, check_contrast=False)
    with pytest.raises(ImageReadError, match="pages.tif: 2 pages/frames"):
        read_image(tmp_path / "pages.tif")
    second = read_image(tmp_path / "pages.tif", volume=1)
    np.testing.assert_array_equal(second.array[:, :, 0], camera[::-1])


def test_corrupt_png(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageReadError, match="broken.png: cannot decode image"):
        read_image(path)

"""DICOM reading on pydicom's test files, against pydicom, SimpleITK and hand-worked geometry."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from core.io import ImageReadError, list_dicom_series, read_image
from tests.dicom_series import write_multi_echo_copy

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
DICOMDIR_TESTS = CT_SMALL.parent / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"
CT2 = DICOMDIR_TESTS / "77654033" / "CT2"
MR1 = DICOMDIR_TESTS / "98892003" / "MR1"
MR2 = DICOMDIR_TESTS / "98892003" / "MR2"


def _ras_position(dataset, i, j):
    """World RAS of pixel (column i, row j) by the DICOM formula, written out by hand."""
    ipp = np.array([float(v) for v in dataset.ImagePositionPatient])
    iop = np.array([float(v) for v in dataset.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    lps = ipp + iop[:3] * column_spacing * i + iop[3:] * row_spacing * j
    return lps * [-1, -1, 1]


def test_ct_small_is_rescaled_to_hounsfield_units():
    image = read_image(CT_SMALL)
    dataset = pydicom.dcmread(CT_SMALL)
    expected = apply_modality_lut(dataset.pixel_array, dataset)
    assert image.array.dtype == np.int16  # slope 1, intercept -1024: exact in int16
    assert image.shape3 == (128, 128, 1)
    np.testing.assert_array_equal(image.array[:, :, 0], expected.T)  # i = column, j = row
    assert image.rescale == (1.0, -1024.0)
    assert image.modality == "CT"
    for i, j in [(0, 0), (127, 0), (5, 90)]:
        np.testing.assert_allclose(image.voxel_to_world([i, j, 0]), _ras_position(dataset, i, j))
    assert image.spacing[2] == pytest.approx(float(dataset.SliceThickness))


def test_ct5n_spacing_order_and_window():
    image = read_image(CT5N)
    assert image.shape3 == (16, 16, 5)
    assert image.spacing == pytest.approx((0.488281, 0.488281, 2.5))
    assert image.window == (40.0, 400.0)
    assert image.warnings == []
    # Every file's slice sits at the k whose world position is that file's IPP.
    for file in CT5N.iterdir():
        dataset = pydicom.dcmread(file)
        origin = _ras_position(dataset, 0, 0)
        k = image.world_to_voxel(origin)
        np.testing.assert_allclose(k[:2], [0, 0], atol=1e-9)
        index = int(round(k[2]))
        assert abs(k[2] - index) < 1e-6
        np.testing.assert_array_equal(
            image.array[:, :, index], apply_modality_lut(dataset.pixel_array, dataset).T
        )


def test_ct5n_equals_simpleitk_after_lps_to_ras():
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(CT5N)))
    itk_image = reader.Execute()
    image = read_image(CT5N)
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(itk_image.GetDirection(), (3, 3)) * itk_image.GetSpacing()
    lps[:3, 3] = itk_image.GetOrigin()
    np.testing.assert_allclose(image.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-5)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(itk_image).T)


def test_ct2_gap_is_reported_in_words():
    image = read_image(CT2)
    assert image.shape3 == (16, 16, 4)
    assert image.spacing[2] == pytest.approx(1.25)
    (warning,) = image.warnings
    assert warning.startswith("non-uniform slice spacing: max deviation 201.25 mm")
    assert "202.50 mm" in warning


@pytest.mark.parametrize("folder", [MR1, MR2])
def test_mr_folders_list_three_series_and_read_each(folder):
    series = list_dicom_series(folder)
    assert len(series) == 3
    files = [pydicom.dcmread(f) for f in folder.iterdir()]
    assert {s.uid for s in series} == {str(ds.SeriesInstanceUID) for ds in files}
    assert sum(s.n_slices for s in series) == len(files)
    assert [s.n_slices for s in series] == sorted((s.n_slices for s in series), reverse=True)
    for entry in series:
        assert entry.modality == "MR" and (entry.rows, entry.columns) == (16, 16)
        assert entry.description in {"FAST LOCALIZER", "T/S/C RF FAST PILOT"}
        image = read_image(folder, series=entry.uid)
        assert image.modality == "MR"
        assert image.shape3[:2] == (16, 16)
    unpicked = read_image(folder)
    assert unpicked.warnings[0].startswith("folder has 3 series; read the largest")
    assert series[0].uid in unpicked.warnings[0] and series[2].uid in unpicked.warnings[0]


def test_mixed_orientations_in_one_series_keep_one_orientation():
    localizer = next(s for s in list_dicom_series(MR2) if s.n_slices == 3)
    image = read_image(MR2, series=localizer)
    assert image.shape3 == (16, 16, 1)
    assert any("mixes 3 slice orientations" in w for w in image.warnings)


def test_folder_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no DICOM images in this folder"):
        read_image(tmp_path)
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(ImageReadError, match="no DICOM images"):
        read_image(tmp_path)
    with pytest.raises(ImageReadError, match=r"CT5N: series 1\.2\.3 not found; available"):
        read_image(CT5N, series="1.2.3")
    with pytest.raises(ImageReadError, match="not a folder"):
        list_dicom_series(tmp_path / "nowhere")


def test_truncated_dicom_file_names_the_file(tmp_path):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(CT_SMALL.read_bytes()[:-5000])
    with pytest.raises(ImageReadError, match="broken.dcm") as info:
        read_image(broken)
    assert "\n" not in str(info.value)


def test_duplicate_positions_are_refused(tmp_path):
    for file in CT5N.iterdir():
        shutil.copy(file, tmp_path / file.name)
    first = next(tmp_path.iterdir())
    dataset = pydicom.dcmread(first)
    dataset.SOPInstanceUID = dataset.SOPInstanceUID + ".9"
    dataset.save_as(tmp_path / "copy.dcm")
    with pytest.raises(ImageReadError, match="2 slices share a position"):
        read_image(tmp_path)


def test_multi_echo_series_asks_for_a_volume_and_reads_each_echo(tmp_path):
    folder = tmp_path / "echoes"
    write_multi_echo_copy(CT5N, folder)
    (listed,) = list_dicom_series(folder)
    assert listed.n_slices == 15 and listed.volumes == 3 and "in 3 volumes" in listed.label()
    assert list_dicom_series(CT5N)[0].volumes == 1
    with pytest.raises(ImageReadError, match=r"4-D image with 3 volumes \(by EchoNumbers: 1, 2, 3"):
        read_image(folder)
    reference = read_image(CT5N)
    for echo in range(3):
        image = read_image(folder, volume=echo)
        np.testing.assert_array_equal(image.affine, reference.affine)
        np.testing.assert_array_equal(
            image.array.astype(np.int32), reference.array.astype(np.int32) + 100 * echo
        )
        assert any("3 volumes" in w and f"volume {echo}" in w for w in image.warnings)
    with pytest.raises(ImageReadError, match="volume 3 out of range"):
        read_image(folder, volume=3)
    with pytest.raises(ImageReadError, match="volume 1 requested but the series has one"):
        read_image(CT5N, volume=1)


def test_multi_volume_series_without_a_separating_tag_keeps_file_order(tmp_path):
    for copy in range(2):
        for file in sorted(CT5N.iterdir()):
            dataset = pydicom.dcmread(file)
            dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{copy}"
            dataset.PixelData = (dataset.pixel_array + 7 * copy).astype("<i2").tobytes()
            dataset.save_as(tmp_path / f"v{copy}_{file.name}.dcm")
    with pytest.raises(ImageReadError, match=r"2 volumes \(in file order"):
        read_image(tmp_path)
    first, second = read_image(tmp_path, volume=0), read_image(tmp_path, volume=1)
    np.testing.assert_array_equal(second.array.astype(int) - first.array.astype(int), 7)


def test_rt_dose_multiframe_uses_grid_offsets_and_dose_scaling():
    path = get_testdata_file("rtdose.dcm")
    dataset = pydicom.dcmread(path)
    image = read_image(path)
    assert image.shape3 == (10, 10, 15)
    assert image.spacing[2] == pytest.approx(5.0)  # GridFrameOffsetVector steps of 5 mm
    expected = dataset.pixel_array.astype(np.float64) * float(dataset.DoseGridScaling)
    np.testing.assert_allclose(image.array, expected.transpose(2, 1, 0), rtol=1e-6)
    last = _ras_position(dataset, 0, 0) + [0, 0, float(dataset.GridFrameOffsetVector[-1])]
    np.testing.assert_allclose(image.voxel_to_world([0, 0, 14]), last)


def test_enhanced_multiframe_reads_functional_groups():
    path = get_testdata_file("liver_1frame.dcm")
    dataset = pydicom.dcmread(path)
    image = read_image(path)
    shared = dataset.SharedFunctionalGroupsSequence[0]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    position = dataset.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    lps = [float(v) for v in position.ImagePositionPatient]
    assert image.spacing[:2] == pytest.approx(spacing)
    np.testing.assert_allclose(image.voxel_to_world([0, 0, 0]), [-lps[0], -lps[1], lps[2]])
    np.testing.assert_array_equal(image.array[:, :, 0], dataset.pixel_array.T)


def test_colour_dicom_without_geometry_warns():
    path = get_testdata_file("examples_rgb_color.dcm")
    image = read_image(path)
    assert image.is_rgb and image.array.shape == (320, 240, 1, 3)
    np.testing.assert_array_equal(
        image.array[:, :, 0], pydicom.dcmread(path).pixel_array.transpose(1, 0, 2)
    )
    assert any("patient geometry unknown" in w for w in image.warnings)


def test_truncated_pixel_data_and_non_image_files():
    with pytest.raises(ImageReadError, match="MR_truncated.dcm: cannot decode pixel data"):
        read_image(get_testdata_file("MR_truncated.dcm"))
    with pytest.raises(ImageReadError, match="rtplan.dcm: not a DICOM image file"):
        read_image(get_testdata_file("rtplan.dcm"))


def test_dicomdir_reads_its_folder():
    image = read_image(DICOMDIR_TESTS / "DICOMDIR", series=list_dicom_series(CT5N)[0].uid)
    np.testing.assert_array_equal(image.array, read_image(CT5N).array)


def test_oblique_series_with_precise_cosines_keeps_its_exact_geometry(tmp_path):
    from tests.dicom_series import write_dicom_series

    angle = np.deg2rad(7.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.8, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 30.0]
    volume = np.arange(20 * 18 * 6, dtype=np.int16).reshape(20, 18, 6)
    write_dicom_series(volume, affine, tmp_path / "series")
    image = read_image(tmp_path / "series")
    assert not any("shear" in w or "tilt" in w for w in image.warnings), image.warnings
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(image.array), volume)

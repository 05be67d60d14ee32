"""Words and numbers a new user reads: sizes, modalities, series entries, windows, ground truths
that are not label maps and their own label names (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import skimage.io
from pydicom.data import get_testdata_file
from skimage import data

from core.display import cursor_info, default_window, format_window, image_presets, round_window
from core.display.window import WINDOW_PRESETS
from core.io import Image, ImageReadError, VolumeOutOfRange, list_dicom_series, read_image
from core.io.dicom import DicomSeries, series_titles
from core.io.errors import NO_DICOM_IMAGES
from core.io.image import normalised_modality
from core.io.mask import label_map_warning, read_mask

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


# --- sizes and modality words ------------------------------------------------------------


def test_size_is_columns_rows_slices_for_every_format(tmp_path):
    picture = np.zeros((30, 50, 3), np.uint8)  # 30 rows, 50 columns
    skimage.io.imsave(tmp_path / "p.png", picture, check_contrast=False)
    natural = read_image(tmp_path / "p.png")
    assert natural.size == (50, 30) and natural.size_text() == "50 x 30 pixels"
    nifti = read_image(NIBABEL_DATA / "anatomical.nii")
    assert nifti.size == nib.load(NIBABEL_DATA / "anatomical.nii").shape
    dicom = read_image(get_testdata_file("CT_small.dcm"))
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert dicom.size == (header.Columns, header.Rows, 1)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("CT", "CT"), ("mr", "MR"), ("MET_MOD_MR", "MR"), ("MET_MOD_UNKNOWN", ""), (" ct ", "CT")],
)
def test_modality_has_one_spelling(given, expected):
    assert normalised_modality(given) == expected
    image = Image(array=np.zeros((2, 2, 2)), affine=np.eye(4), modality=given)
    assert image.modality == expected


# --- DICOM series: distinct entries, wrapped warnings, one wording ---------------------------


def _series(uid: str, **changes) -> DicomSeries:
    fields = {"description": "T1", "modality": "MR", "n_slices": 3, "rows": 4, "columns": 5}
    return DicomSeries(uid=uid, files=(), **{**fields, **changes})


def test_series_titles_say_number_date_and_size_and_never_repeat():
    a = _series("1.2.3", number=3, date="2024-01-31 10:22:05")
    assert a.title() == '#3 "T1" MR, 3 slices, 5 x 4, 2024-01-31 10:22:05'
    twin = _series("1.2.4", number=3, date="2024-01-31 10:22:05")
    other = _series("1.2.5", number=4)
    titles = series_titles([a, twin, other])
    assert len(set(titles)) == 3
    assert titles[0].endswith("(1.2.3)") and titles[1].endswith("(1.2.4)")
    assert titles[2] == other.title()


def test_pydicom_mixed_folder_lists_dates_and_wraps_its_warning():
    folder = Path(get_testdata_file("dicomdirtests/77654033/CT2/17136")).parent.parent
    found = list_dicom_series(folder)
    assert len(found) >= 2
    headers = {
        str(ds.SeriesInstanceUID): ds
        for ds in (pydicom.dcmread(f, stop_before_pixels=True) for s in found for f in s.files)
    }
    for series in found:
        header = headers[series.uid]
        assert series.number == int(header.SeriesNumber)
        date = str(header.get("SeriesDate", "") or header.get("AcquisitionDate", "") or "")
        if len(date) == 8:
            assert series.date.startswith(f"{date[:4]}-{date[4:6]}-{date[6:]}")
    assert len(set(series_titles(found))) == len(found)
    image = read_image(folder)
    warning = next(w for w in image.warnings if "series" in w)
    lines = warning.splitlines()
    assert len(lines) == len(found)  # the summary, then one line per other series
    assert all(len(line) < 200 for line in lines)


def test_one_wording_for_a_folder_without_dicom_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ImageReadError, match=NO_DICOM_IMAGES):
        read_image(tmp_path)
    from core.cli.info import describe_path

    with pytest.raises(ValueError, match=NO_DICOM_IMAGES):
        describe_path(tmp_path)


def test_a_volume_past_the_last_is_its_own_error():
    with pytest.raises(VolumeOutOfRange, match="volume 5"):
        read_image(NIBABEL_DATA / "example4d.nii.gz", volume=5)
    with pytest.raises(VolumeOutOfRange):
        read_image(NIBABEL_DATA / "anatomical.nii", volume=1)


# --- windows ------------------------------------------------------------------------------


def test_default_window_is_rounded_like_a_reader_says_it():
    assert round_window(37.0635, 1830.13) == (37.0, 1830.0)
    assert format_window(37.0635, 1830.13) == "W 1830 L 37"
    assert round_window(0.43127, 0.81234) == (0.431, 0.812)  # 0-1 images keep 3 digits
    assert round_window(5.0, 0.004) == (5.0, 0.004)
    values = np.random.default_rng(1).normal(37, 400, size=(40, 40, 20)).astype(np.float32)
    center, width = default_window(values)
    low, high = np.percentile(values, [0.1, 99.9])
    assert center == round(center) and width == round(width)
    assert abs(center - (low + high) / 2) <= 0.5 and abs(width - (high - low)) <= 0.5


def test_presets_follow_the_modality():
    ct = np.full((20, 20, 5), -1000, np.int16)
    ct[5:15, 5:15] = 40
    assert image_presets(ct, modality="") == WINDOW_PRESETS  # NIfTI CT: air says HU
    assert image_presets(ct, modality="CT") == WINDOW_PRESETS
    mr = np.asarray(nib.load(NIBABEL_DATA / "anatomical.nii").dataobj).astype(np.float32)
    presets = image_presets(mr, modality="")  # an MR down to -610: not CT
    low, high = np.percentile(mr, [1, 99])
    assert [p.key for p in presets] == ["1", "2"]
    assert presets[0].center == pytest.approx((low + high) / 2, abs=0.5)
    assert presets[1].width == pytest.approx(mr.max() - mr.min(), abs=0.5)
    photo = np.asarray(data.camera())[:, :, None]
    natural = image_presets(photo, natural=True)
    low, high = natural[1].center - natural[1].width / 2, natural[1].center + natural[1].width / 2
    assert (low, high) == pytest.approx((photo.min(), photo.max()), abs=0.5)  # rounded to 1


# --- ground truths that are not label maps, and their own names ---------------------------


def test_a_grey_photo_as_ground_truth_is_named_with_its_values(tmp_path):
    photo = np.asarray(data.camera())[::4, ::4]
    skimage.io.imsave(tmp_path / "grey.png", photo, check_contrast=False)
    image = Image(array=np.zeros((*photo.shape, 1, 3), np.uint8), affine=np.eye(4), is_natural=True)
    mask = read_mask(tmp_path / "grey.png", reference=image)
    warning = next(w for w in mask.warnings if "label map" in w)
    assert f"{len(np.unique(photo))} distinct values" in warning
    assert str(int(photo.max())) in warning


def test_many_class_label_maps_and_smooth_probability_maps_are_told_apart():
    # TotalSegmentator-like: over a hundred classes, each a region 10 voxels across.
    i, j = np.meshgrid(np.arange(100), np.arange(100), indexing="ij")
    labels = np.repeat((1 + (i // 10) * 12 + j // 10)[:, :, None], 20, axis=2).astype(np.uint8)
    assert len(np.unique(labels)) == 100
    assert label_map_warning(labels) is None
    x = np.linspace(-1, 1, 60)
    blob = np.exp(-(x[:, None, None] ** 2 + x[None, :, None] ** 2 + (x[None, None, :40] ** 2)) * 3)
    probability = np.rint(blob * 255).astype(np.uint8)
    assert "does not look like a label map" in label_map_warning(probability)


def test_ground_truth_names_come_from_its_own_file(tmp_path):
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 2
    image = Image(array=np.zeros((6, 5, 4), np.int16), affine=np.eye(4))
    itk = sitk.GetImageFromArray(labels.transpose(2, 1, 0))
    itk.SetMetaData("Segment0_Name", "spleen")
    itk.SetMetaData("Segment0_LabelValue", "2")
    sitk.WriteImage(itk, str(tmp_path / "truth.seg.nrrd"))
    mask = read_mask(tmp_path / "truth.seg.nrrd", reference=image)
    assert mask.names == {2: "spleen"}
    folder = tmp_path / "nnunet" / "labelsTr"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), folder / "case.nii.gz")
    dataset = {"labels": {"background": 0, "liver": 1, "spleen": 2}}
    (folder.parent / "dataset.json").write_text(json.dumps(dataset))
    assert read_mask(folder / "case.nii.gz", reference=image).names == {
        0: "background",
        1: "liver",
        2: "spleen",
    }
    model_names = ["background", "liver", "kidney"]
    info = cursor_info(
        image,
        (1, 1, 1),
        ground_truth=labels,
        prediction=labels,
        names=model_names,
        ground_truth_names=mask.names,
    )
    assert info.ground_truth_name == "spleen" and info.prediction_name == "kidney"

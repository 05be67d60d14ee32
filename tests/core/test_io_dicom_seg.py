"""DICOM SEG out and in: round trips on pydicom's CT5N series, checked with highdicom, pydicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from core.io import read_image, read_mask, write_mask
from core.io.dicom_seg import read_dicom_seg, write_dicom_seg
from core.phantom import make_phantom
from tests.dicom_series import write_dicom_series

CT5N = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
NAMES = ["background", "liver", "lesion"]
COLORS = [(0, 0, 0), (200, 40, 40), (40, 200, 90)]


@pytest.fixture(scope="module")
def ct5n():
    return read_image(CT5N)


def _mask(shape):
    mask = np.zeros(shape, np.uint8)
    mask[2:9, 3:12, 0:3] = 1
    mask[10:14, 1:5, 2:5] = 2
    return mask


def _source_by_uid():
    by_uid = {}
    for file in CT5N.iterdir():
        header = pydicom.dcmread(file, stop_before_pixels=True)
        by_uid[header.SOPInstanceUID] = header
    return by_uid


def test_binary_round_trip_frames_sit_on_their_source_slices(ct5n, tmp_path):
    mask = _mask(ct5n.shape3)
    path = write_mask(mask, tmp_path / "seg.dcm", reference=ct5n, class_names=NAMES, colors=COLORS)
    # pydicom alone: every frame names its source instance, sits at that instance's position,
    # and holds the mask's slice there (DICOM rows run along the image's j axis).
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    sources = _source_by_uid()
    series = {h.SeriesInstanceUID for h in sources.values()}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID in series
    pixels = seg.pixel_array
    rebuilt = np.zeros_like(mask)
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source = sources[uid]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in source.ImagePositionPatient])
        ras = np.diag([-1, -1, 1]) @ np.asarray(position)
        k = int(round(ct5n.world_to_voxel(ras)[2]))
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        rebuilt[:, :, k][pixels[index].T.astype(bool)] = number
    np.testing.assert_array_equal(rebuilt, mask)
    # highdicom: segment names and colours.
    read = hd.seg.segread(path)
    labels = [read.get_segment_description(n).segment_label for n in read.segment_numbers]
    assert labels == NAMES[1:]
    lab = read.get_segment_description(1).RecommendedDisplayCIELabValue
    color = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
    assert np.abs(np.asarray(color, float) - COLORS[1]).max() <= 2
    # segbench's reader, through read_mask.
    np.testing.assert_array_equal(read_mask(path, reference=ct5n).array, mask)


def test_fractional_round_trip_keeps_probabilities_to_8_bits(ct5n, tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=ct5n.shape3).transpose(3, 0, 1, 2).astype(np.float32)
    mask = probs.argmax(0).astype(np.uint8)
    path = write_dicom_seg(
        mask, tmp_path / "frac.dcm", reference=ct5n, class_names=NAMES, probabilities=probs
    )
    read = hd.seg.segread(path)
    assert read.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    uids = [
        h.SOPInstanceUID
        for h in sorted(
            _source_by_uid().values(),
            key=lambda h: ct5n.world_to_voxel(
                np.diag([-1, -1, 1]) @ np.asarray([float(v) for v in h.ImagePositionPatient])
            )[2],
        )
    ]
    frames = read.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    np.testing.assert_allclose(
        frames.transpose(2, 1, 0, 3), np.moveaxis(probs[1:], 0, -1), atol=0.5 / 255 + 1e-6
    )
    expected = np.where(probs[1:].max(0) >= 0.5, probs[1:].argmax(0) + 1, 0)
    back = read_dicom_seg(path, reference=ct5n)
    # Voxels within a quantization step of 0.5 may fall either way.
    clear = np.abs(probs[1:].max(0) - 0.5) > 1 / 255
    np.testing.assert_array_equal(back[clear], expected[clear])


def test_a_seg_of_another_series_is_refused_in_words(tmp_path):
    image, _ = make_phantom(1, shape=(16, 16, 16), spacing=(1.0, 1.0, 2.0))
    write_dicom_series(image.array.astype(np.int16), image.affine, tmp_path / "a")
    write_dicom_series(image.array.astype(np.int16), image.affine, tmp_path / "b")
    first, second = read_image(tmp_path / "a"), read_image(tmp_path / "b")
    path = write_dicom_seg(
        _mask(first.shape3), tmp_path / "a.dcm", reference=first, class_names=NAMES
    )
    with pytest.raises(ValueError, match="made on series .* not on the image's series"):
        read_mask(path, reference=second)


def test_writing_a_seg_for_a_nifti_image_is_refused(tmp_path):
    image, _ = make_phantom(1, shape=(16, 16, 16), spacing=(1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="DICOM SEG needs"):
        write_dicom_seg(
            np.zeros(image.shape3, np.uint8), tmp_path / "x.dcm", reference=image, class_names=NAMES
        )

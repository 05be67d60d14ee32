"""Write a synthetic DICOM series with known geometry (tests and the I/O benchmark use it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom_series(volume: np.ndarray, affine: np.ndarray, folder: Path) -> None:
    """Write ``volume`` (I, J, K) as one CT DICOM file per k slice, geometry from ``affine``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0])
    # DICOM rows follow the column direction: pixel (row r, column c) = voxel (i=c, j=r).
    row_dir = lps @ affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    col_dir = lps @ affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Phantom^Bench", "bench"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        position = lps @ (affine[:3, :3] @ [0, 0, k] + affine[:3, 3])
        # Many decimals so the files carry the phantom's geometry exactly; the voxel comparison
        # below then checks the reader, not the writer's rounding.
        ds.ImagePositionPatient = [f"{v:.8f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.12f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).astype("<i2").tobytes()
        ds.save_as(folder / f"slice{k:04d}.dcm", enforce_file_format=True)


def write_multi_echo_copy(series: Path, folder: Path, echoes: int = 3) -> None:
    """Copy a single-volume series once per echo (EchoNumbers 1..echoes, pixels + 100 per echo).

    Instance numbers run backwards through the echoes, so a reader must order the volumes by
    the echo numbers, not by instance numbers or file names.
    """
    import pydicom

    folder.mkdir(parents=True)
    files = sorted(series.iterdir())
    for e in range(echoes):
        for n, file in enumerate(files):
            dataset = pydicom.dcmread(file)
            dataset.SOPInstanceUID = f"{dataset.SOPInstanceUID}.{e + 1}"
            dataset.EchoNumbers = e + 1
            dataset.InstanceNumber = (echoes - e) * 100 + n
            dataset.PixelData = (dataset.pixel_array + 100 * e).astype("<i2").tobytes()
            dataset.save_as(folder / f"x{(echoes - e) * 100 + n}.dcm")

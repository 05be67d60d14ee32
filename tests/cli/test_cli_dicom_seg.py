"""`segment --out-format dicom-seg`: a DICOM SEG of the input series, read back per class."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom

from core.io import read_image, read_mask
from core.phantom import make_phantom
from tests.cli.conftest import run_cli
from tests.dicom_series import write_dicom_series


def test_segment_command_writes_a_dicom_seg_of_the_series(cli_data, tmp_path):
    image, _ = make_phantom(1, shape=(32, 32, 16), spacing=(1.5, 1.25, 3.0))
    series = tmp_path / "series"
    write_dicom_series(image.array.astype(np.int16), image.affine, series)
    out, report = tmp_path / "out" / "mask.seg", tmp_path / "r.json"
    out.parent.mkdir()
    result = run_cli(
        "segment", series, "--model", cli_data.model, "--decision", "argmax", "--out", out,
        "--out-format", "dicom-seg", "--report", report, "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG"
    read = read_mask(shutil.copy(out, tmp_path / "mask.dcm"), reference=read_image(series)).array
    rows = json.loads(report.read_text())["classes"]
    assert [int((read == row["label"]).sum()) for row in rows] == [row["voxels"] for row in rows]

"""The headless commands on nnU-Net model folders: info, segment (with --folds), hostile files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.cli.conftest import run_cli
from tests.frameworks.conftest import raw_case
from tests.frameworks.test_nnunet import hostile_checkpoint_folder, hostile_plans_folder


def test_info_names_framework_configuration_and_folds(nnunet_3d: Path) -> None:
    done = run_cli("info", nnunet_3d, "--folds", "1")
    assert done.returncode == 0, done.stderr
    assert "framework: nnU-Net v2" in done.stdout
    assert "configuration: 3d_fullres" in done.stdout
    assert "folds: 1\n" in done.stdout
    as_json = json.loads(run_cli("info", nnunet_3d, "--json").stdout)
    assert as_json["framework"]["folds"] == ["0", "1"]


def test_segment_writes_mask_on_the_image_grid(nnunet_3d: Path, tmp_path: Path) -> None:
    image = raw_case(nnunet_3d)[0]
    out, report = tmp_path / "mask.nii.gz", tmp_path / "report.json"
    done = run_cli(
        "segment", image, "--model", nnunet_3d, "--folds", "0", "--no-mirroring",
        "--decision", "rma-dice", "--out", out, "--report", report, "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written, source = nib.load(out), nib.load(image)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert json.loads(report.read_text())["model"]["name"].startswith("Dataset501_Tiny 3d_fullres")


def test_segment_on_onnxruntime_writes_nearly_the_same_mask(
    nnunet_3d: Path, tmp_path: Path
) -> None:
    image = raw_case(nnunet_3d)[0]
    masks = {}
    for backend in ("torch", "onnxruntime"):
        out, report = tmp_path / f"{backend}.nii.gz", tmp_path / f"{backend}.json"
        done = run_cli(
            "segment", image, "--model", nnunet_3d, "--folds", "0", "--no-mirroring",
            "--backend", backend, "--out", out, "--report", report, "--quiet",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        masks[backend] = np.asarray(nib.load(out).dataobj)
    # Untrained random folds leave near-ties, which float differences of ~1e-3 may flip.
    assert np.mean(masks["onnxruntime"] == masks["torch"]) >= 0.999


def test_hostile_folders_exit_1_and_run_nothing(nnunet_3d: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    checkpoint = hostile_checkpoint_folder(nnunet_3d, tmp_path, marker)
    plans = hostile_plans_folder(nnunet_3d, tmp_path)
    image = raw_case(nnunet_3d)[0]
    for args in (
        ("info", checkpoint),
        ("segment", image, "--model", checkpoint, "--out", tmp_path / "m.nii.gz"),
        ("quantize", "--model", checkpoint, "--calib", image, "--out", tmp_path / "q"),
        ("info", plans),
    ):
        done = run_cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "--trust" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists()

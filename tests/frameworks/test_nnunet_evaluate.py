"""``evaluate`` over an nnU-Net dataset: multi-channel cases named case_0000, case_0001, ..."""

from __future__ import annotations

import json
from pathlib import Path

from core.cli.matching import pair_cases
from tests.cli.conftest import run_cli


def test_further_channel_files_are_not_cases() -> None:
    images = [Path(f"/d/{c}_{k:04d}.nii.gz") for c in ("a", "b") for k in (0, 1)]
    labels = [Path("/l/a.nii.gz"), Path("/l/b.nii.gz")]
    pairing = pair_cases(images, labels)
    assert [case.image.name for case in pairing.cases] == ["a_0000.nii.gz", "b_0000.nii.gz"]
    assert not pairing.unmatched_images and not pairing.unmatched_labels


def test_evaluate_a_two_channel_region_model(nnunet_regions: Path, tmp_path: Path) -> None:
    raw = nnunet_regions.parents[2] / "nnUNet_raw" / nnunet_regions.parent.name
    report = tmp_path / "report.json"
    done = run_cli(
        "evaluate", "--model", nnunet_regions, "--no-mirroring",
        "--images", raw / "imagesTr", "--labels", raw / "labelsTr",
        "--decisions", "argmax,rma-dice", "--report", report, "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert len(result["cases"]) == 3
    assert not result["unmatched"]["images"] and not result["unmatched"]["labels"]
    assert {row["decision"] for row in result["per_case"]} == {"argmax", "rma-dice"}
    assert {row["class"] for row in result["per_case"]} >= {"whole", "core"}

"""``evaluate --fit-calibration``: a calibrated, guarded copy fitted on a separate split."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from core.io import read_image
from core.models import load_model, predict
from core.probability_calibration import ReliabilityTally
from core.probability_calibration.model_fit import fit_from_probabilities
from tests.cli.conftest import run_cli


@pytest.mark.slow
def test_evaluate_fits_on_the_calibration_split_and_scores_the_copy(cli_data, tmp_path):
    report_path, copy, plots = tmp_path / "eval.json", tmp_path / "calibrated", tmp_path / "plots"
    result = run_cli(
        "evaluate", "--model", cli_data.model, "--images", cli_data.image,
        "--labels", cli_data.labels, "--fit-calibration", cli_data.image2,
        "--calibrated-model", copy, "--calibration-plots", plots, "--report", report_path,
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no image file matches" not in result.stderr  # case02's label is the split's
    report = json.loads(report_path.read_text())
    fit = report["calibration_fit"]
    assert [c["name"] for c in fit["cases"]] == ["case02"]
    # The same fit computed here from the model's own probabilities on the split.
    model = load_model(cli_data.model)
    image = read_image(cli_data.image2)
    truth = np.asarray(nib.load(cli_data.label2).dataobj)
    here = fit_from_probabilities(
        [(predict(model, image, device="cpu"), truth)],
        class_names=model.spec.class_names,
        activation="softmax",
    )
    assert fit["calibration"]["temperature"] == pytest.approx(here.calibration.temperature, 1e-3)
    assert fit["calibration"]["guard"]["rules"] == list(here.calibration.guard.rules)
    saved = load_model(copy)
    assert saved.spec.probability_calibration.guard == here.calibration.guard
    # Both models scored on the test case, with the guarded rule added for every model.
    ids = [m["id"] for m in report["models"]]
    assert len(ids) == 2 and "calibrated" in ids[1]
    assert report["decisions"] == ["argmax", "rma-dice", "guarded"]
    guarded = [r for r in report["per_case"] if r["model"] == ids[1] and r["decision"] == "guarded"]
    assert [r["rule"] for r in guarded] == list(here.calibration.guard.rules)
    assert all(r["case"] == "case01" for r in report["per_case"])
    # Calibration measured on the test case per model, as a tally here gives it.
    tally = ReliabilityTally(list(model.spec.class_names))
    test_image = read_image(cli_data.image)
    tally.add(
        predict(saved, test_image, device="cpu"), np.asarray(nib.load(cli_data.label).dataobj)
    )
    for row, cls in zip(report["calibration"][ids[1]], tally.classes(), strict=True):
        assert row["ece"] == pytest.approx(cls.ece, rel=1e-4, abs=1e-7)
        assert row["tail_positives"] == cls.tail_positives
    assert sorted(p.suffix for p in plots.iterdir()) == [".png", ".png", ".svg", ".svg"]
    assert "probability calibration on the test cases" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fit-calibration", "IMAGE2"], "needs --calibrated-model"),
        (["--fit-calibration", "IMAGE", "--calibrated-model", "OUT"], "also test cases"),
        (["--vector-scaling"], "need --fit-calibration"),
    ],
)
def test_calibration_options_that_make_no_sense_exit_2(cli_data, tmp_path, extra, message):
    names = {"IMAGE": cli_data.image, "IMAGE2": cli_data.image2, "OUT": tmp_path / "copy"}
    result = run_cli(
        "evaluate", "--model", cli_data.model, "--images", cli_data.image,
        "--labels", cli_data.labels, "--report", tmp_path / "r.json", "--device", "cpu",
        *[str(names.get(a, a)) for a in extra],
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "copy").exists()

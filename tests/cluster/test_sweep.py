"""Quantization sweeps as Ray tasks: variants equal to ``quantize``'s, scored as ``evaluate``."""

from __future__ import annotations

import json

import pytest
from safetensors.numpy import load_file

from core.cluster import ClusterOptions
from core.evaluation import EvaluationSettings, evaluate_cases
from core.quant import QuantConfig
from core.sweep import SweepPoint, run_sweep
from tests.cli.conftest import run_cli

SETTINGS = EvaluationSettings(decisions=("argmax",), device="cpu")


def weights(folder):
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {k: v for f in files for k, v in load_file(f).items()}


@pytest.mark.slow
def test_sweep_on_ray_saves_quantize_s_variants_and_scores_them_as_evaluate_does(
    eval_data, ray_cluster, tmp_path
):
    model = eval_data.models[0]
    calib = [str(eval_data.cases[0].image)]
    points = [SweepPoint("rtn", 2, 0), SweepPoint("rtn", 8, 0), SweepPoint("flexround", 4, 1)]
    base = QuantConfig(method="rtn", bits=4, iters=2, batch_size=2, device="cpu")
    cases = eval_data.cases[:2]
    rows, report = run_sweep(
        model, calib, cases, points, base, SETTINGS, tmp_path / "sweep",
        samples=4, crop=None, executor="ray", cluster=ClusterOptions(),
    )  # fmt: skip
    assert [(r["method"], r["bits"], r["seed"]) for r in rows] == [
        ("float", 32, None),
        ("rtn", 2, 0),
        ("rtn", 8, 0),
        ("flexround", 4, 1),
    ]
    # A variant is what `quantize` writes with the same settings.
    reference = tmp_path / "quantize-flexround"
    result = run_cli(
        "quantize", "--model", model, "--calib", *calib, "--out", reference,
        "--method", "flexround", "--bits", "4", "--seed", "1", "--iters", "2",
        "--samples", "4", "--batch-size", "2", "--crop", "0", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    made, expected = weights(tmp_path / "sweep/variants/flexround-w4-s1"), weights(reference)
    assert made.keys() == expected.keys()
    for key in made:
        assert (made[key] == expected[key]).all(), key
    # Each row's Dice is the local evaluate's mean for that variant alone.
    for row, point in zip(rows[1:], points, strict=True):
        alone = tmp_path / f"{point.folder_name}.json"
        variant = tmp_path / "sweep/variants" / point.folder_name
        evaluate_cases(cases, [variant], SETTINGS, alone)
        means = json.loads(alone.read_text())["means"]
        for mean in means:
            key = "mean_dice" if mean["label"] is None else f"dice {mean['class']}"
            assert row[key] == mean["dice"], (point, key)
    assert report["complete"] is True


@pytest.mark.slow
def test_sweep_command_writes_the_table_and_the_dice_against_bits_plot(eval_data, tmp_path):
    import csv
    import xml.etree.ElementTree as ElementTree

    import skimage.io

    out = tmp_path / "sweep"
    result = run_cli(
        "sweep", "--model", eval_data.models[0], "--calib", eval_data.cases[0].image,
        "--images", eval_data.images, "--labels", eval_data.labels, "--out", out,
        "--methods", "rtn,rtn-minmax", "--bits", "2,8", "--samples", "2", "--crop", "0",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with (out / "sweep.csv").open(newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [(r["method"], r["bits"]) for r in table] == [
        ("float", "32"),
        ("rtn", "2"),
        ("rtn", "8"),
        ("rtn-minmax", "2"),
        ("rtn-minmax", "8"),
    ]
    report = json.loads((out / "evaluate.json").read_text())
    assert len(report["models"]) == 5 and len(report["cases"]) == len(eval_data.cases)
    image = skimage.io.imread(out / "dice_vs_bits.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert ElementTree.parse(out / "dice_vs_bits.svg").getroot().tag.endswith("svg")
    assert "rtn-minmax" in (out / "dice_vs_bits.svg").read_text()

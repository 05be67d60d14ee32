"""The headless commands end to end: `python main.py COMMAND ...` in a subprocess, checked against
answers computed here (nibabel geometry, numpy Dice and volumes, in-process inference, pydicom)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import skimage.io
import torch
from pydicom.data import get_testdata_file

from core.demo import demo_paths
from core.io import read_image
from core.models import load_model, predict
from tests.cli.conftest import (
    TINY_SPEC,
    file_bytes,
    numpy_dice,
    run_cli,
    run_cli_on_terminal,
    tiny_unet,
)


def argmax_reference(model_path, image_path) -> np.ndarray:
    """The argmax mask computed in this process: the model's probabilities, numpy argmax."""
    probs = predict(load_model(model_path), read_image(image_path), device="cpu")
    return probs.argmax(0)


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 or code == 2, result.stderr  # argparse adds its usage line for 2
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.fixture(scope="session")
def quantized(cli_data, tmp_path_factory):
    """A FlexRound W4 variant of the tiny model made by `quantize` (5 iterations) + report."""
    folder = tmp_path_factory.mktemp("quantized")
    out, report = folder / "q4", folder / "quantize.json"
    result = run_cli(
        "quantize", "--model", cli_data.model, "--calib", cli_data.image, cli_data.image2,
        "--out", out, "--iters", "5", "--samples", "8", "--batch-size", "4",
        "--report", report, "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, json.loads(report.read_text()), result


# --- segment --------------------------------------------------------------------------------


def test_segment_writes_mask_with_image_geometry_and_a_report(cli_data, tmp_path):
    before = {p: file_bytes(p) for p in (cli_data.image, cli_data.label)}
    out, report_path = tmp_path / "mask.nii.gz", tmp_path / "report.json"
    result = run_cli(
        "segment", cli_data.image, "--model", cli_data.model, "--decision", "argmax",
        "--gt", cli_data.label, "--out", out, "--report", report_path, "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    written, source = nib.load(out), nib.load(cli_data.image)
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.shape == source.shape
    mask = np.asarray(written.dataobj)
    np.testing.assert_array_equal(mask, argmax_reference(cli_data.model, cli_data.image))

    report = json.loads(report_path.read_text())
    assert report["decision"] == "argmax" and report["model"]["quantized"] is False
    label = np.asarray(nib.load(cli_data.label).dataobj)
    voxel_ml = float(np.prod(source.header.get_zooms())) / 1000.0
    assert [row["name"] for row in report["classes"]] == list(TINY_SPEC.class_names)
    for row in report["classes"]:
        c = row["label"]
        assert row["voxels"] == int((mask == c).sum())
        assert row["volume_ml"] == pytest.approx(row["voxels"] * voxel_ml, rel=1e-5)
        assert row["dice"] == pytest.approx(numpy_dice(mask, label, c), abs=1e-6)
        assert 0.0 <= row["expected_dice"] <= 1.0
    assert {"read_image", "load_model", "inference", "decision", "write_mask", "total"} <= set(
        report["timings_s"]
    )
    assert all(v >= 0 for v in report["timings_s"].values())
    assert "liver" in result.stdout and "mask written to" in result.stdout
    assert {p: file_bytes(p) for p in before} == before  # inputs untouched


@pytest.mark.slow
def test_segment_on_the_demo_reproduces_the_recorded_argmax_dice(tmp_path):
    demo = demo_paths()
    if demo.missing():
        pytest.skip(f"demo files missing: {demo.missing()}")
    recorded = json.loads(demo.metrics.read_text())
    report_path = tmp_path / "demo.json"
    result = run_cli(
        "segment", demo.image, "--model", demo.model, "--decision", "argmax",
        "--gt", demo.label, "--report", report_path, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # --quiet
    dice = {row["name"]: row["dice"] for row in json.loads(report_path.read_text())["classes"]}
    # metrics.json was written by tools/train_demo_model.py, rounded to 4 digits.
    assert dice == pytest.approx(recorded["dice"], abs=1.5e-4)


def test_segment_on_the_natural_demo_writes_a_png_and_reproduces_its_dice(tmp_path):
    demo = demo_paths()
    if demo.natural_missing():
        pytest.skip(f"natural demo files missing: {demo.natural_missing()}")
    recorded = json.loads(demo.natural_metrics.read_text())
    out, report_path = tmp_path / "mask.png", tmp_path / "natural.json"
    result = run_cli(
        "segment", demo.natural_image, "--model", demo.natural_model, "--decision", "argmax",
        "--gt", demo.natural_label, "--out", out, "--report", report_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    mask = skimage.io.imread(out)
    label = skimage.io.imread(demo.natural_label)
    assert mask.shape == label.shape[:2]
    report = json.loads(report_path.read_text())
    for row in report["classes"]:
        assert row["dice"] == pytest.approx(numpy_dice(mask, label, row["label"]), abs=1e-6)
    dice = {row["name"]: row["dice"] for row in report["classes"]}
    assert dice == pytest.approx(recorded["dice"], abs=1.5e-4)
    # A photograph has pixels, as the GUI says, not millilitres of a 1 mm grid.
    header = next(line for line in result.stdout.splitlines() if line.startswith("label"))
    assert "pixels" in header and "mL" not in result.stdout
    for row in report["classes"]:
        assert row["pixels"] == int((mask == row["label"]).sum()) and "volume_ml" not in row


def test_png_output_of_a_volume_is_refused_before_the_model_is_read(cli_data, tmp_path):
    broken_model = tmp_path / "broken.safetensors"
    broken_model.write_bytes(b"not a model")  # never read: the --out check comes first
    out = tmp_path / "mask.png"
    result = run_cli("segment", cli_data.image, "--model", broken_model, "--out", out)
    assert_one_line_error(result, 2, str(out), "PNG holds 2-D masks", "16 slices")
    assert not out.exists()


def test_progress_bar_on_a_terminal_and_silence_with_quiet(cli_data, tmp_path):
    code, stderr = run_cli_on_terminal(
        "segment", cli_data.image, "--model", cli_data.model, "--decision", "rma-iou",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stderr
    assert "\rinference [" in stderr and "100%" in stderr
    assert "decision" in stderr
    code, stderr = run_cli_on_terminal(
        "--quiet", "segment", cli_data.image, "--model", cli_data.model, "--device", "cpu"
    )
    assert code == 0, stderr
    assert stderr == ""


# --- quantize -------------------------------------------------------------------------------


def test_quantize_report_covers_every_layer_with_its_bits(quantized):
    out, report, result = quantized
    convs = [
        name
        for name, m in tiny_unet().named_modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    layers = report["layers"]
    assert sorted(row["name"] for row in layers) == sorted(convs)
    bits = [row["bits"] for row in layers]  # execution order: first and last get 8 bits
    assert bits[0] == bits[-1] == 8 and set(bits[1:-1]) == {4}
    for row in layers:
        assert 0.0 <= row["percent_moved_2plus"] <= row["percent_changed"] <= 100.0
        assert row["s1_ratio"] > 0 and row["weight_rel_error"] >= 0
        assert {"loss_before", "loss_after", "weight_rel_error_rtn", "kept_nearest"} <= set(row)
        assert row["loss_after"] <= row["loss_before"] and row["kept_reason"]
    assert report["config"]["iters"] == 5 and report["calibration"]["samples"] == 8
    assert {"load_model", "calibration_inputs", "save", "total"} <= set(report["timings_s"])
    assert any(key.startswith("quantize:") for key in report["timings_s"])
    loaded = load_model(out)
    assert loaded.is_quantized and loaded.spec.quantization["weight_bits"] == 4
    assert "encoders.0.conv1" in result.stdout


def test_segment_accepts_the_quantized_model(cli_data, quantized, tmp_path):
    out = tmp_path / "mask.mha"
    result = run_cli(
        "segment", cli_data.image2, "--model", quantized[0], "--decision", "argmax",
        "--out", out, "--quiet", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""  # not a terminal: no progress bar
    # MetaImage stores (z, y, x); the image's voxel order is (i, j, k).
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0)
    np.testing.assert_array_equal(mask, argmax_reference(quantized[0], cli_data.image2))


# --- evaluate -------------------------------------------------------------------------------


def test_evaluate_compares_fp32_and_quantized_per_case_and_on_average(
    cli_data, quantized, tmp_path
):
    stray = tmp_path / "case99_seg.nii.gz"
    stray.write_bytes(file_bytes(cli_data.label))
    report_path, csv_path = tmp_path / "eval.json", tmp_path / "cases.csv"
    result = run_cli(
        "evaluate", "--model", cli_data.model, "--model", quantized[0],
        "--images", cli_data.images, "--labels", cli_data.label, cli_data.label2, stray,
        "--decisions", "argmax,rma-dice", "--report", report_path, "--csv", csv_path,
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert [c["name"] for c in report["cases"]] == ["case01", "case02"]
    assert report["unmatched"]["labels"] == [str(stray)]
    assert result.stderr.strip() == f"main.py evaluate: warning: {stray}: no image file matches it"
    models = [m["id"] for m in report["models"]]
    assert [m["quantized"] for m in report["models"]] == [False, True]
    rows = report["per_case"]
    assert len(rows) == 2 * 2 * 2 * len(TINY_SPEC.class_names)
    # Argmax rows against masks computed here.
    for model_path, model_id in zip((cli_data.model, quantized[0]), models, strict=True):
        for case, image, label in (
            ("case01", cli_data.image, cli_data.label),
            ("case02", cli_data.image2, cli_data.label2),
        ):
            mask = argmax_reference(model_path, image)
            truth = np.asarray(nib.load(label).dataobj)
            for row in rows:
                if (row["model"], row["decision"], row["case"]) == (model_id, "argmax", case):
                    c = row["label"]
                    assert row["dice"] == pytest.approx(numpy_dice(mask, truth, c), abs=1e-6)
                    assert row["voxels"] == int((mask == c).sum())
    # Means are the means of the per-case rows.
    groups = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["decision"], row["label"])].append(row["dice"])
    for mean in report["means"]:
        if mean["label"] is not None:
            key = (mean["model"], mean["decision"], mean["label"])
            assert mean["dice"] == pytest.approx(np.mean(groups[key]), abs=1e-6)
            assert mean["cases"] == 2
    assert sum(m["label"] is None for m in report["means"]) == 4  # one per (model, decision)
    # The network ran once per (model, case); the decisions shared its probabilities.
    assert len(report["timings"]["inference"]) == 4
    assert len(report["timings"]["decisions"]) == 8
    with csv_path.open(newline="") as stream:
        table = list(csv.DictReader(stream))
    assert len(table) == len(rows)
    assert [float(r["dice"]) for r in table] == pytest.approx([r["dice"] for r in rows])


# --- info -----------------------------------------------------------------------------------


def test_info_describes_an_image_like_nibabel(cli_data):
    result = run_cli("info", cli_data.image, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    source = nib.load(cli_data.image)
    assert info["kind"] == "image"
    assert info["shape"] == list(source.shape)
    assert info["size"] == list(source.shape) and info["size_order"] == "columns x rows x slices"
    assert info["spacing_mm"] == pytest.approx(list(source.header.get_zooms()))
    assert info["orientation"] == "".join(nib.aff2axcodes(source.affine))
    data = np.asarray(source.dataobj)
    assert info["intensity_range"] == [data.min(), data.max()]


def test_a_multi_volume_image_is_described_and_segment_asks_for_volume(cli_data, tmp_path):
    four_d = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    result = run_cli("info", four_d, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["volumes"]["count"] == 2
    assert info["shape"] == list(nib.load(four_d).shape[:3])
    text = run_cli("info", four_d).stdout
    assert "volumes: 2" in text and "--volume" in text
    refused = run_cli("segment", four_d, "--model", cli_data.model, "--out", tmp_path / "m.nii.gz")
    assert_one_line_error(refused, 2, "example4d.nii.gz", "2 volumes", "--volume 0..1")
    assert not (tmp_path / "m.nii.gz").exists()


def test_info_lists_the_series_of_a_dicom_folder():
    folder = Path(get_testdata_file("dicomdirtests/77654033/CT2/17136")).parent
    result = run_cli("info", folder)
    assert result.returncode == 0, result.stderr
    headers = [pydicom.dcmread(f) for f in folder.iterdir()]
    uids = {str(ds.SeriesInstanceUID) for ds in headers}
    assert result.stdout.splitlines()[0] == f"DICOM folder: {folder} ({len(uids)} series)"
    assert "columns x rows" in result.stdout.splitlines()[1]
    for ds in headers:  # sizes as everywhere else: columns x rows
        assert f" {ds.Columns} x {ds.Rows} " in result.stdout
    for uid in uids:
        count = sum(str(ds.SeriesInstanceUID) == uid for ds in headers)
        line = next(line for line in result.stdout.splitlines() if uid in line)
        assert f" {count} " in line


def test_info_describes_a_model_and_counts_its_parameters(cli_data):
    result = run_cli("info", cli_data.model, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    module = tiny_unet()
    assert info["kind"] == "model" and info["quantized"] is False
    assert info["parameters"] == sum(p.numel() for p in module.parameters())
    assert info["spec"]["class_names"] == list(TINY_SPEC.class_names)
    leaves = [n for n, m in module.named_modules() if list(m.parameters(recurse=False))]
    assert [row["name"] for row in info["layers"]] == leaves


def test_info_on_the_demo_model_matches_its_recorded_parameter_count():
    demo = demo_paths()
    if demo.missing():
        pytest.skip(f"demo files missing: {demo.missing()}")
    result = run_cli("info", demo.model)
    assert result.returncode == 0, result.stderr
    recorded = json.loads(demo.metrics.read_text())["parameters"]
    assert f"parameters: {recorded:,} " in result.stdout


# --- bad inputs -----------------------------------------------------------------------------


@pytest.fixture()
def pickled_model(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(tiny_unet(), folder / "model.pt")
    spec = TINY_SPEC.with_changes(architecture="pickled-module")
    spec.write(folder / "model.json")
    return folder


def test_pickled_model_needs_trust(pickled_model):
    refused = run_cli("info", pickled_model)
    assert_one_line_error(refused, 1, "model.pt", "pickled", "--trust")
    trusted = run_cli("info", pickled_model, "--trust")
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith("model: tiny-unet")


def test_unknown_architecture_is_named(cli_data, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    spec = json.loads((cli_data.model / "model.json").read_text())
    spec["architecture"] = "transformer9000"
    (folder / "model.json").write_text(json.dumps(spec))
    (folder / "model.safetensors").write_bytes(file_bytes(cli_data.model / "model.safetensors"))
    result = run_cli("segment", cli_data.image, "--model", folder)
    assert_one_line_error(
        result, 1, str(folder / "model.json"), "unknown architecture 'transformer9000'"
    )


def test_missing_corrupt_and_mismatched_inputs_fail_with_one_line(cli_data, tmp_path):
    missing = tmp_path / "nope.nii.gz"
    result = run_cli("segment", missing, "--model", cli_data.model)
    assert_one_line_error(result, 1, str(missing), "no such file")

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti file at all")
    result = run_cli("info", corrupt)
    assert_one_line_error(result, 1, str(corrupt), "not a readable NIfTI file")
    debug = run_cli("info", corrupt, "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr

    small = tmp_path / "small_label.nii.gz"
    affine = nib.load(cli_data.image).affine
    nib.Nifti1Image(np.zeros((32, 32, 8), np.uint8), affine).to_filename(small)
    result = run_cli("segment", cli_data.image, "--model", cli_data.model, "--gt", small)
    assert_one_line_error(result, 1, str(small), "(32, 32, 8)", "(32, 32, 16)")


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["segment", "{image}", "--model", "{model}", "--pruning", "1.5"], "1.5 is outside"),
        (["segment", "{image}", "--model", "{model}", "--decision", "max"], "invalid choice"),
        (["segment", "{image}", "--model", "{model}", "--out", "{image}"], "is an input"),
        (["segment", "{image}", "--model", "{model}", "--out", "{tmp}/m.txt"], "not '.txt'"),
        (["quantize", "--model", "{model}", "--calib", "{image}", "--out", "{model}"], "input"),
        (["quantize", "--model", "{model}", "--calib", "{image}", "--out", "q", "--bits", "9"],
         "outside 2-8"),
        (["evaluate", "--model", "{model}", "--images", "{image}", "--labels", "{label}",
          "--report", "r.json", "--decisions", "argmax,max"], "unknown decision rule(s) max"),
        (["evaluate", "--model", "{model}", "--images", "{image}", "--labels", "{label}",
          "--report", "{label}"], "is an input"),
        (["segment", "--model", "{model}"], "required: IMAGE"),
        (["segment", "{image}", "--model", "{model}", "--volume", "3"], "--volume 3"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_with_2_and_touch_nothing(cli_data, tmp_path, arguments, fragment):
    before = {p: file_bytes(p) for p in (cli_data.image, cli_data.label)}
    paths = {"image": cli_data.image, "model": cli_data.model, "label": cli_data.label}
    filled = [a.format(**paths, tmp=tmp_path) for a in arguments]
    result = run_cli(*filled)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert {p: file_bytes(p) for p in before} == before
    assert sorted(p.name for p in cli_data.model.iterdir()) == ["model.json", "model.safetensors"]


def test_quantize_with_activation_bits_saves_a_w4a8_model(cli_data, tmp_path):
    out = tmp_path / "w4a8"
    result = run_cli(
        "quantize", "--model", cli_data.model, "--calib", cli_data.image, "--out", out,
        "--iters", "3", "--samples", "4", "--batch-size", "4", "--act-bits", "8",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = json.loads((out / "model.json").read_text())
    assert spec["quantization"]["config"]["act_bits"] == 8
    info = run_cli("info", out)
    assert info.returncode == 0 and "W4A8" in info.stdout

"""`main.py export` and `--backend` end to end, checked against in-process torch inference."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from core.io import read_image, read_mask
from core.models import load_model, predict, save_quantized_model
from core.pipeline import segment_image
from core.quant import QuantConfig, quantize_model
from core.quant.export import read_integer_form
from tests.cli.conftest import numpy_dice, run_cli


def test_cli_opset_constants_agree_with_the_exporter():
    from core.cli import export
    from core.cli.arguments import BACKEND_CHOICES
    from core.deploy import onnx_export
    from core.deploy.onnx_runtime import BACKENDS

    assert (export.DEFAULT_OPSET, export.MIN_OPSET) == (
        onnx_export.DEFAULT_OPSET,
        onnx_export.MIN_OPSET,
    )
    assert BACKEND_CHOICES == BACKENDS


@pytest.mark.slow
def test_export_of_a_saved_variant_keeps_its_codes_and_segments_like_torch(cli_data, tmp_path):
    base = load_model(cli_data.model)
    calib = np.random.default_rng(0).normal(size=(6, 1, 32, 32)).astype(np.float32)
    result = quantize_model(
        base, torch.from_numpy(calib), QuantConfig(method="rtn", bits=4, act_bits=8)
    )
    folder = save_quantized_model(result, base, tmp_path / "q4a8")
    out, summary, mask = tmp_path / "q4a8.onnx", tmp_path / "summary.json", tmp_path / "m.nii.gz"
    done = run_cli("export", "--model", folder, "--out", out, "--summary", summary)
    assert done.returncode == 0, done.stderr
    assert f"ONNX model written to {out}" in done.stdout
    written = json.loads(summary.read_text())
    assert written["bytes"] == out.stat().st_size
    assert set(written["integer_layers"]) == set(result.weights)
    # The codes came from the folder's quantized.safetensors: equal to the run's own.
    weights = read_integer_form(folder / "quantized.safetensors").weights
    tensors = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    for layer, weight in result.weights.items():
        stored = numpy_helper.to_array(tensors[f"{layer}.weight_quantized"]).astype(np.int64)
        stored += written["code_offsets"].get(layer, 0)  # symmetric layers are stored signed
        np.testing.assert_array_equal(stored, weight.codes.numpy())
        np.testing.assert_array_equal(weights[layer].codes.numpy(), weight.codes.numpy())

    done = run_cli(
        "segment", cli_data.image, "--model", out, "--decision", "argmax", "--out", mask,
        "--gt", cli_data.label,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "onnxruntime on CPU" in done.stdout
    torch_mask = predict(load_model(folder), read_image(cli_data.image), device="cpu").argmax(0)
    onnx_mask = np.asarray(nib.load(mask).dataobj)
    for label in range(4):
        assert numpy_dice(onnx_mask, torch_mask, label) >= 0.999


def test_export_refuses_bad_arguments_in_words(cli_data, tmp_path):
    done = run_cli("export", "--model", cli_data.model, "--out", tmp_path / "m.txt")
    assert done.returncode == 2 and "ONNX files end in .onnx" in done.stderr
    done = run_cli(
        "export", "--model", cli_data.model, "--out", tmp_path / "m.onnx", "--opset", "11"
    )
    assert done.returncode == 2 and "opset 13 or later" in done.stderr


@pytest.mark.slow
def test_evaluate_on_onnxruntime_names_the_backend_and_scores_like_torch(cli_data, tmp_path):
    report = tmp_path / "eval.json"
    done = run_cli(
        "evaluate", "--model", cli_data.model, "--images", cli_data.image, "--labels",
        cli_data.label, "--decisions", "argmax", "--backend", "onnxruntime", "--report", report,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert [m["backend"] for m in data["models"]] == ["onnxruntime"]
    assert {r["backend"] for r in data["per_case"]} == {"onnxruntime"}
    assert "onnxruntime" in done.stdout  # the table's backend column
    # The same model and rule in torch, in this process.
    image = read_image(cli_data.image)
    truth = read_mask(cli_data.label, reference=image).array
    torch_rows = segment_image(
        load_model(cli_data.model), image, decision="argmax", device="cpu", ground_truth=truth
    ).rows
    onnx_dice = {r["label"]: r["dice"] for r in data["per_case"]}
    for row in torch_rows:
        assert onnx_dice[row.label] == pytest.approx(row.dice, abs=1e-4)


def test_quantize_symmetric_flag_reaches_the_config():
    from core.cli.parser import build_parser
    from core.cli.quantize import quant_config

    parser = build_parser()
    base = ["quantize", "--model", "m", "--calib", "c.nii.gz", "--out", "q"]
    for extra, expected in (([], False), (["--symmetric"], True)):
        args = parser.parse_args([*base, *extra])
        assert quant_config(args, "rtn", 8, 0).symmetric is expected

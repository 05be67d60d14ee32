"""Deploy folders of framework models: nnU-Net v2 and MONAI bundles exported with one ONNX
network per member beside the framework's own files, reopened as models whose framework
pipeline runs the networks in ONNX Runtime.

References: the torch model run by the framework itself, and the quantizer's codes read back
from each member file with ``onnx.numpy_helper``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from core.deploy.framework_package import export_framework_onnx
from core.deploy.onnx_export import MEMBER_KEY
from core.io import read_image
from core.models import load_model, predict
from core.models.frameworks import (
    DEPLOY_FILE,
    DEPLOY_MEMBER_FILE,
    QUANTIZATION_FILE,
    detect_framework,
)
from tests.cli.conftest import run_cli
from tests.frameworks.conftest import raw_case
from tests.frameworks.test_monai_bundle import other_grid_image  # noqa: F401 (fixture)
from tests.frameworks.test_nnunet import predict_counting_calls


def _w4(model, image):
    """An RTN W4 variant of ``model`` and its quantization result."""
    from core.models.calibration import calibration_inputs
    from core.models.loading import quantized_variant
    from core.quant.config import QuantConfig
    from core.quant.ensemble import quantize_loaded_model

    calib = calibration_inputs(model, [image], n=2, seed=0)
    result = quantize_loaded_model(model, calib, QuantConfig(method="rtn", bits=4))
    return quantized_variant(result, model), result


@pytest.fixture(scope="module")
def nnunet_deployed(nnunet_3d: Path, tmp_path_factory: pytest.TempPathFactory):
    """The FP32 nnU-Net model, its deploy folder and the export summary."""
    model = load_model(nnunet_3d)
    folder = tmp_path_factory.mktemp("deploy") / "nnunet_fp32"
    return model, folder, export_framework_onnx(model, folder)


def test_nnunet_deploy_folder_holds_the_frameworks_files_and_one_onnx_per_fold(
    nnunet_deployed, nnunet_3d: Path
) -> None:
    model, folder, summary = nnunet_deployed
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "dataset.json",
        "fold_0/model.onnx",
        "fold_1/model.onnx",
        "plans.json",
        DEPLOY_FILE,
    ]
    # The framework's description of the pipeline travels unchanged.
    for name in ("plans.json", "dataset.json"):
        assert json.loads((folder / name).read_text()) == json.loads((nnunet_3d / name).read_text())
    manifest = json.loads((folder / DEPLOY_FILE).read_text())
    assert manifest["framework"] == "nnunetv2"
    assert [m["file"] for m in manifest["members"]] == summary.files
    assert manifest["facts"]["folds"] == ["0", "1"]
    assert manifest["facts"]["trainer_name"] == model.framework.trainer_name
    assert summary.bytes == sum((folder / f).stat().st_size for f in summary.files)
    for file, name in zip(summary.files, ["fold 0", "fold 1"], strict=True):
        proto = onnx.load(str(folder / file))
        onnx.checker.check_model(proto, full_check=True)
        member = json.loads({p.key: p.value for p in proto.metadata_props}[MEMBER_KEY])
        assert member == {"framework": "nnU-Net v2", "member": name}
    assert detect_framework(folder) == "nnunetv2"
    assert summary.lines()[0].startswith(f"{model.name}: FP32, opset 21, 2 member network(s)")


def test_nnunet_deploy_folder_runs_in_nnunets_predictor_like_torch(
    nnunet_deployed, nnunet_3d: Path
) -> None:
    model, folder, _summary = nnunet_deployed
    deployed = load_model(folder)
    assert deployed.backend == "onnxruntime" and deployed.framework.folds == ["0", "1"]
    assert deployed.framework.mirror_axes == model.framework.mirror_axes
    assert "ONNX Runtime" in deployed.spec.description
    assert deployed.spec.class_names == model.spec.class_names
    image = read_image(raw_case(nnunet_3d)[0])
    got, calls = predict_counting_calls(deployed, list(deployed.module), image)
    want = predict(model, image, device="cpu")
    assert calls[0] == calls[1] > 0  # both folds ensembled, with mirroring
    # As for --backend onnxruntime: random untrained folds, near-ties at a few voxels.
    assert np.mean(got.argmax(0) == want.argmax(0)) >= 0.999
    assert np.abs(got - want).max() <= 1e-2
    one_fold = load_model(folder, folds=["1"])
    assert one_fold.framework.folds == ["1"] and len(one_fold.module) == 1
    with pytest.raises(ValueError, match="no fold 3"):
        load_model(folder, folds=["3"])


def test_quantized_nnunet_keeps_its_integer_codes_in_each_fold(
    nnunet_deployed, nnunet_3d: Path, tmp_path: Path
) -> None:
    """A saved W4 variant exported from disk: each fold's file holds that fold's codes and
    scales exactly, the folder is a fraction of the FP32 one, and it runs like the variant."""
    from core.models.loading import save_quantized_model

    model, _fp_folder, fp_summary = nnunet_deployed
    image = read_image(raw_case(nnunet_3d)[0])
    variant, result = _w4(model, image)
    saved = save_quantized_model(result, model, tmp_path / "w4")
    summary = export_framework_onnx(load_model(saved), tmp_path / "w4_deploy")
    folder = tmp_path / "w4_deploy"
    assert summary.bytes <= 0.2 * fp_summary.bytes
    assert json.loads((folder / QUANTIZATION_FILE).read_text())["weight_bits"] == 4
    for member_result, file, member in zip(
        [result, *result.members], summary.files, summary.members, strict=True
    ):
        tensors = {t.name: t for t in onnx.load(str(folder / file)).graph.initializer}
        # nnU-Net's deep-supervision heads do not run with it off: they are not in the graph.
        used = {layer for layer in member_result.weights if "seg_layers" not in layer}
        used.add(max(layer for layer in member_result.weights if "seg_layers" in layer))
        assert set(member.integer_layers) == used
        for layer in used:
            weight = member_result.weights[layer]
            offset = member.code_offsets.get(layer, 0)
            codes = numpy_helper.to_array(tensors[f"{layer}.weight_quantized"]).astype(np.int64)
            np.testing.assert_array_equal(codes + offset, weight.codes.numpy())
            np.testing.assert_array_equal(
                numpy_helper.to_array(tensors[f"{layer}.weight_scale"]).reshape(-1),
                weight.scale.numpy(),
            )
    deployed = load_model(folder)
    assert deployed.spec.quantization["weight_bits"] == 4 and deployed.is_quantized
    got, want = predict(deployed, image, device="cpu"), predict(variant, image, device="cpu")
    assert np.mean(got.argmax(0) == want.argmax(0)) >= 0.999
    assert np.abs(got - want).max() <= 1e-2


def test_monai_deploy_folder_runs_the_bundle_pipeline_like_torch(
    monai_bundle: Path,
    other_grid_image: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """FP32 and an in-memory W4 variant (codes from its run): the bundle's own preprocessing,
    inferer and inversion around models/model.onnx give torch's probabilities."""
    model = load_model(monai_bundle)
    image = read_image(other_grid_image)
    variant, result = _w4(model, image)
    for source, run, name in ((model, None, "fp32"), (variant, result, "w4")):
        folder = tmp_path / name
        summary = export_framework_onnx(source, folder, quant_result=run)
        assert summary.files == [f"models/{DEPLOY_MEMBER_FILE}"]
        assert (folder / "configs" / "inference.json").is_file()
        assert not (folder / "models" / "model.pt").exists()
        deployed = load_model(folder)
        assert deployed.backend == "onnxruntime"
        assert deployed.framework.describe()["weights"] == DEPLOY_MEMBER_FILE
        assert deployed.spec.class_names == model.spec.class_names
        want = predict(source, image, device="cpu")
        got = predict(deployed, image, device="cpu")
        assert np.abs(got - want).max() <= 1e-5
        assert np.array_equal(got.argmax(0), want.argmax(0))
        if run is not None:
            assert set(summary.members[0].integer_layers) == set(result.weights)


def test_deploy_folders_refuse_what_would_lose_data_or_mislead(
    monai_bundle: Path, tmp_path: Path
) -> None:
    model = load_model(monai_bundle)
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a deploy folder"):
        export_framework_onnx(model, users)
    assert [p.name for p in users.iterdir()] == ["notes.txt"]

    folder = tmp_path / "deploy"
    export_framework_onnx(model, folder)
    first = (folder / "models" / DEPLOY_MEMBER_FILE).read_bytes()
    export_framework_onnx(model, folder)  # an earlier deploy folder is replaced whole
    assert (folder / "models" / DEPLOY_MEMBER_FILE).read_bytes() == first

    with pytest.raises(ValueError, match="open the deploy folder"):
        load_model(folder / "models" / DEPLOY_MEMBER_FILE)  # a member alone is not a model
    with pytest.raises(ValueError, match="already ONNX"):
        export_framework_onnx(load_model(folder), tmp_path / "again")

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    manifest = json.loads((broken / DEPLOY_FILE).read_text())
    manifest["members"][0]["file"] = "../deploy/models/model.onnx"
    (broken / DEPLOY_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="outside the folder") as error:
        load_model(broken)
    assert str(broken / DEPLOY_FILE) in str(error.value)
    (broken / DEPLOY_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a readable deploy manifest"):
        load_model(broken)


def test_quantizing_a_deploy_folder_is_refused_in_words(monai_bundle: Path, tmp_path: Path):
    from core.quant.config import QuantConfig
    from core.quant.ensemble import quantize_loaded_model

    export_framework_onnx(load_model(monai_bundle), tmp_path / "deploy")
    deployed = load_model(tmp_path / "deploy")
    with pytest.raises(ValueError, match="ONNX"):
        quantize_loaded_model(deployed, None, QuantConfig(method="rtn", bits=4))


def test_cli_exports_a_deploy_folder_and_segments_with_it(nnunet_3d: Path, tmp_path: Path) -> None:
    out, summary = tmp_path / "deploy", tmp_path / "summary.json"
    done = run_cli("export", "--model", nnunet_3d, "--out", out, "--summary", summary)
    assert done.returncode == 0, done.stderr
    assert f"Deploy folder written to {out}" in done.stdout
    data = json.loads(summary.read_text())
    assert [m["file"] for m in data["members"]] == ["fold_0/model.onnx", "fold_1/model.onnx"]
    assert data["bytes"] == sum((out / m["file"]).stat().st_size for m in data["members"])
    case = raw_case(nnunet_3d)[0]
    mask = tmp_path / "mask.nii.gz"
    report = tmp_path / "report.json"
    done = run_cli(
        "segment", case, "--model", out, "--folds", "1", "--out", mask, "--report", report
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert nib.load(mask).shape == nib.load(case).shape
    assert json.loads(report.read_text())["model"]["backend"] == "onnxruntime"

    refused = run_cli("export", "--model", nnunet_3d, "--out", tmp_path / "one.onnx")
    assert refused.returncode == 2 and "deploy folder" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "one.onnx").exists()

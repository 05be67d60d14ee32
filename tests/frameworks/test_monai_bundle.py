"""MONAI bundles: opened without running their code, run by their own transforms and inferer.

Parity is checked against the bundle's own inference config run by MONAI on the same NIfTI file
(its dataloader with LoadImaged reading the file, its inferer, its postprocessing; see
:func:`tests.frameworks.monai_bundles.monai_reference`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.io import read_image, write_mask
from core.jobs import CancelToken, JobCancelled
from core.models import UntrustedCodeError, load_model, predict
from core.models.frameworks import detect_framework
from core.pipeline import segment_image
from tests.cli.conftest import run_cli
from tests.frameworks.monai_bundles import (
    NETWORK_DEF_2D,
    SPACING,
    bundle_config,
    bundle_config_2d,
    make_bundle,
    monai_reference,
)
from tests.frameworks.nnunet_models import rotated_affine

#: Largest difference to MONAI's own run measured by these tests (the report quotes it).
PARITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def other_grid_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volume whose spacing (1.3 x 0.7 x 3.1 mm) and orientation (rotated, flipped) differ
    from the bundle's Spacingd/Orientationd targets."""
    rng = np.random.default_rng(5)
    array = rng.normal(0, 20, size=(37, 29, 11)).astype(np.float32)
    array[10:25, 8:20, 3:8] += 150
    affine = rotated_affine((1.3, 0.7, 3.1), angle_deg=-35.0) @ np.diag([1.0, -1.0, 1.0, 1.0])
    path = tmp_path_factory.mktemp("monai_images") / "other.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def test_detected_and_opened_with_facts(monai_bundle: Path) -> None:
    """The zoo-style config holds expressions (device, datalist, output_dir, network), none of
    them in what segbench builds: it opens without trust."""
    assert detect_framework(monai_bundle) == "monai-bundle"
    model = load_model(monai_bundle)
    facts = model.framework.describe()
    assert facts["framework"] == "MONAI bundle"
    assert facts["bundle"] == "tiny_unet_segmentation" and facts["version"] == "0.1.0"
    assert facts["network"] == "UNet" and facts["input_channels"] == 1
    assert facts["patch_size"] == [16, 16, 16]
    assert facts["spacing_mm"] == list(SPACING)
    assert model.spec.architecture == "monai-bundle"
    assert model.spec.class_names == ("background", "organ", "lesion")
    assert model.spec.activation == "softmax" and model.spec.mode == "3d"
    assert model.framework.member_names() == ["network"]


def test_info_and_model_line_say_what_runs_it(monai_bundle: Path) -> None:
    from core.cli.info import describe_path, format_description
    from gui.widgets.data_panel import describe_model

    text = format_description(describe_path(monai_bundle, trust=False))
    for line in (
        "framework: MONAI bundle",
        "bundle: tiny_unet_segmentation",
        "network: UNet",
        "patch size (inferer roi_size): 16 x 16 x 16",
        "target spacing (Spacingd mm): 1.5 x 1.5 x 2",
    ):
        assert line in text, text
    line = describe_model(load_model(monai_bundle))
    assert "MONAI bundle tiny_unet_segmentation 0.1.0; network UNet; input: 1" in line, line
    assert "patch 16 x 16 x 16; spacing 1.5 x 1.5 x 2 mm" in line and "fold" not in line, line


def test_a_file_of_the_bundle_opens_the_bundle(monai_bundle: Path) -> None:
    """What a file dialog hands over: any file in configs/ or models/."""
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
        model = load_model(monai_bundle / name)
        assert model.path == monai_bundle and model.spec.architecture == "monai-bundle"


def test_probabilities_equal_monai_own_run(
    monai_bundle: Path, other_grid_image: Path, tmp_path: Path
) -> None:
    image = read_image(other_grid_image)
    model = load_model(monai_bundle)
    result = segment_image(model, image, decision="argmax", device="cpu")
    reference = monai_reference(monai_bundle, [other_grid_image], discretise=False)
    assert result.probs.shape == reference.shape == (3, *image.shape3)
    difference = float(np.abs(result.probs - reference).max())
    print(f"max abs difference to MONAI's own run: {difference:.3g}")
    assert difference <= PARITY_TOLERANCE
    mask = monai_reference(monai_bundle, [other_grid_image], discretise=True)
    assert np.array_equal(result.mask, mask), "argmax masks differ from the bundle's AsDiscreted"
    assert len(np.unique(mask)) > 1, "a constant mask would prove little"
    out = tmp_path / "mask.nii.gz"
    write_mask(result.mask, out, reference=image)
    np.testing.assert_allclose(nib.load(out).affine, nib.load(other_grid_image).affine, atol=1e-5)


def test_sigmoid_bundle_is_multilabel(tmp_path: Path, other_grid_image: Path) -> None:
    folder = make_bundle(tmp_path / "sigmoid", activation="sigmoid", channel_def={})
    model = load_model(folder)
    assert model.spec.activation == "sigmoid"
    assert model.spec.class_names == ("background", "class 0", "class 1", "class 2")
    probs = predict(model, read_image(other_grid_image), device="cpu")
    reference = monai_reference(folder, [other_grid_image], discretise=False)
    assert np.abs(probs[1:] - reference).max() <= PARITY_TOLERANCE
    np.testing.assert_allclose(probs[0], 1.0 - reference.max(axis=0), atol=PARITY_TOLERANCE)
    named = load_model(make_bundle(tmp_path / "named", activation="sigmoid"))
    assert named.spec.class_names == ("none", "background", "organ", "lesion")


@pytest.fixture(scope="module")
def bundle_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("monai2d") / "tiny_2d"
    return make_bundle(folder, config=bundle_config_2d(), network_def=NETWORK_DEF_2D)


def test_2d_bundle_on_a_natural_image(bundle_2d: Path, tmp_path: Path) -> None:
    """MONAI reads a PNG with its PILReader (columns first); segbench keeps rows first."""
    import skimage.io

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 60, size=(30, 41)).astype(np.uint8)
    pixels[8:20, 5:25] += 150
    path = tmp_path / "photo.png"
    skimage.io.imsave(path, pixels, check_contrast=False)
    model = load_model(bundle_2d)
    assert model.spec.mode == "2d" and model.spec.patch_size == (16, 16)
    result = segment_image(model, read_image(path), decision="argmax", device="cpu")
    reference = monai_reference(bundle_2d, [path], discretise=False)
    assert reference.shape == (3, 41, 30)
    reference = reference.transpose(0, 2, 1)[..., np.newaxis]
    assert np.abs(result.probs - reference).max() <= PARITY_TOLERANCE
    mask = monai_reference(bundle_2d, [path], discretise=True)
    assert np.array_equal(result.mask, mask.T[..., np.newaxis])


def test_2d_bundle_on_a_volume_runs_per_slice(
    bundle_2d: Path, other_grid_image: Path, tmp_path: Path
) -> None:
    """Each plane along k against MONAI reading that plane as a 2-D NIfTI file."""
    image = read_image(other_grid_image)
    files = []
    for k in range(3):
        affine = image.affine.copy()
        affine[:3, 3] += affine[:3, 2] * k
        files.append(tmp_path / f"plane{k}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(image.array[:, :, k]), affine), files[-1])
    volume = read_image(other_grid_image)
    volume.array = np.ascontiguousarray(volume.array[:, :, :3])
    reports = []
    probs = predict(load_model(bundle_2d), volume, device="cpu", on_progress=reports.append)
    reference = monai_reference(bundle_2d, files, discretise=False)
    assert probs.shape == reference.shape == (3, *volume.array.shape)
    assert np.abs(probs - reference).max() <= PARITY_TOLERANCE
    assert any("slice 3/3" in r.message for r in reports)


def test_progress_per_window_and_cancel(monai_bundle: Path, other_grid_image: Path) -> None:
    model = load_model(monai_bundle)
    image = read_image(other_grid_image)
    reports = []
    predict(model, image, device="cpu", on_progress=reports.append)
    windows = [r for r in reports if r.stage == "inference"]
    assert windows and windows[-1].step == windows[-1].total == 3
    assert {r.stage for r in reports} >= {"preprocessing", "inference", "export"}

    token = CancelToken()

    def cancel_at_first_window(progress) -> None:
        if progress.stage == "inference":
            token.cancel()

    with pytest.raises(JobCancelled):
        predict(model, image, device="cpu", on_progress=cancel_at_first_window, cancel=token)
    # The next run after a cancel is unaffected (the hook is gone).
    assert predict(model, image, device="cpu").shape[0] == 3


def test_members_saved_as_a_bundle_monai_opens(
    monai_bundle: Path, other_grid_image: Path, tmp_path: Path
) -> None:
    model = load_model(monai_bundle)
    (network,) = model.framework.members()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(0.9)
    variant = model.framework.with_members([network])
    out = tmp_path / "saved"
    assert variant.save_members(out) == [out / "models"]
    assert detect_framework(out) == "monai-bundle"
    image = read_image(other_grid_image)
    ours = variant.predict([image], device="cpu")
    # MONAI's own run of the saved folder (its config, CheckpointLoader-style state dict).
    reference = monai_reference(out, [other_grid_image], discretise=False)
    assert np.abs(ours - reference).max() <= PARITY_TOLERANCE
    original = predict(model, image, device="cpu")
    assert np.abs(ours - original).max() > 1e-3, "the variant's weights were not used"


SEGRESNET_DEF = {
    "_target_": "SegResNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 3,
    "init_filters": 8,
    "blocks_down": [1, 1],
    "blocks_up": [1],
}


@pytest.mark.parametrize("network", ["UNet", "SegResNet"])
def test_quantized_bundle_runs_and_saves_as_a_bundle(
    network: str, monai_bundle: Path, other_grid_image: Path, tmp_path: Path
) -> None:
    """RTN W4 on the UNet (its BatchNorms folded by the quantizer) and on a SegResNet
    (GroupNorm): the variant runs the quantized network through the bundle's pipeline, and the
    saved folder is a bundle that MONAI runs with its own config and a strict state-dict load."""
    from core.models.calibration import calibration_inputs
    from core.models.loading import quantized_variant, save_quantized_model
    from core.quant.config import QuantConfig
    from core.quant.ensemble import quantize_loaded_model

    if network == "SegResNet":
        config = bundle_config()
        config["network_def"] = dict(SEGRESNET_DEF)
        source = make_bundle(tmp_path / "segresnet", config=config, network_def=SEGRESNET_DEF)
    else:
        source = monai_bundle
    model = load_model(source)
    image = read_image(other_grid_image)
    calib = calibration_inputs(model, [image], n=4, seed=0)
    result = quantize_loaded_model(model, calib, QuantConfig(method="rtn", bits=4))
    assert bool(result.folded_batchnorm) == (network == "UNet")
    variant = quantized_variant(result, model)
    with torch.no_grad():
        assert torch.equal(variant.framework.network(calib), result.model.cpu()(calib))
    ours = predict(variant, image, device="cpu")
    assert np.abs(ours - predict(model, image, device="cpu")).max() > 1e-4
    folder = save_quantized_model(result, model, tmp_path / "w4")
    reopened = load_model(folder)
    assert reopened.spec.quantization["weight_bits"] == 4
    assert (folder / "models" / "quantized.safetensors").is_file()
    assert np.abs(predict(reopened, image, device="cpu") - ours).max() <= 1e-6
    reference = monai_reference(folder, [other_grid_image], discretise=False)
    assert np.abs(ours - reference).max() <= PARITY_TOLERANCE


def test_calibration_inputs_are_preprocessed_patches(
    monai_bundle: Path, other_grid_image: Path
) -> None:
    model = load_model(monai_bundle)
    image = read_image(other_grid_image)
    patches = model.framework.calibration_inputs([[image]], n=3, seed=0)
    assert tuple(patches.shape) == (3, 1, 16, 16, 16)
    # ScaleIntensityRanged clipped to [0, 1]: the network's input space, not raw intensities.
    assert 0.0 <= float(patches.min()) and float(patches.max()) <= 1.0
    cropped = model.framework.calibration_inputs([[image]], n=2, seed=0, crop=8)
    assert tuple(cropped.shape) == (2, 1, 8, 8, 8)


def test_torchscript_and_yaml_bundle(
    monai_bundle: Path, other_grid_image: Path, tmp_path: Path
) -> None:
    import yaml

    folder = tmp_path / "scripted"
    shutil.copytree(monai_bundle, folder)
    source = load_model(monai_bundle).framework.network
    example = torch.zeros(1, 1, 16, 16, 16)
    torch.jit.save(torch.jit.trace(source, example), str(folder / "models" / "model.ts"))
    (folder / "models" / "model.pt").unlink()
    config = json.loads((folder / "configs" / "inference.json").read_text())
    (folder / "configs" / "inference.json").unlink()
    (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    model = load_model(folder)
    assert model.framework.describe()["network"].startswith("TorchScript")
    image = read_image(other_grid_image)
    expected = predict(load_model(monai_bundle), image, device="cpu")
    assert np.abs(predict(model, image, device="cpu") - expected).max() <= 1e-5


def test_wrong_channel_count_is_an_error_in_words(
    monai_bundle: Path, other_grid_image: Path
) -> None:
    image = read_image(other_grid_image)
    image.extra_channels.append(read_image(other_grid_image))
    with pytest.raises(ValueError, match=r"2 channel\(s\) but the MONAI bundle .* expects 1"):
        predict(load_model(monai_bundle), image, device="cpu")


SCRIPT = """
from monai.transforms import MapTransform


class Shift(MapTransform):
    def __init__(self, keys, offset):
        super().__init__(keys)
        self.offset = offset

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key] + self.offset
        return d
"""


def test_bundle_with_its_own_scripts_needs_trust_then_runs_as_monai_does(
    monai_bundle: Path, tmp_path: Path, other_grid_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zoo bundle may carry code (scripts/): refused untrusted; trusted, it is importable
    while parsing (as MONAI's ConfigWorkflow.run makes it) and nowhere after."""
    config = bundle_config()
    step = {"_target_": "scripts.transforms.Shift", "keys": "image", "offset": 0.25}
    config["preprocessing"]["transforms"].insert(5, step)
    folder = make_bundle(tmp_path / "scripted_bundle", config=config)
    (folder / "scripts").mkdir()
    (folder / "scripts" / "__init__.py").write_text("")
    (folder / "scripts" / "transforms.py").write_text(SCRIPT)
    with pytest.raises(UntrustedCodeError, match="'scripts.transforms.Shift', which is not part"):
        load_model(folder)
    model = load_model(folder, trust=True)
    image = read_image(other_grid_image)
    ours = predict(model, image, device="cpu")
    import sys

    assert str(folder) not in sys.path
    monkeypatch.syspath_prepend(str(folder))
    reference = monai_reference(folder, [other_grid_image], discretise=False)
    assert np.abs(ours - reference).max() <= PARITY_TOLERANCE
    plain = predict(load_model(monai_bundle), image, device="cpu")  # same weights, no Shift
    assert np.abs(ours - plain).max() > 1e-3, "the bundle's own transform did not run"


# -- hostile bundles ----------------------------------------------------------------------------
def _touch(marker: Path) -> str:
    return f"$__import__('pathlib').Path({str(marker)!r}).touch() or [4, 8, 16]"


def hostile_bundle(root: Path, marker: Path, where: str) -> Path:
    """A bundle whose instantiated config would create ``marker`` if it ran."""
    config = bundle_config()
    transforms = config["preprocessing"]["transforms"]
    if where == "expression":
        config["network_def"]["channels"] = _touch(marker)
    elif where == "referenced-expression":
        config["touch_it"] = _touch(marker)
        transforms[4]["a_min"] = "@touch_it"
    elif where == "foreign-target":
        transforms.insert(1, {"_target_": "pathlib.Path.touch", "self": str(marker)})
    elif where == "monai-run-cmd":
        config["inferer"]["roi_size"] = {"_target_": "run_cmd", "cmd_list": ["touch", str(marker)]}
    elif where == "reader-by-name":
        transforms[0].update(reader="os.system", command=f"touch {marker}")
    elif where == "postprocessing":
        config["postprocessing"]["transforms"][1]["nearest_interp"] = _touch(marker)
    return make_bundle(root / f"hostile_{where}", config=config)


HOSTILE = {
    "expression": "'network_def::channels' holds a Python expression",
    "referenced-expression": "'touch_it' holds a Python expression",
    "foreign-target": "names _target_ 'pathlib.Path.touch', which is not part of MONAI",
    "monai-run-cmd": "names _target_ 'run_cmd' (monai.utils.misc)",
    "reader-by-name": "'preprocessing::transforms::0::reader' names 'os.system'",
    "postprocessing": "'postprocessing::transforms::1::nearest_interp' holds a Python expression",
}


@pytest.mark.parametrize("where", list(HOSTILE))
def test_hostile_bundle_runs_nothing_without_trust(where: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    folder = hostile_bundle(tmp_path, marker, where)
    with pytest.raises(UntrustedCodeError) as refused:
        load_model(folder)
    message = str(refused.value)
    assert "\n" not in message and str(folder / "configs" / "inference.json") in message
    assert HOSTILE[where] in message, message
    assert not marker.exists()


def test_hostile_bundle_runs_when_trusted(tmp_path: Path) -> None:
    """The refusal is what kept the marker away: trusted, the same bundle runs its code."""
    marker = tmp_path / "ran.txt"
    folder = hostile_bundle(tmp_path, marker, "expression")
    load_model(folder, trust=True)
    assert marker.exists()


@pytest.mark.parametrize("command", ["info", "segment", "quantize", "evaluate"])
def test_hostile_bundle_through_the_commands(
    command: str, tmp_path: Path, other_grid_image: Path
) -> None:
    marker = tmp_path / "ran.txt"
    folder = hostile_bundle(tmp_path, marker, "referenced-expression")
    out = tmp_path / "out"  # what each command would write, and must not
    labels = tmp_path / "labels"
    labels.mkdir()
    image = nib.load(other_grid_image)
    nib.save(
        nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), labels / "other.nii.gz"
    )
    arguments = {
        "info": ("info", folder),
        "segment": ("segment", other_grid_image, "--model", folder, "--out", tmp_path / "m.nii.gz"),
        "quantize": ("quantize", "--model", folder, "--calib", other_grid_image, "--out", out),
        "evaluate": (
            "evaluate", "--model", folder, "--images", other_grid_image,
            "--labels", labels / "other.nii.gz", "--report", tmp_path / "r.json",
        ),
    }  # fmt: skip
    result = run_cli(*arguments[command])
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Python expression" in lines[0] and "--trust" in lines[0], lines[0]
    assert not marker.exists()
    assert not out.exists() and not (tmp_path / "m.nii.gz").exists()
    assert not (tmp_path / "r.json").exists()


def test_onnxruntime_backend_runs_the_network_inside_the_bundle_pipeline(
    monai_bundle: Path, other_grid_image: Path
) -> None:
    """The bundle's own preprocessing, inferer and inversion, with the network in ONNX
    Runtime: the same probabilities as torch (FP32), and for a quantized variant too."""
    from core.deploy.onnx_runtime import OnnxRuntimeNetwork, with_backend
    from core.models.calibration import calibration_inputs
    from core.models.loading import quantized_variant
    from core.quant.config import QuantConfig
    from core.quant.ensemble import quantize_loaded_model

    image = read_image(other_grid_image)
    model = load_model(monai_bundle)
    calib = calibration_inputs(model, [image], n=4, seed=0)
    result = quantize_loaded_model(model, calib, QuantConfig(method="rtn", bits=4))
    variant = quantized_variant(result, model)
    sizes = []
    for source, run in ((model, None), (variant, result)):
        # The variant's network runs with its integer codes, as the GUI hands them over.
        on_ort = with_backend(source, "onnxruntime", quant_result=run)
        sizes.append(on_ort.storage_bytes)
        assert on_ort.backend == "onnxruntime" and source.backend == "torch"
        assert isinstance(on_ort.framework.network, OnnxRuntimeNetwork)
        assert on_ort.storage_bytes == on_ort.framework.network.size_bytes > 0
        want = predict(source, image, device="cpu")
        got = predict(on_ort, image, device="cpu")
        assert np.abs(got - want).max() <= 1e-5
        assert np.array_equal(got.argmax(0), want.argmax(0))
    assert sizes[1] < sizes[0]  # integer codes (biases, norms and 8-bit ends stay as they are)


def test_export_to_a_file_is_refused_in_words_that_point_to_the_backend(
    monai_bundle: Path, tmp_path: Path
) -> None:
    from core.deploy.onnx_export import export_onnx

    with pytest.raises(ValueError, match="--backend onnxruntime") as error:
        export_onnx(load_model(monai_bundle), tmp_path / "bundle.onnx")
    assert "pipeline" in str(error.value) and "to a folder" in str(error.value)
    assert not (tmp_path / "bundle.onnx").exists()

"""nnU-Net v2 model folders: opened safely, run by nnU-Net's own predictor, quantized, saved.

Parity is checked against nnU-Net's own entry point on the same files: ``nnUNetPredictor``
initialised from the model folder, fed by nnU-Net's ``SimpleITKIO`` reader.
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
from core.models import UntrustedCodeError, load_model, predict
from core.pipeline import segment_image
from tests.frameworks.conftest import raw_case
from tests.frameworks.nnunet_models import rotated_affine


def nnunet_reference(
    folder: Path, files: list[Path], folds=None, mirroring: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's own prediction: (segmentation, probabilities) in nnU-Net's (z, y, x) order."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds)
    data, properties = SimpleITKIO().read_images([str(f) for f in files])
    seg, probs = predictor.predict_single_npy_array(data, properties, None, None, True)
    return seg, probs


def to_ijk(array: np.ndarray) -> np.ndarray:
    """nnU-Net (SimpleITK) order back to nibabel's voxel order (a leading channel axis kept)."""
    return array.transpose(0, 3, 2, 1) if array.ndim == 4 else array.transpose(2, 1, 0)


def test_opens_with_framework_facts(nnunet_3d: Path) -> None:
    model = load_model(nnunet_3d)
    facts = model.framework.describe()
    assert facts["framework"] == "nnU-Net v2"
    assert facts["configuration"] == "3d_fullres"
    assert facts["folds"] == ["0", "1"]
    assert facts["input_channels"] == 1
    assert facts["mirroring"] == [0, 1, 2]
    plans = json.loads((nnunet_3d / "plans.json").read_text())
    assert facts["patch_size"] == plans["configurations"]["3d_fullres"]["patch_size"]
    assert model.spec.class_names == ("background", "organ", "lesion")
    assert model.spec.activation == "softmax" and model.spec.mode == "3d"


def test_probabilities_equal_nnunet_predictor(nnunet_3d: Path) -> None:
    files = raw_case(nnunet_3d)
    model = load_model(nnunet_3d)
    ours = predict(model, read_image(files[0]), device="cpu")
    seg, reference = nnunet_reference(nnunet_3d, files)
    reference = to_ijk(reference)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.array_equal(ours.argmax(0), to_ijk(seg)), "argmax masks differ from nnU-Net's"


def test_other_grid_and_orientation_round_trip(nnunet_3d: Path, tmp_path: Path) -> None:
    """An image whose spacing, size and orientation differ from the plan's: parity, and the
    written mask carries the image's own geometry."""
    rng = np.random.default_rng(5)
    array = rng.normal(0, 20, size=(37, 29, 11)).astype(np.float32)
    array[10:25, 8:20, 3:8] += 150
    affine = rotated_affine((1.3, 0.7, 3.1), angle_deg=-35.0) @ np.diag([1.0, -1.0, 1.0, 1.0])
    path = tmp_path / "other_0000.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), path)
    image = read_image(path)
    model = load_model(nnunet_3d, folds=[0])
    result = segment_image(model, image, decision="argmax", device="cpu")
    seg, reference = nnunet_reference(nnunet_3d, [path], folds=(0,))
    assert np.abs(result.probs - to_ijk(reference)).max() <= 1e-4
    assert np.array_equal(result.mask, to_ijk(seg))
    out = tmp_path / "mask.nii.gz"
    write_mask(result.mask, out, reference=image)
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, nib.load(path).affine, atol=1e-5)
    assert np.array_equal(np.asarray(written.dataobj), result.mask)


def test_2d_model_on_a_volume(nnunet_2d: Path) -> None:
    files = raw_case(nnunet_2d)
    model = load_model(nnunet_2d)
    assert model.spec.mode == "2d" and len(model.spec.patch_size) == 2
    ours = predict(model, read_image(files[0]), device="cpu")
    seg, reference = nnunet_reference(nnunet_2d, files)
    assert np.abs(ours - to_ijk(reference)).max() <= 1e-4
    assert np.array_equal(ours.argmax(0), to_ijk(seg))


def test_region_based_model_is_multilabel(nnunet_regions: Path) -> None:
    files = raw_case(nnunet_regions)
    assert len(files) == 2
    model = load_model(nnunet_regions)
    assert model.spec.activation == "sigmoid"
    assert model.spec.class_names == ("background", "whole", "core")
    image = read_image(files[0])
    image.extra_channels.append(read_image(files[1]))
    result = segment_image(model, image, decision="threshold", threshold=0.5, device="cpu")
    seg, reference = nnunet_reference(nnunet_regions, files)
    # Channel 0 is our background (1 - the largest region); the regions follow in order.
    assert np.abs(result.probs[1:] - to_ijk(reference)).max() <= 1e-4
    assert np.array_equal(result.mask, to_ijk(seg)), "region painting differs from nnU-Net's"
    rma = segment_image(model, image, decision="rma-dice", probs=result.probs, device="cpu")
    assert rma.mask.shape == image.shape3


def test_wrong_channel_count_is_an_error_in_words(nnunet_regions: Path, tmp_path: Path) -> None:
    first = raw_case(nnunet_regions)[0]
    model = load_model(nnunet_regions)
    alone = tmp_path / first.name
    shutil.copy(first, alone)
    with pytest.raises(ValueError, match=r"needs 2 input channels but case_000_0001.nii.gz is"):
        predict(model, read_image(alone), device="cpu")
    renamed = tmp_path / "scan.nii.gz"
    shutil.copy(first, renamed)
    with pytest.raises(ValueError, match=r"name the channel files <case>_0000.nii.gz"):
        predict(model, read_image(renamed), device="cpu")
    image = read_image(alone)
    image.extra_channels.extend([read_image(first), read_image(first)])
    with pytest.raises(ValueError, match=r"3 channel\(s\) but the nnU-Net model .* expects 2"):
        predict(model, image, device="cpu")


def test_fold_and_checkpoint_choice(nnunet_3d: Path) -> None:
    files = raw_case(nnunet_3d)
    model = load_model(nnunet_3d, folds=["1"], mirroring=False)
    assert model.framework.folds == ["1"]
    ours = predict(model, read_image(files[0]), device="cpu")
    _, reference = nnunet_reference(nnunet_3d, files, folds=(1,), mirroring=False)
    assert np.abs(ours - to_ijk(reference)).max() <= 1e-4
    with pytest.raises(ValueError, match="no checkpoint_final.pth for fold.*7"):
        load_model(nnunet_3d, folds=[7])
    with pytest.raises(ValueError, match="no fold_K/checkpoint_best.pth"):
        load_model(nnunet_3d, checkpoint="checkpoint_best.pth")


class _Marker:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def hostile_checkpoint_folder(source: Path, root: Path, marker: Path) -> Path:
    folder = root / source.name
    shutil.copytree(source, folder)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    state = torch.load(checkpoint, weights_only=True)
    state["logging"] = _Marker(marker)
    torch.save(state, checkpoint)
    return folder


def hostile_plans_folder(source: Path, root: Path) -> Path:
    folder = root / ("plans_" + source.name)
    shutil.copytree(source, folder)
    plans = json.loads((folder / "plans.json").read_text())
    for configuration in plans["configurations"].values():
        if "architecture" in configuration:
            configuration["architecture"]["network_class_name"] = "subprocess.Popen"
    (folder / "plans.json").write_text(json.dumps(plans))
    return folder


def test_hostile_checkpoint_runs_nothing_without_trust(nnunet_3d: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    folder = hostile_checkpoint_folder(nnunet_3d, tmp_path, marker)
    with pytest.raises(UntrustedCodeError, match="checkpoint_final.pth.*would run code"):
        load_model(folder)
    assert not marker.exists()
    load_model(folder, trust=True)  # the user's choice: now it runs
    assert marker.exists()


def test_plans_naming_code_need_trust(nnunet_3d: Path, tmp_path: Path) -> None:
    folder = hostile_plans_folder(nnunet_3d, tmp_path)
    with pytest.raises(UntrustedCodeError, match="subprocess.Popen"):
        load_model(folder)


def test_channel_files_beside_case_0000_are_read(nnunet_regions: Path) -> None:
    """Opening case_0000 of a two-channel model reads case_0001 beside it."""
    files = raw_case(nnunet_regions)
    model = load_model(nnunet_regions, mirroring=False)
    together = predict(model, read_image(files[0]), device="cpu")
    image = read_image(files[0])
    image.extra_channels.append(read_image(files[1]))
    np.testing.assert_array_equal(together, predict(model, image, device="cpu"))


def test_quantized_folder_runs_in_nnunet_predictor(nnunet_3d: Path, tmp_path: Path) -> None:
    """W8 round-to-nearest per channel on both folds: the saved folder is an nnU-Net model
    folder nnUNetPredictor runs with the same probabilities, with codes beside the weights."""
    from core.models import calibration_inputs, quantized_variant, save_quantized_model
    from core.quant import QuantConfig, quantize_loaded_model

    files = raw_case(nnunet_3d)
    model = load_model(nnunet_3d, mirroring=False)
    image = read_image(files[0])
    calib = calibration_inputs(model, [image], n=4, seed=0)
    assert tuple(calib.shape[1:]) == (1, *model.framework.patch_size)
    config = QuantConfig(method="rtn", bits=8, granularity="channel", device="cpu")
    result = quantize_loaded_model(model, calib, config)
    assert len(result.members) == 1  # fold 1 beside fold 0
    variant = quantized_variant(result, model, name="W8 RTN")
    out = save_quantized_model(result, model, tmp_path / "q8", label="W8 RTN")
    for fold in ("0", "1"):
        assert (out / f"fold_{fold}" / "quantized.safetensors").is_file()
    ours = predict(variant, image, device="cpu")
    _, reference = nnunet_reference(out, files, mirroring=False)
    assert np.abs(ours - to_ijk(reference)).max() <= 1e-4
    float_probs = predict(model, image, device="cpu")
    change = np.abs(ours - float_probs)
    assert change.max() > 0 and change.mean() < 0.01  # quantized, but close at 8 bits
    reopened = load_model(out, mirroring=False)
    assert reopened.is_quantized and "W8 RTN" in reopened.name
    np.testing.assert_allclose(predict(reopened, image, device="cpu"), ours, atol=1e-6)
    with pytest.raises(ValueError, match="does not hold a quantized model"):
        save_quantized_model(result, model, nnunet_3d, overwrite=True)


def test_activation_quantization_is_refused_in_words(nnunet_2d: Path) -> None:
    from core.quant import QuantConfig, quantize_loaded_model

    model = load_model(nnunet_2d)
    config = QuantConfig(method="rtn", bits=8, act_bits=8, device="cpu")
    with pytest.raises(ValueError, match="weights only"):
        quantize_loaded_model(model, torch.zeros(1, 1, 8, 8), config)


def test_flexround_learns_on_aliased_convs(nnunet_2d: Path) -> None:
    """dynamic_network_architectures registers each conv twice (``.conv`` and inside an
    ``nn.Sequential``); the quantizer must wrap both names or reconstruction learns nothing."""
    from core.models import calibration_inputs
    from core.quant import QuantConfig, quantize_loaded_model

    model = load_model(nnunet_2d)
    calib = calibration_inputs(model, [read_image(raw_case(nnunet_2d)[0])], n=4, seed=0)
    config = QuantConfig(method="flexround", bits=4, iters=15, batch_size=4, device="cpu")
    result = quantize_loaded_model(model, calib, config)
    before, after = result.block_losses["encoder"]
    assert after < before


def test_progress_names_stages_and_folds_and_cancel_stops_between_tiles(nnunet_3d: Path) -> None:
    from core.jobs import CancelToken, JobCancelled

    model = load_model(nnunet_3d, mirroring=False)
    image = read_image(raw_case(nnunet_3d)[0])
    seen = []
    predict(model, image, device="cpu", on_progress=seen.append)
    stages = [p.stage for p in seen]
    assert stages[0] == "preprocessing" and stages[-1] == "export"
    tiles = [p for p in seen if p.stage == "inference"]
    assert {p.message.split(":")[0] for p in tiles} == {"nnU-Net fold 0", "nnU-Net fold 1"}
    assert tiles[-1].step == tiles[-1].total
    token = CancelToken()
    calls = []

    def cancel_after_first_tile(progress) -> None:
        calls.append(progress)
        if progress.stage == "inference":
            token.cancel()

    with pytest.raises(JobCancelled):
        predict(model, image, device="cpu", on_progress=cancel_after_first_tile, cancel=token)
    assert sum(p.stage == "inference" for p in calls) == 1


def test_calibration_crops_fit_the_network_strides(nnunet_3d: Path) -> None:
    from core.models import calibration_inputs

    model = load_model(nnunet_3d)
    calib = calibration_inputs(model, [read_image(raw_case(nnunet_3d)[0])], n=3, crop=10)
    multiple = model.framework.size_multiple()
    assert all(size % m == 0 for size, m in zip(calib.shape[2:], multiple, strict=True))
    assert all(
        size <= p for size, p in zip(calib.shape[2:], model.framework.patch_size, strict=True)
    )
    with torch.no_grad():
        assert model.module(calib).shape[2:] == calib.shape[2:]


def predict_counting_calls(model, folds, image) -> tuple[np.ndarray, list[int]]:
    """``predict(model, image)`` and how many times each of ``folds`` ran."""
    calls = [0] * len(folds)
    handles = [
        fold.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, fold in enumerate(folds)
    ]
    try:
        return predict(model, image, device="cpu"), calls
    finally:
        for handle in handles:
            handle.remove()


def test_onnxruntime_backend_runs_every_fold_inside_nnunets_predictor(nnunet_3d: Path) -> None:
    """nnU-Net's preprocessing, sliding window, mirroring and fold ensemble, with each fold's
    network in ONNX Runtime: every fold runs as often as the others, and the masks match."""
    from core.deploy.onnx_runtime import with_backend

    image = read_image(raw_case(nnunet_3d)[0])
    model = load_model(nnunet_3d)
    on_ort = with_backend(model, "onnxruntime")
    assert on_ort.backend == "onnxruntime" and model.backend == "torch"
    folds = list(on_ort.module)
    assert len(folds) == 2 and on_ort.storage_bytes == sum(f.size_bytes for f in folds) > 0
    got, calls = predict_counting_calls(on_ort, folds, image)
    want = predict(model, image, device="cpu")
    assert calls[0] == calls[1] > 0
    assert np.mean(got.argmax(0) == want.argmax(0)) >= 0.999
    # Untrained random weights and InstanceNorm over a few voxels at the bottleneck: logits
    # agree to 5e-5 relative, probabilities to a few 1e-3.
    assert np.abs(got - want).max() <= 1e-2

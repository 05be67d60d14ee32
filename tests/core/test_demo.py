"""The embedded CT demo: files present and small, regenerable, and the model reaches its Dice."""

import json

import nibabel as nib
import numpy as np
import pytest

from core.demo import demo_paths
from core.io import read_image
from core.models import load_model, predict
from core.phantom import PHANTOM_CLASSES, make_phantom

DEMO = demo_paths()
pytestmark = pytest.mark.skipif(
    bool(DEMO.missing()), reason=f"demo files missing: {DEMO.missing()}"
)


def test_demo_files_exist_and_stay_small():
    assert DEMO.missing() == []
    assert DEMO.readme.exists()
    files = [DEMO.image, DEMO.label, *DEMO.model.iterdir()]
    total = sum(p.stat().st_size for p in files)
    assert total <= 5 * 1024 * 1024, f"demo files take {total / 2**20:.1f} MB"


def test_demo_image_is_the_held_out_phantom_with_its_geometry():
    metrics = json.loads(DEMO.metrics.read_text())
    seed = metrics["held_out_seed"]
    assert seed not in metrics["train_seeds"]
    expected_image, expected_label = make_phantom(seed)
    nii = nib.load(str(DEMO.image))
    np.testing.assert_array_equal(np.asarray(nii.dataobj), expected_image.array)
    np.testing.assert_allclose(nii.affine, expected_image.affine, atol=1e-5)
    assert nib.aff2axcodes(nii.affine) == ("L", "A", "S")
    np.testing.assert_allclose(nii.header.get_zooms(), (0.8, 0.8, 2.5), rtol=1e-6)
    label = np.asarray(nib.load(str(DEMO.label)).dataobj)
    np.testing.assert_array_equal(label, expected_label)


def test_demo_model_spec_is_small_and_describes_the_phantom_classes():
    model = load_model(DEMO.model)
    assert model.name == "demo-ct-unet (FP32)"
    assert model.spec.class_names == PHANTOM_CLASSES
    assert model.spec.mode == "2d"
    assert sum(p.numel() for p in model.module.parameters()) < 300_000


def test_shipped_model_reaches_recorded_argmax_dice_on_demo_image():
    metrics = json.loads(DEMO.metrics.read_text())
    image = read_image(DEMO.image)
    truth = np.asarray(nib.load(str(DEMO.label)).dataobj)
    model = load_model(DEMO.model)
    probs = predict(model, image, device="cpu")
    assert probs.shape == (len(PHANTOM_CLASSES), *truth.shape)
    decision = probs.argmax(axis=0)
    for index, name in enumerate(PHANTOM_CLASSES):
        a, b = decision == index, truth == index
        dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert dice == pytest.approx(metrics["dice"][name], abs=0.02), name
    # The model is useful, not just consistent with its own record.
    assert metrics["dice"]["liver"] > 0.9 and metrics["dice"]["kidney"] > 0.8


NATURAL_MISSING = DEMO.natural_missing()


@pytest.mark.skipif(bool(NATURAL_MISSING), reason=f"natural demo missing: {NATURAL_MISSING}")
def test_natural_demo_is_the_held_out_scene_and_model_reaches_its_dice():
    from skimage.io import imread

    from core.phantom import SCENE_CLASSES, make_texture_scene

    metrics = json.loads(DEMO.natural_metrics.read_text())
    expected_image, expected_label = make_texture_scene(metrics["held_out_seed"])
    image = read_image(DEMO.natural_image)
    assert image.is_natural and image.array.shape == expected_image.array.shape
    np.testing.assert_array_equal(image.array, expected_image.array)
    truth = imread(DEMO.natural_label)[:, :, None]
    np.testing.assert_array_equal(truth, expected_label)
    model = load_model(DEMO.natural_model)
    assert model.name == "demo-rgb-unet (FP32)" and model.spec.in_channels == 3
    decision = predict(model, image, device="cpu").argmax(axis=0)
    for index, name in enumerate(SCENE_CLASSES):
        a, b = decision == index, truth == index
        dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert dice == pytest.approx(metrics["dice"][name], abs=0.02), name

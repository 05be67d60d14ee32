"""Probability calibration: scaling, NLL fit, reliability measurement, the decision guard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.models import LoadedModel, ModelSpec, predict
from core.pipeline import segment_image
from core.probability_calibration import (
    PRUNING_CANDIDATES,
    DecisionGuard,
    GuardTally,
    PixelSample,
    ProbabilityCalibration,
    ReliabilityTally,
    calibrate_probabilities,
    fit_scaling,
    guarded_decision,
    sample_pixels,
)
from core.probability_calibration import fitting as fitting_module
from core.probability_calibration.model_fit import fit_from_probabilities
from core.seg import argmax_decision, rankseg_rma
from tests.tiny_models import tiny_unet


def _softmax(z: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _random_logits(seed: int, shape=(3, 6, 5, 4), spread: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, spread, size=shape)


# --- scaling ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_temperature_scaling_of_softmax_probabilities_is_softmax_of_scaled_logits(dtype):
    z = _random_logits(0)
    probs = _softmax(z).astype(dtype)
    calibrated = calibrate_probabilities(probs, ProbabilityCalibration(temperature=1.7), "softmax")
    assert calibrated is probs  # in place
    np.testing.assert_allclose(calibrated, _softmax(z / 1.7), rtol=1e-5, atol=1e-6)


def test_sigmoid_and_vector_scaling_match_their_formulas():
    z = _random_logits(1, spread=2.0)
    probs = (1 / (1 + np.exp(-z))).astype(np.float32)
    out = calibrate_probabilities(probs.copy(), ProbabilityCalibration(temperature=0.5), "sigmoid")
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-z / 0.5)), rtol=1e-4, atol=1e-6)
    scales, biases = (0.5, 1.0, 2.0), (0.1, -0.2, 0.3)
    vector = ProbabilityCalibration(temperature=1.0, class_scales=scales, class_biases=biases)
    soft = _softmax(z).astype(np.float32)
    out = calibrate_probabilities(soft, vector, "softmax")
    expected = _softmax(
        np.log(_softmax(z)) * np.array(scales)[:, None, None, None]
        + np.array(biases)[:, None, None, None]
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)


def test_scaling_of_a_non_contiguous_float16_array_writes_every_slab():
    z = _random_logits(2)
    probs = np.asfortranarray(_softmax(z).astype(np.float16))
    calibrate_probabilities(probs, ProbabilityCalibration(temperature=2.0), "softmax")
    np.testing.assert_allclose(probs.astype(np.float32), _softmax(z / 2.0), atol=2e-3)


# --- fitting ------------------------------------------------------------------------------


def _miscalibrated_case(seed: int, true_scale: float, n: int = 60_000):
    """Probabilities softmax(z) whose labels are drawn from softmax(true_scale * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, size=(3, n))
    truth_p = _softmax(true_scale * z)
    cumulative = truth_p.cumsum(0)
    labels = (rng.random(n)[None] > cumulative).sum(0)
    return _softmax(z).astype(np.float32), labels.astype(np.int64)


@pytest.mark.parametrize("true_scale", [0.5, 2.0])
def test_fitted_temperature_recovers_the_scale_the_labels_were_drawn_with(true_scale):
    probs, labels = _miscalibrated_case(3, true_scale)
    sample = PixelSample(activation="softmax", n_classes=3)
    sample_pixels(sample, probs, labels)
    fit = fit_scaling(sample)
    assert fit.temperature == pytest.approx(1 / true_scale, rel=0.06)
    assert fit.fit["nll_after"] < fit.fit["nll_before"]


def test_weighted_sample_of_confident_pixels_keeps_the_fit_unbiased(monkeypatch):
    probs, labels = _miscalibrated_case(4, 2.0, n=80_000)
    full = PixelSample(activation="softmax", n_classes=3)
    sample_pixels(full, probs, labels)
    monkeypatch.setattr(fitting_module, "_CONFIDENT", 0.6)  # most pixels count as confident
    monkeypatch.setattr(fitting_module, "_CONFIDENT_SAMPLE", 5000)
    sub = PixelSample(activation="softmax", n_classes=3)
    sample_pixels(sub, probs, labels)
    assert sub.rows < 0.6 * full.rows
    assert sub.pixels == full.pixels == 80_000
    assert fit_scaling(sub).temperature == pytest.approx(fit_scaling(full).temperature, rel=0.05)


def test_vector_scaling_fits_no_worse_than_the_temperature():
    probs, labels = _miscalibrated_case(5, 1.5)
    sample = PixelSample(activation="softmax", n_classes=3)
    sample_pixels(sample, probs, labels)
    fit = fit_scaling(sample, vector=True)
    assert fit.is_vector and len(fit.class_scales) == 3
    assert fit.fit["nll_after"] <= fit.fit["nll_temperature"] + 1e-9


# --- measurement --------------------------------------------------------------------------


def test_reliability_tally_matches_a_pixel_by_pixel_count():
    rng = np.random.default_rng(6)
    probs = _softmax(_random_logits(6, shape=(3, 7, 9))).astype(np.float32)
    truth = rng.integers(0, 3, size=(7, 9))
    truth[0, 0] = 9  # a label outside the model's classes: left out
    tally = ReliabilityTally(["a", "b", "c"], bins=4)
    tally.add(probs, truth)
    tally.add(probs, truth)
    for cls in tally.classes():
        counts, sum_p, pos = np.zeros(4), np.zeros(4), np.zeros(4)
        tail_mass = tail_pos = 0.0
        for (i, j), label in np.ndenumerate(truth):
            if label > 2:
                continue
            p = float(probs[cls.label, i, j])
            b = min(int(p * 4), 3)
            counts[b] += 2
            sum_p[b] += 2 * p
            pos[b] += 2 * (label == cls.label)
            if p < 0.05:
                tail_mass += 2 * p
                tail_pos += 2 * (label == cls.label)
        np.testing.assert_array_equal(cls.counts, counts)
        assert cls.ece == pytest.approx(np.abs(pos - sum_p).sum() / counts.sum())
        assert cls.tail_mass == pytest.approx(tail_mass)
        assert cls.tail_positives == tail_pos
        filled = counts > 0
        np.testing.assert_allclose(cls.observed[filled], (pos / np.maximum(counts, 1))[filled])


# --- the guard ----------------------------------------------------------------------------


def test_guard_with_every_class_on_rma_is_rma_and_on_argmax_is_argmax():
    probs = _softmax(_random_logits(7, shape=(1, 4, 12, 10), spread=1.5), axis=1)
    probs = probs.astype(np.float32)
    rma_guard = DecisionGuard(rules=("rma",) * 4, pruning=(0.5,) * 4)
    out, thresholds = guarded_decision(probs, rma_guard)
    np.testing.assert_array_equal(out, rankseg_rma(probs))
    assert thresholds.shape == (1, 4)
    argmax_guard = DecisionGuard(rules=("rma",) + ("argmax",) * 3, pruning=(0.5,) * 4)
    out, thresholds = guarded_decision(probs, argmax_guard)
    np.testing.assert_array_equal(out, argmax_decision(probs))
    assert np.isnan(thresholds[0, 1:]).all()


def test_guard_combines_the_maps_by_the_class_rules():
    # Hand-worked: class 2 by argmax, class 1 by RMA.
    argmax_map = np.array([[0, 2, 2, 1, 0]])
    rma_map = np.array([[1, 1, 2, 2, 0]])
    from core.probability_calibration.guard import _combine

    out = _combine(argmax_map, rma_map, ("rma", "rma", "argmax"), multilabel=False)
    # Pixel 1: argmax says 2 (argmax-ruled) -> 2; pixel 3: RMA gave 2 but argmax did not -> 1.
    np.testing.assert_array_equal(out, [[1, 2, 2, 1, 0]])


def _dice_by_counting(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def test_guard_tally_scores_argmax_and_rma_at_every_pruning_level():
    p = _softmax(_random_logits(12, shape=(3, 30, 30), spread=1.5)).astype(np.float32)
    truth = np.random.default_rng(12).integers(0, 3, size=(30, 30))
    tally = GuardTally(3)
    tally.add(p, truth)
    argmax = argmax_decision(p[None])[0]
    for c in range(3):
        assert tally.argmax[c] == pytest.approx(_dice_by_counting(argmax, truth, c))
    for row, level in enumerate(PRUNING_CANDIDATES):
        rma = rankseg_rma(p[None], pruning_prob=level)[0]
        for c in range(3):
            assert tally.rma[row, c] == pytest.approx(_dice_by_counting(rma, truth, c))


def test_guard_picks_rma_only_where_it_beats_argmax_and_its_best_pruning_level():
    tally = GuardTally(5)
    level = {p: i for i, p in enumerate(PRUNING_CANDIDATES)}
    for case in range(3):
        argmax = np.array([0.9, 0.8, 0.6, 0.5, 0.7])
        rma = np.full((len(PRUNING_CANDIDATES), 5), 0.5)
        rma[level[0.9], 1] = 0.85  # class 1: RMA at 0.9 beats argmax on every case
        rma[:, 2] = 0.55  # class 2: RMA below argmax at every level
        rma[level[0.1], 3] = 0.5  # class 3: ties everywhere go to argmax
        # class 4: a large gain on one case, losses on the two others (mean gain > 0)
        rma[level[0.5], 4] = 0.99 if case == 0 else 0.6
        tally.argmax_cases.append(argmax)
        tally.rma_cases.append(rma)
    guard = tally.learn()
    assert guard.rules == ("rma", "rma", "argmax", "argmax", "argmax")  # background: RMA
    assert guard.pruning[1] == 0.9
    assert guard.pruning[2] == PRUNING_CANDIDATES[0]  # ties between levels: the default
    assert tally.rma[level[0.9], 1] == pytest.approx(3 * 0.85)  # sums over the cases


# --- spec, inference and pipeline ---------------------------------------------------------


def _calibrated_spec(spec: ModelSpec, temperature: float, guard=None) -> ModelSpec:
    calibration = ProbabilityCalibration(temperature=temperature, guard=guard)
    return spec.with_changes(calibration=calibration.to_dict())


def test_spec_keeps_calibration_through_json_and_reads_old_specs_without_it():
    spec = tiny_unet().spec
    assert spec.calibration is None and spec.probability_calibration is None
    guard = DecisionGuard(rules=("rma", "argmax"), pruning=(0.5, 0.9), min_fraction=(0.8, 1e-4))
    calibrated = _calibrated_spec(spec, 1.8, guard)
    again = ModelSpec.from_json(calibrated.to_json())
    assert again.probability_calibration.temperature == pytest.approx(1.8)
    assert again.probability_calibration.guard == guard
    old = json.loads(spec.to_json())
    old.pop("calibration")
    assert ModelSpec.from_dict(old).calibration is None


@pytest.mark.parametrize(
    ("calibration", "field"),
    [
        ({"temperature": 0}, "calibration.temperature"),
        ({"temperature": 1, "class_scales": [1.0]}, "calibration.class_scales"),
        ({"guard": {"rules": ["rma", "maybe"], "pruning": [0.5, 0.5]}}, "guard.rules[1]"),
        ({"bogus": 1}, "unknown field"),
        (
            {"guard": {"rules": ["rma"] * 2, "pruning": [0.5] * 2, "min_fraction": [0.1, 2]}},
            "guard.min_fraction values",
        ),
    ],
)
def test_bad_calibration_fields_are_named(calibration, field):
    data = json.loads(tiny_unet().spec.to_json())
    data["calibration"] = calibration
    with pytest.raises(ValueError, match=r"model.json: .*" + field.replace("[", r"\[")):
        ModelSpec.from_dict(data, source="model.json")


def _tiny_image():
    from core.phantom import make_phantom

    return make_phantom(5, shape=(24, 24, 16))


def test_predict_applies_the_spec_calibration_unless_asked_not_to():
    base = tiny_unet()
    image, _ = _tiny_image()
    raw = predict(base, image, device="cpu")
    model = LoadedModel(base.module, _calibrated_spec(base.spec, 0.4))
    assert "calibrated, T = 0.4" in model.name
    np.testing.assert_array_equal(predict(model, image, device="cpu", calibrated=False), raw)
    expected = calibrate_probabilities(raw.copy(), ProbabilityCalibration(0.4), "softmax")
    np.testing.assert_allclose(predict(model, image, device="cpu"), expected, atol=1e-6)


def test_guarded_rule_reports_each_class_rule_and_falls_back_without_a_guard():
    base = tiny_unet()
    image, truth = _tiny_image()
    truth = (truth > 0).astype(np.int64)
    plain = segment_image(base, image, decision="guarded", device="cpu", ground_truth=truth)
    rma = segment_image(base, image, decision="rma-dice", device="cpu", probs=plain.probs)
    np.testing.assert_array_equal(plain.mask, rma.mask)
    assert any("no learned decision guard" in w for w in plain.warnings)
    guard = DecisionGuard(rules=("rma", "argmax"), pruning=(0.5, 0.5))
    model = LoadedModel(base.module, _calibrated_spec(base.spec, 1.0, guard))
    result = segment_image(model, image, decision="guarded", device="cpu", ground_truth=truth)
    argmax = segment_image(model, image, decision="argmax", device="cpu", probs=result.probs)
    np.testing.assert_array_equal(result.mask, argmax.mask)
    assert [row.rule for row in result.rows] == ["rma", "argmax"]
    assert result.rule_label == "guarded"


def test_fit_from_probabilities_calibrates_and_learns_a_guard():
    rng = np.random.default_rng(8)
    cases = []
    for seed in range(2):
        z = _random_logits(10 + seed, shape=(3, 30, 30), spread=2.0)
        truth = (rng.random((30, 30))[None] > _softmax(3 * z).cumsum(0)).sum(0)
        cases.append((_softmax(z).astype(np.float32), truth))
    before = [p.copy() for p, _ in cases]
    fit = fit_from_probabilities(cases, class_names=["a", "b", "c"], activation="softmax")
    for (p, _), kept in zip(cases, before, strict=True):
        np.testing.assert_array_equal(p, kept)  # the cases are not modified
    assert fit.calibration.temperature < 0.6  # labels drawn 3x sharper than the probabilities
    assert fit.calibration.guard is not None and len(fit.calibration.guard.rules) == 3
    assert sum(c.ece for c in fit.after) < sum(c.ece for c in fit.before)


def test_reliability_diagrams_are_written_as_png_and_svg(tmp_path):
    from core.probability_calibration.plots import write_reliability_diagrams

    tally = ReliabilityTally(["a", "b"], bins=5)
    p = _softmax(_random_logits(9, shape=(2, 10, 10))).astype(np.float32)
    tally.add(p, (p[1] > 0.5).astype(np.int64))
    paths = write_reliability_diagrams(tally.classes(), "t", tmp_path / "diagram")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()[:500]


def test_rma_takes_one_pruning_level_per_class():
    probs = _softmax(_random_logits(11, shape=(1, 3, 20, 20), spread=1.0), axis=1)
    probs = torch.from_numpy(probs.astype(np.float32))
    peak = probs.amax(dim=(2, 3))[0]
    level = float(peak[2]) + 1e-3  # just above class 2's maximum: class 2 is pruned
    out, info = rankseg_rma(probs, pruning_prob=[0.0, 0.0, level], return_info=True)
    assert bool(info.active[0, 0]) and bool(info.active[0, 1]) and not bool(info.active[0, 2])
    assert not bool((out == 2).any())
    with pytest.raises(ValueError, match="3 classes"):
        rankseg_rma(probs, pruning_prob=[0.1, 0.2])


def test_multilabel_guard_takes_each_class_mask_from_its_rule():
    rng = np.random.default_rng(13)
    probs = rng.random((1, 3, 16, 12)).astype(np.float32) ** 3
    rma = rankseg_rma(probs, multilabel=True)
    guard = DecisionGuard(rules=("rma", "argmax", "rma"), pruning=(0.5, 0.5, 0.5))
    out, _ = guarded_decision(probs, guard, multilabel=True)
    np.testing.assert_array_equal(out[:, [0, 2]], rma[:, [0, 2]])
    np.testing.assert_array_equal(out[:, 1], probs[:, 1] > 0.5)


@pytest.mark.parametrize("layout", ["subfolders", "tagged"])
def test_folder_cases_pair_images_with_labels(tmp_path, layout):
    import nibabel as nib

    from core.phantom import make_phantom
    from core.probability_calibration.model_fit import folder_cases

    images = tmp_path / "images" if layout == "subfolders" else tmp_path
    labels = tmp_path / "labels" if layout == "subfolders" else tmp_path
    images.mkdir(exist_ok=True)
    labels.mkdir(exist_ok=True)
    truths = {}
    for seed in (1, 2):
        image, truth = make_phantom(seed, shape=(16, 16, 16))
        nib.Nifti1Image(image.array, image.affine).to_filename(images / f"c{seed}.nii.gz")
        name = f"c{seed}.nii.gz" if layout == "subfolders" else f"c{seed}_seg.nii.gz"
        nib.Nifti1Image(truth, image.affine).to_filename(labels / name)
        truths[seed] = truth
    loaders = folder_cases(tmp_path)
    assert len(loaders) == 2
    for seed, load in zip((1, 2), loaders, strict=True):
        image, truth = load()
        np.testing.assert_array_equal(truth, truths[seed])
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "c1.nii.gz").write_bytes((images / "c1.nii.gz").read_bytes())
    with pytest.raises(ValueError, match="unlabelled: no labelled case"):
        folder_cases(unlabelled)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_pixel_sample_reads_any_integer_label_type_alike(dtype):
    probs, labels = _miscalibrated_case(14, 1.5, n=5000)
    labels[:10] = 7  # outside the classes: left out
    reference = PixelSample(activation="softmax", n_classes=3)
    sample_pixels(reference, probs, labels.astype(np.int64))
    other = PixelSample(activation="softmax", n_classes=3)
    sample_pixels(other, probs, labels.astype(dtype))
    assert other.pixels == reference.pixels == 4990
    for a, b in zip(reference.tensors(), other.tensors(), strict=True):
        assert torch.equal(a, b)


def test_reliability_records_survive_report_rounding_and_merge_like_one_tally():
    from core.probability_calibration.measure import summarize_records
    from core.report_files import json_ready

    rng = np.random.default_rng(15)
    whole = ReliabilityTally(["a", "b", "c"])
    records = []
    for case in range(3):
        probs = _softmax(_random_logits(20 + case, shape=(3, 40, 50), spread=4.0))
        truth = rng.integers(0, 3, size=(40, 50))
        whole.add(probs, truth)
        one = ReliabilityTally(["a", "b", "c"])
        one.add(probs, truth)
        records.append({"model": "m", "case": str(case), **json_ready(one.to_record())})
    merged = summarize_records(records)["m"]
    for got, want in zip(merged, whole.classes(), strict=True):
        assert got["ece"] == pytest.approx(want.ece, rel=1e-5)
        assert got["tail_positives"] == want.tail_positives
        assert got["bins"]["counts"] == want.counts.tolist()


# --- the model's own argmax under vector scaling -------------------------------------------


def test_guard_argmax_rule_keeps_the_given_model_decision_not_the_calibrated_argmax():
    # Hand-worked, 3 classes: the calibrated argmax moved pixel 3 from class 2 to class 1;
    # class 2 is argmax-ruled, so it keeps the model's own pixels (2 and 3).
    probs = np.array(
        [[[0.8, 0.1, 0.1, 0.2, 0.1]], [[0.1, 0.8, 0.2, 0.5, 0.1]], [[0.1, 0.1, 0.7, 0.3, 0.8]]],
        dtype=np.float32,
    )[None]  # (1, 3, 1, 5)
    own = np.array([[[0, 1, 2, 2, 1]]])  # (1, 1, 5): pixels 3 and 4 differ from probs' argmax
    guard = DecisionGuard(rules=("rma", "argmax", "argmax"), pruning=(0.5,) * 3)
    out, _ = guarded_decision(probs, guard, model_decision=own)
    np.testing.assert_array_equal(out, own)
    out, _ = guarded_decision(probs, guard)  # without it: the calibrated argmax
    np.testing.assert_array_equal(out, argmax_decision(probs))
    with pytest.raises(ValueError, match="shape"):
        guarded_decision(probs, guard, model_decision=own[:, :, :4])


def test_guard_tally_scores_the_model_decision_as_argmax():
    p = _softmax(_random_logits(21, shape=(3, 30, 30), spread=1.5)).astype(np.float32)
    truth = np.random.default_rng(21).integers(0, 3, size=(30, 30))
    own = np.random.default_rng(22).integers(0, 3, size=(30, 30)).astype(np.uint8)
    tally = GuardTally(3)
    tally.add(p, truth, model_decision=own)
    for c in range(3):
        assert tally.argmax[c] == pytest.approx(_dice_by_counting(own, truth, c))


def _vector_guarded_model(base: LoadedModel) -> LoadedModel:
    # The lesion-like class 1 is shrunk by a bias: its calibrated argmax loses pixels that the
    # guard's argmax rule must keep.
    calibration = ProbabilityCalibration(
        temperature=1.0,
        class_scales=(1.0, 1.0),
        class_biases=(0.0, -2.0),
        guard=DecisionGuard(rules=("rma", "argmax"), pruning=(0.5, 0.5)),
    )
    return LoadedModel(base.module, base.spec.with_changes(calibration=calibration.to_dict()))


def test_vector_scaled_guarded_model_keeps_the_uncalibrated_argmax_for_argmax_classes():
    base = tiny_unet()
    image, _ = _tiny_image()
    raw = predict(base, image, device="cpu")
    own = argmax_decision(raw[None])[0]
    model = _vector_guarded_model(base)
    calibrated_argmax = segment_image(model, image, decision="argmax", device="cpu")
    assert (calibrated_argmax.mask != own).any()  # the bias really moved the argmax
    assert calibrated_argmax.model_decision is not None  # kept for a later guarded decision

    result = segment_image(model, image, decision="guarded", device="cpu")
    np.testing.assert_array_equal(result.mask, own)
    np.testing.assert_array_equal(result.model_decision, own)
    np.testing.assert_allclose(result.probs, calibrated_argmax.probs)  # calibrated probabilities

    # Deciding again from kept outputs: with the model's decision no network run; without it
    # the network runs once more for it, and the mask is the same either way.
    again = segment_image(
        model,
        image,
        decision="guarded",
        device="cpu",
        probs=result.probs,
        model_decision=result.model_decision,
    )
    assert "inference" not in again.timings
    np.testing.assert_array_equal(again.mask, own)
    rerun = segment_image(model, image, decision="guarded", device="cpu", probs=result.probs)
    assert "inference" in rerun.timings
    np.testing.assert_array_equal(rerun.mask, own)


def test_temperature_scaled_model_keeps_no_separate_model_decision():
    base = tiny_unet()
    image, _ = _tiny_image()
    guard = DecisionGuard(rules=("rma", "argmax"), pruning=(0.5, 0.5))
    model = LoadedModel(base.module, _calibrated_spec(base.spec, 0.5, guard))
    result = segment_image(model, image, decision="guarded", device="cpu")
    assert result.model_decision is None  # a temperature never moves the argmax


def test_vector_fit_scores_the_guard_argmax_on_the_uncalibrated_probabilities():
    rng = np.random.default_rng(5)
    cases = []
    for seed in range(2):
        z = _random_logits(30 + seed, shape=(3, 30, 30), spread=2.0)
        truth = rng.random((30, 30))[None] > _softmax(3 * z + [[[1.0]], [[0]], [[-1.0]]]).cumsum(0)
        cases.append((_softmax(z).astype(np.float32), truth.sum(0)))
    fit = fit_from_probabilities(
        cases, class_names=["a", "b", "c"], activation="softmax", vector=True
    )
    expected = np.mean(
        [
            [_dice_by_counting(argmax_decision(p[None])[0], t, c) for c in range(3)]
            for p, t in cases
        ],
        axis=0,
    )
    np.testing.assert_allclose(fit.guard_scores["argmax"], expected)
    moved = [
        argmax_decision(calibrate_probabilities(p.copy(), fit.calibration, "softmax")[None])[0]
        for p, _ in cases
    ]
    assert any(
        (m != argmax_decision(p[None])[0]).any() for m, (p, _) in zip(moved, cases, strict=True)
    )


# --- cases unlike the calibration cases -----------------------------------------------------


def test_guard_for_case_puts_a_class_far_rarer_than_in_calibration_on_argmax():
    from core.probability_calibration import RARER_THAN_CALIBRATION, guard_for_case

    guard = DecisionGuard(
        rules=("rma", "rma", "rma", "argmax"),
        pruning=(0.5,) * 4,
        min_fraction=(0.5, 0.1, 0.01, 0.2),
    )
    labels = np.zeros(10_000, dtype=np.uint8)
    labels[:2000] = 1  # 0.2: above its smallest calibration share
    labels[2000:2009] = 2  # 0.0009: under a tenth of 0.01
    # class 3 is absent but already on argmax: nothing to change
    out, notes = guard_for_case(guard, labels, class_names=["bg", "liver", "lesion", "cyst"])
    assert out.rules == ("rma", "rma", "argmax", "argmax")
    assert out.pruning == guard.pruning and out.min_fraction == guard.min_fraction
    assert len(notes) == 1 and notes[0].startswith("lesion takes 0.0009")
    labels[2000:2010] = 2  # exactly a tenth: still inside
    assert RARER_THAN_CALIBRATION == pytest.approx(0.1)
    assert guard_for_case(guard, labels)[0] is guard
    old_guard = DecisionGuard(rules=guard.rules, pruning=guard.pruning)  # no shares recorded
    assert guard_for_case(old_guard, labels[:1])[0] is old_guard


def test_guard_tally_records_each_class_smallest_share_of_the_model_argmax():
    tally = GuardTally(3)
    shares = []
    for seed in range(3):
        p = _softmax(_random_logits(40 + seed, shape=(3, 20, 20), spread=1.5)).astype(np.float32)
        truth = np.random.default_rng(seed).integers(0, 3, size=(20, 20))
        tally.add(p, truth)
        labels = argmax_decision(p[None])[0]
        shares.append([(labels == c).sum() / labels.size for c in range(3)])
    np.testing.assert_allclose(tally.learn().min_fraction, np.min(shares, axis=0))


def test_guarded_segmentation_keeps_argmax_for_a_class_rarer_than_in_calibration():
    base = tiny_unet()
    image, _ = _tiny_image()
    # Class 1 is sure in 10 voxels and has a tail of 0.3 everywhere else.
    probs = np.full((2, *image.shape3), 0.3, dtype=np.float32)
    probs[1].reshape(-1)[:10] = 0.95
    probs[0] = 1 - probs[1]
    # Calibration cases where class 1 took at least half of the pixels: far from this case.
    guard = DecisionGuard(rules=("rma", "rma"), pruning=(0.5, 0.5), min_fraction=(0.05, 0.5))
    model = LoadedModel(base.module, _calibrated_spec(base.spec, 1.0, guard))
    result = segment_image(model, image, decision="guarded", device="cpu", probs=probs)
    np.testing.assert_array_equal(result.mask.reshape(-1) == 1, np.arange(probs[0].size) < 10)
    assert [row.rule for row in result.rows] == ["rma", "argmax"]
    name = model.spec.class_names[1]
    assert any(w.startswith(f"{name} takes") and "calibration" in w for w in result.warnings)
    # Learned on cases where the class was as rare: RMA's mask, no warning.
    inside = DecisionGuard(("rma", "rma"), (0.5, 0.5), "dice", (0.05, 0.001))
    model = LoadedModel(base.module, _calibrated_spec(base.spec, 1.0, inside))
    kept = segment_image(model, image, decision="guarded", device="cpu", probs=probs)
    rma = segment_image(model, image, decision="rma-dice", device="cpu", probs=probs)
    np.testing.assert_array_equal(kept.mask, rma.mask)
    assert [row.rule for row in kept.rows] == ["rma", "rma"] and not kept.warnings


def test_vector_scaled_guard_falls_back_to_the_uncalibrated_argmax_even_with_rma_rules():
    from core.probability_calibration import needs_model_decision

    base = tiny_unet()
    image, _ = _tiny_image()
    # Every class learned on RMA; class 1 took at least half of each calibration case.
    calibration = ProbabilityCalibration(
        class_scales=(1.0, 1.0),
        class_biases=(0.0, -2.0),
        guard=DecisionGuard(rules=("rma", "rma"), pruning=(0.5, 0.5), min_fraction=(0.0, 0.5)),
    )
    assert needs_model_decision(calibration)  # a class may still fall back to argmax
    model = LoadedModel(base.module, base.spec.with_changes(calibration=calibration.to_dict()))
    first = segment_image(model, image, decision="rma-dice", device="cpu")
    raw = predict(base, image, device="cpu")
    np.testing.assert_array_equal(first.model_decision, argmax_decision(raw[None])[0])
    # A case where the model's own argmax gives class 1 a few voxels: the fallback keeps those.
    own = np.zeros(image.shape3, dtype=np.uint8)
    own[:2, :2, :2] = 1
    result = segment_image(
        model, image, decision="guarded", device="cpu", probs=first.probs, model_decision=own
    )
    assert [row.rule for row in result.rows] == ["rma", "argmax"]
    np.testing.assert_array_equal(result.mask, own)

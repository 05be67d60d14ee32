"""core.pipeline: decisions and readouts checked against direct computations."""

import numpy as np
import pytest

from core.jobs import CancelToken, JobCancelled
from core.pipeline import DECISIONS, SegmentationResult, decide, segment_image, summarize_mask
from core.seg import expected_dice, rankseg_rma


def softmax_probs(seed=0, shape=(3, 10, 9, 4)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape) * 2
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def test_argmax_rule_equals_numpy_argmax():
    probs = softmax_probs()
    mask, thresholds = decide(probs, "argmax")
    assert thresholds is None
    np.testing.assert_array_equal(mask, probs.argmax(0))


def test_threshold_rule_on_sigmoid_outputs_collapses_with_highest_label_winning():
    probs = np.zeros((3, 2, 2, 1), np.float32)
    probs[1, 0, 0] = 0.9  # class 1 only
    probs[1, 0, 1] = probs[2, 0, 1] = 0.8  # both: class 2 wins
    probs[2, 1, 0] = 0.4  # below 0.5: nothing
    mask, _ = decide(probs, "threshold", multilabel=True, threshold=0.5)
    assert mask[..., 0].tolist() == [[1, 2], [0, 0]]


def test_rma_per_volume_matches_direct_call_and_reports_thresholds():
    probs = softmax_probs(1)
    mask, thresholds = decide(probs, "rma-dice", pruning_prob=0.1)
    direct, info = rankseg_rma(probs[None], metric="dice", pruning_prob=0.1, return_info=True)
    np.testing.assert_array_equal(mask, direct[0])
    np.testing.assert_allclose(thresholds, np.asarray(info.threshold)[0])


def test_rma_per_slice_optimises_each_slice_on_its_own():
    probs = softmax_probs(2)
    mask, _ = decide(probs, "rma-iou", per_slice=True, pruning_prob=0.1)
    for k in range(probs.shape[-1]):
        one = rankseg_rma(np.ascontiguousarray(probs[..., k])[None], metric="iou", pruning_prob=0.1)
        np.testing.assert_array_equal(mask[..., k], one[0])


def test_unknown_decision_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown decision rule 'max'"):
        decide(softmax_probs(), "max")
    assert "rma-dice" in DECISIONS


def test_summary_counts_volumes_and_scores_against_hand_computation():
    probs = softmax_probs(3, shape=(3, 4, 4, 2))
    mask = probs.argmax(0)
    gt = mask.copy()
    gt[0, 0, 0] = (gt[0, 0, 0] + 1) % 3  # one voxel disagrees
    spacing = (0.5, 0.5, 2.0)  # 0.5 mm^3 per voxel
    rows = summarize_mask(
        mask, probs, spacing=spacing, class_names=["bg", "a", "b"], ground_truth=gt
    )
    for row in rows:
        c = row.label
        voxels = int((mask == c).sum())
        assert row.voxels == voxels
        assert row.volume_ml == pytest.approx(voxels * 0.5 / 1000)
        tp = int(((mask == c) & (gt == c)).sum())
        fp = int(((mask == c) & (gt != c)).sum())
        fn = int(((mask != c) & (gt == c)).sum())
        assert row.dice == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert row.iou == pytest.approx(tp / (tp + fp + fn))
        assert 0.0 <= row.expected_dice <= 1.0
    assert [r.name for r in rows] == ["bg", "a", "b"]


def test_summary_refuses_ground_truth_of_another_shape():
    probs = softmax_probs(4, shape=(2, 3, 3, 1))
    with pytest.raises(ValueError, match=r"ground truth shape \(3, 3, 2\)"):
        summarize_mask(
            probs.argmax(0),
            probs,
            spacing=(1, 1, 1),
            class_names=["a", "b"],
            ground_truth=np.zeros((3, 3, 2), int),
        )


def test_summary_reports_intensity_mean_and_sd_per_class():
    probs = softmax_probs(5, shape=(3, 5, 4, 3))
    mask = probs.argmax(0)
    image = np.random.default_rng(5).normal(40, 20, size=mask.shape).astype(np.int16)
    rows = summarize_mask(
        mask, probs, spacing=(1, 1, 1), class_names=["a", "b", "c"], intensities=image
    )
    for row in rows:
        inside = image[mask == row.label].astype(float)
        if inside.size:
            assert row.mean_intensity == pytest.approx(inside.mean())
            assert row.sd_intensity == pytest.approx(inside.std())
        else:
            assert row.mean_intensity is None and row.sd_intensity is None


def test_intensity_statistics_stay_exact_across_chunks_and_far_from_the_image_mean():
    # 1.3 M voxels (two chunks); classes at -1000 and +3000 HU with a small spread and a
    # constant class: a plain sum-of-squares formula around zero would lose the small SDs.
    rng = np.random.default_rng(0)
    shape = (128, 128, 80)
    mask = rng.integers(0, 3, shape).astype(np.uint8)
    centres = np.array([-1000.0, 3000.0, 42.0])
    spreads = np.array([0.5, 2.0, 0.0])
    image = (centres[mask] + spreads[mask] * rng.standard_normal(shape)).astype(np.float32)
    probs = np.stack([(mask == c) * 0.7 + 0.1 for c in range(3)]).astype(np.float32)
    rows = summarize_mask(
        mask, probs, spacing=(1, 1, 1), class_names=["a", "b", "c"], intensities=image
    )
    for row in rows:
        inside = image[mask == row.label].astype(np.float64)
        assert row.mean_intensity == pytest.approx(inside.mean(), abs=1e-6)
        assert row.sd_intensity == pytest.approx(inside.std(), abs=1e-4)


def test_rule_label_names_every_setting_that_changes_the_mask():
    def label(decision, **settings):
        base = dict(pruning_prob=0.5, per_slice=False, cutoff=None)
        base.update(settings)
        return SegmentationResult(
            model_name="m",
            decision=decision,
            mask=np.zeros((1, 1, 1), np.uint8),
            probs=np.ones((1, 1, 1, 1), np.float32),
            rows=[],
            device="cpu",
            spacing=(1.0, 1.0, 1.0),
            **base,
        ).rule_label

    assert label("argmax") == "argmax"
    assert label("argmax", pruning_prob=0.2, per_slice=True) == "argmax"  # no effect on argmax
    assert label("threshold", cutoff=0.35) == "threshold 0.35"
    assert label("rma-dice") == "rma-dice"
    assert label("rma-iou", pruning_prob=0.3) == "rma-iou, pruning 0.3"
    assert label("rma-dice", pruning_prob=0.0, per_slice=True) == "rma-dice, pruning 0, per slice"


class _CancelAfter(CancelToken):
    """A token that cancels itself at its ``n``-th check and counts the checks after that."""

    def __init__(self, n):
        super().__init__()
        self.checks = 0
        self.after = 0
        self._n = n

    def raise_if_cancelled(self):
        self.checks += 1
        if self.checks == self._n:
            self.cancel()
        if self.cancelled:
            self.after += 1
        super().raise_if_cancelled()


@pytest.mark.parametrize("n", [1, 2])  # expected_dice: one chunk per pass here
def test_rma_and_expected_dice_stop_at_the_next_chunk_once_cancelled(n):
    probs = softmax_probs(1, shape=(3, 64, 64, 16))[None]  # 196 608 elements
    token = _CancelAfter(n)
    with pytest.raises(JobCancelled):
        rankseg_rma(probs, chunk_elements=4096, cancel=token)
    assert token.checks == n and token.after == 1  # stopped at the check that saw it
    token = _CancelAfter(n)
    with pytest.raises(JobCancelled):
        expected_dice(probs, probs.argmax(1), cancel=token)
    assert token.checks == n and token.after == 1
    # Uncancelled, the token changes nothing.
    np.testing.assert_array_equal(
        rankseg_rma(probs, chunk_elements=4096, cancel=CancelToken()),
        rankseg_rma(probs, chunk_elements=4096),
    )


def test_segment_image_cancels_during_the_decision_and_the_readouts():
    from core.demo import demo_paths
    from core.io import read_image
    from core.models import load_model, predict

    model = load_model(demo_paths().model)
    image = read_image(demo_paths().image)
    probs = predict(model, image, device="cpu")
    for stage in ("decision", "metrics"):
        token = CancelToken()

        def on_progress(progress, stage=stage, token=token):
            if progress.stage == stage:
                token.cancel()

        with pytest.raises(JobCancelled):
            segment_image(
                model,
                image,
                decision="rma-dice",
                probs=probs,
                on_progress=on_progress,
                cancel=token,
            )


def test_summary_accepts_a_float_ground_truth_like_an_integer_one():
    probs = softmax_probs(4)
    mask = probs.argmax(0)
    truth = np.roll(mask, 1, axis=0)
    as_int = summarize_mask(
        mask, probs, spacing=(1, 1, 1), class_names=["a", "b", "c"], ground_truth=truth
    )
    as_float = summarize_mask(
        mask,
        probs,
        spacing=(1, 1, 1),
        class_names=["a", "b", "c"],
        ground_truth=truth.astype(np.float32),  # labels stored as floats, as many NIfTIs are
    )
    assert [r.dice for r in as_float] == [r.dice for r in as_int]
    assert [r.iou for r in as_float] == [r.iou for r in as_int]


def test_summarize_mask_is_the_same_whatever_the_memory_order():
    # The readouts walk volumes slab by slab in the mask's memory order; a mask, a ground truth
    # and an image in different orders (torch's C, nibabel's F) must give the same numbers.
    from core.pipeline import summarize_mask

    rng = np.random.default_rng(3)
    shape = (37, 29, 23)
    probs = rng.dirichlet(np.ones(3), size=shape).transpose(3, 0, 1, 2).astype(np.float32)
    mask = probs.argmax(0).astype(np.uint8)
    truth = rng.integers(0, 3, shape).astype(np.uint8)
    image = rng.normal(40, 100, shape).astype(np.int16)
    names = ["bg", "a", "b"]

    def rows(m, t, i):
        return summarize_mask(
            m, probs, spacing=(0.8, 0.8, 2.5), class_names=names, ground_truth=t, intensities=i
        )

    reference = rows(mask, truth, image)
    mixed = rows(np.asfortranarray(mask), truth, np.asfortranarray(image))
    for a, b in zip(reference, mixed, strict=True):
        assert a.voxels == b.voxels and a.dice == b.dice and a.iou == b.iou
        assert a.volume_ml == pytest.approx(b.volume_ml)
        assert a.mean_intensity == pytest.approx(b.mean_intensity)
        assert a.sd_intensity == pytest.approx(b.sd_intensity)
    assert sum(r.voxels for r in reference) == mask.size

"""Overlap and volume metrics on hand-worked cases."""

import numpy as np
import pytest
import torch

from core.metrics import confusion_counts, dice_score, iou_score, scores_from_counts, volume_ml


def test_hand_worked_2x2():
    # pred  [[1, 0],   target [[1, 1],
    #        [0, 0]]          [0, 0]]
    # class 1: TP 1, FP 0, FN 1 -> Dice 2/3, IoU 1/2; class 0: TP 2, FP 1, FN 0 -> 4/5, 2/3
    pred = np.array([[[1, 0], [0, 0]]])
    target = np.array([[[1, 1], [0, 0]]])
    counts = confusion_counts(pred, target, num_classes=2)
    np.testing.assert_array_equal(counts.tp, [[2, 1]])
    np.testing.assert_array_equal(counts.fp, [[1, 0]])
    np.testing.assert_array_equal(counts.fn, [[0, 1]])
    np.testing.assert_allclose(dice_score(pred, target, num_classes=2), [[4 / 5, 2 / 3]])
    np.testing.assert_allclose(iou_score(pred, target, num_classes=2), [[2 / 3, 1 / 2]])


def test_hand_worked_3x3_with_ignore_index_and_empty_classes():
    pred = torch.tensor([[[0, 1, 1], [0, 1, 2], [0, 0, 2]]])
    target = torch.tensor([[[0, 1, 255], [0, 1, 1], [0, 255, 2]]])
    # ignoring 255 drops (0,2) and (2,1). class 0: TP 3 -> Dice 1. class 1: TP 2, FN 1 (pixel
    # (1,2) predicted 2) -> Dice 4/5, IoU 2/3. class 2: TP 1, FP 1 -> Dice 2/3, IoU 1/2.
    # class 3 is absent from both: the `empty` convention decides.
    dice = dice_score(pred, target, num_classes=4, ignore_index=255)
    assert isinstance(dice, torch.Tensor)
    np.testing.assert_allclose(dice.numpy(), [[1.0, 4 / 5, 2 / 3, 1.0]])
    iou = iou_score(pred, target, num_classes=4, ignore_index=255, empty=float("nan"))
    np.testing.assert_allclose(iou.numpy(), [[1.0, 2 / 3, 1 / 2, np.nan]])
    strict = dice_score(pred, target, num_classes=4, ignore_index=255, empty=0.0)
    assert strict[0, 3] == 0.0


def test_empty_prediction_against_nonempty_target_scores_zero_and_bool_masks_work():
    pred = np.zeros((1, 1, 2, 2), bool)
    target = np.array([[[[True, False], [False, False]]]])
    assert dice_score(pred, target, num_classes=1)[0, 0] == 0.0
    assert iou_score(target, target, num_classes=1)[0, 0] == 1.0


def test_volume_ml():
    mask = np.zeros((4, 4, 2), bool)
    mask[:2, :2, 0] = True  # 4 voxels of 2 x 0.5 x 5 mm = 5 mm^3 each
    assert volume_ml(mask, (2.0, 0.5, 5.0)) == pytest.approx(0.02)
    labels = np.zeros((2, 2, 1), np.int64)
    labels[0, 0, 0] = 2
    labels[1, 1, 0] = 255
    np.testing.assert_allclose(volume_ml(labels, (10, 10, 10), num_classes=3), [2.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="spacing"):
        volume_ml(mask, (1.0, 1.0))


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="shape"):
        dice_score(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3), int), num_classes=2)


def _loop_counts(pred, target, num_classes, ignore_index=None):
    """Confusion counts by a plain loop over pixels: the reference for the vectorised code."""
    tp = np.zeros(num_classes, int)
    fp = np.zeros(num_classes, int)
    fn = np.zeros(num_classes, int)
    for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist(), strict=True):
        if ignore_index is not None and t == ignore_index:
            continue
        if p == t and 0 <= p < num_classes:
            tp[p] += 1
            continue
        if 0 <= p < num_classes:
            fp[p] += 1
        if 0 <= t < num_classes:
            fn[t] += 1
    return tp, fp, fn


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
def test_counts_match_a_pixel_loop_for_every_label_dtype(dtype):
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 6, (2, 7, 9)).astype(dtype)  # 4 and 5 are outside 4 classes
    target = rng.integers(0, 5, (2, 7, 9)).astype(dtype)
    target[0, :2] = 5  # ignored below
    counts = confusion_counts(pred, target, num_classes=4, ignore_index=5)
    for b in range(2):
        tp, fp, fn = _loop_counts(pred[b], target[b], 4, ignore_index=5)
        np.testing.assert_array_equal(counts.tp[b], tp)
        np.testing.assert_array_equal(counts.fp[b], fp)
        np.testing.assert_array_equal(counts.fn[b], fn)
    both = scores_from_counts(counts, metric="dice")
    np.testing.assert_array_equal(both, dice_score(pred, target, num_classes=4, ignore_index=5))
    with pytest.raises(ValueError, match="metric"):
        scores_from_counts(counts, metric="f1")


def test_int64_labels_beyond_int32_count_for_no_class():
    pred = np.array([[2**32 + 1, 1]], dtype=np.int64)  # would wrap to 1 in int32
    target = np.array([[1, 1]], dtype=np.int64)
    counts = confusion_counts(pred, target, num_classes=2)
    np.testing.assert_array_equal(counts.tp, [[0, 1]])
    np.testing.assert_array_equal(counts.fn, [[0, 1]])

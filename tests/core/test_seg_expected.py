"""expected_dice / expected_iou against exhaustive enumeration of every ground truth."""

import itertools

import numpy as np
import pytest
import torch

from core.seg import expected_dice, expected_iou


def enumerate_expectation(p, mask, empty=1.0):
    """Sum over all 2^d ground truths of P(Y) * metric(mask, Y)."""
    dice = iou = 0.0
    for bits in itertools.product([False, True], repeat=len(p)):
        y = np.array(bits)
        prob = np.prod(np.where(y, p, 1 - p))
        tp = (y & mask).sum()
        size = mask.sum() + y.sum()
        union = (y | mask).sum()
        dice += prob * (2 * tp / size if size else empty)
        iou += prob * (tp / union if union else empty)
    return dice, iou


def test_matches_enumeration_for_small_maps():
    rng = np.random.default_rng(0)
    for trial in range(40):
        d = int(rng.integers(1, 13))
        p = rng.random(d) ** rng.uniform(0.2, 4.0)
        if trial % 4 == 0:
            p[rng.integers(d)] = 1.0  # certain pixels are the numerically hard case
        if trial % 5 == 0:
            p[rng.integers(d)] = 0.0
        mask = rng.random(d) < rng.uniform(0.1, 0.9)
        ref_dice, ref_iou = enumerate_expectation(p, mask)
        got_dice = expected_dice(p[None, None], mask[None, None])[0, 0]
        got_iou = expected_iou(p[None, None], mask[None, None])[0, 0]
        assert got_dice == pytest.approx(ref_dice, abs=1e-10)
        assert got_iou == pytest.approx(ref_iou, abs=1e-10)


def test_label_map_ignore_mask_and_empty_convention():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=(2, 2, 3)).transpose(3, 0, 1, 2)[None]  # (1,3,2,2,3)
    labels = rng.integers(0, 3, size=(1, 2, 2, 3))
    ignore = rng.random((1, 2, 2, 3)) < 0.3
    got = expected_dice(torch.from_numpy(probs), torch.from_numpy(labels), ignore_mask=ignore)
    assert isinstance(got, torch.Tensor) and got.shape == (1, 3)
    valid = ~ignore[0].ravel()
    for c in range(3):
        p = probs[0, c].ravel()[valid]
        mask = (labels[0].ravel() == c)[valid]
        assert float(got[0, c]) == pytest.approx(enumerate_expectation(p, mask)[0], abs=1e-10)
    # Empty mask: the score is `empty` times the chance that the truth is empty too.
    p = np.array([0.2, 0.5])
    none = np.zeros((1, 1, 2), bool)
    assert expected_iou(p[None, None], none, empty=0.0)[0, 0] == 0.0
    assert expected_dice(p[None, None], none)[0, 0] == pytest.approx(0.8 * 0.5)


def test_large_map_stays_consistent_with_a_sampled_estimate():
    # d far beyond enumeration: the series/quadrature path against Monte Carlo (5 sigma).
    rng = np.random.default_rng(2)
    p = np.clip(rng.beta(0.3, 0.6, size=4000), 0, 1)
    mask = p > 0.4
    value = expected_dice(p[None, None], mask[None, None])[0, 0]
    y = rng.random((2000, p.size)) < p
    tp = (y & mask).sum(1)
    samples = 2 * tp / (mask.sum() + y.sum(1))
    assert abs(value - samples.mean()) < 5 * samples.std() / np.sqrt(len(samples)) + 1e-6


def test_mask_shape_is_checked():
    with pytest.raises(ValueError, match="mask"):
        expected_dice(np.full((1, 2, 3), 0.5), np.zeros((1, 3, 3), bool))


def direct_quadrature(p, mask):
    """E[Dice] by adaptive quadrature of the exact integrand, every pixel's factor exact.

    E[Dice] = int_0^inf exp(-(tau + 1) u) G(u) H(u) du with s = 1 - exp(-u),
    G = prod (1 - p_j s) and H = sum over the mask of 2 p_i / (1 - p_i s).
    """
    from scipy.integrate import quad

    tau = int(mask.sum())
    inside = p[mask]

    def integrand(u):
        s = -np.expm1(-u)
        log_g = np.log1p(-p * s).sum()
        h = (2 * inside / (1 - inside * s)).sum()
        return np.exp(log_g - (tau + 1) * u) * h

    upper = 80.0 / (tau + 1)
    value, _ = quad(integrand, 0, upper, epsabs=1e-14, epsrel=1e-12, limit=400)
    return value


@pytest.mark.parametrize("inside_size", [40, 3000, 30000])
def test_large_map_matches_a_direct_quadrature(inside_size):
    # Many tiny probabilities, a confident object and a soft band: the moments summed over all
    # pixels, the few gathered higher ones and the exact per-pixel factors all contribute.
    rng = np.random.default_rng(inside_size)
    tiny = 10.0 ** rng.uniform(-7, -3, 60000)
    band = rng.uniform(0.01, 0.6, inside_size // 4 + 5)
    confident = rng.uniform(0.8, 1.0, inside_size)
    p = np.concatenate([tiny, band, confident])
    mask = p > 0.3
    value = expected_dice(p[None, None], mask[None, None])[0, 0]
    assert value == pytest.approx(direct_quadrature(p, mask), rel=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int16, np.int64])
def test_label_maps_of_every_integer_dtype_give_the_same_expectation(dtype):
    # summarize_mask passes its uint8/uint16 label map as it is (no int64 copy of a volume).
    rng = np.random.default_rng(9)
    probs = rng.dirichlet(np.ones(3), size=(1, 6, 5)).transpose(0, 3, 1, 2)
    labels = probs.argmax(1)
    expected = expected_dice(probs, labels.astype(np.int64))
    np.testing.assert_array_equal(expected_dice(probs, labels.astype(dtype)), expected)

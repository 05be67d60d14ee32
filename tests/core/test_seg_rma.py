"""RankSEG-RMA checked against a sort-based search, brute force and a per-pixel oracle."""

import itertools

import numpy as np
import pytest
import torch

import core.seg.rma
from core.seg import RMAInfo, argmax_decision, rankseg_rma, threshold_decision


def rma_objective(p_selected_sum, count, mu, metric):
    if metric == "dice":
        return 2.0 * p_selected_sum / (count + mu + 1.0)
    den = count + mu - p_selected_sum
    return p_selected_sum / den if den > 0 else 0.0


def sort_reference(p, metric):
    """Top-tau set by sorting: the smallest tau maximising the RMA objective (tau = 0 scores 0)."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    cums = np.concatenate([[0.0], np.cumsum(p[order])])
    taus = np.arange(len(p) + 1)
    mu = p.sum()
    if metric == "dice":
        scores = 2 * cums / (taus + mu + 1)
    else:
        den = taus + mu - cums
        scores = np.where(den > 0, cums / np.where(den > 0, den, 1), 0.0)
    scores[0] = 0.0
    tau = int(np.argmax(scores))
    mask = np.zeros(len(p), bool)
    mask[order[:tau]] = True
    return mask, scores[tau]


def random_maps(rng, shape, kind):
    logits = rng.normal(size=shape) * rng.uniform(0.5, 4.0)
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("spatial", [(9, 7), (4, 5, 6)])
def test_multilabel_matches_sort_reference(metric, spatial):
    rng = np.random.default_rng(11)
    for trial in range(12):
        probs = random_maps(rng, (2, 3, *spatial), "sigmoid")
        ignore = rng.random((2, *spatial)) < 0.2 if trial % 2 else None
        pruning = [0.5, 0.1, 0.0][trial % 3]
        out, info = rankseg_rma(
            probs,
            metric=metric,
            multilabel=True,
            ignore_mask=ignore,
            pruning_prob=pruning,
            return_info=True,
        )
        assert out.dtype == bool and out.shape == probs.shape
        for b, c in itertools.product(range(2), range(3)):
            valid = np.ones(spatial, bool) if ignore is None else ~ignore[b]
            p = probs[b, c][valid]
            ref, best = sort_reference(p, metric)
            if p.max() <= pruning:
                ref[:] = False
            np.testing.assert_array_equal(out[b, c][valid], ref)
            assert not out[b, c][~valid].any()
            assert info.tau[b, c] == ref.sum()
            if ref.any():
                assert info.objective[b, c] == pytest.approx(best, rel=1e-12)
                # The mask is exactly the strict threshold set at t*.
                np.testing.assert_array_equal(ref, p > info.threshold[b, c])


@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_float32_and_float16_agree_with_reference_objective(metric):
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float16):
        probs = random_maps(rng, (1, 2, 30, 30), "sigmoid").astype(dtype)
        out = rankseg_rma(torch.from_numpy(probs), metric=metric, multilabel=True)
        assert isinstance(out, torch.Tensor)
        for c in range(2):
            p = probs[0, c].astype(np.float64).ravel()
            ref, best = sort_reference(p, metric)
            got = out[0, c].numpy().ravel()
            # Exact ties are common in float16: compare objectives, then masks off the ties.
            value = rma_objective(p[got].sum(), got.sum(), p.sum(), metric)
            assert value == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_brute_force_optimum_is_returned_top_tau_set(metric):
    rng = np.random.default_rng(3)
    for _ in range(25):
        d = int(rng.integers(1, 10))
        p = rng.random(d) ** rng.uniform(0.3, 3.0)
        mu = p.sum()
        best, best_masks = -1.0, []
        for bits in itertools.product([False, True], repeat=d):
            m = np.array(bits)
            value = rma_objective(p[m].sum(), m.sum(), mu, metric) if m.any() else 0.0
            if value > best + 1e-12:
                best, best_masks = value, [m]
            elif abs(value - best) <= 1e-12:
                best_masks.append(m)
        out = rankseg_rma(p[None, None], metric=metric, multilabel=True, pruning_prob=0.0)[0, 0]
        smallest = min(best_masks, key=lambda m: m.sum())
        np.testing.assert_array_equal(out, smallest)
        # The optimum is a top-tau set: every kept pixel beats every dropped one.
        if out.any() and (~out).any():
            assert p[out].min() > p[~out].max()


def oracle_labels(probs, metric, unassigned, pruning):
    """Per-pixel increment rule written from the objective's definition, pixel by pixel."""
    C, d = probs.shape
    masks = np.zeros((C, d), bool)
    active = probs.max(1) > pruning
    for c in range(C):
        if active[c]:
            masks[c] = sort_reference(probs[c], metric)[0]
    claims = masks.sum(0)
    unique = masks & (claims == 1)
    mu = probs.sum(1)
    n = unique.sum(1)
    m = (probs * unique).sum(1)
    labels = np.zeros(d, np.int64)
    eligible_unclaimed = active if active.any() else np.ones(C, bool)
    for i in range(d):
        if claims[i] == 0 and unassigned == "void":
            labels[i] = 255
            continue
        pool = masks[:, i] if claims[i] else eligible_unclaimed
        candidates = np.flatnonzero(pool)
        gains = []
        for c in candidates:
            before = rma_objective(m[c], n[c], mu[c], metric)
            after = rma_objective(m[c] + probs[c, i], n[c] + 1, mu[c], metric)
            gains.append(after - before)
        labels[i] = candidates[int(np.argmax(gains))]
    return labels


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("unassigned", ["best", "void"])
@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("scatter", [True, False])
def test_multiclass_matches_per_pixel_oracle(metric, unassigned, dense, scatter, monkeypatch):
    # Contested pixels are resolved densely or by gathering, by a cost model; unique-claim
    # sums use scatters or products by the number of classes: test every combination.
    monkeypatch.setattr(core.seg.rma, "_dense_is_cheaper", lambda pending, n: dense)
    monkeypatch.setattr(core.seg.rma, "_SCATTER_MIN_CLASSES", 0 if scatter else 10**6)
    rng = np.random.default_rng(7)
    for trial in range(8):
        spatial = (6, 7) if trial % 2 else (3, 4, 5)
        probs = random_maps(rng, (2, 4, *spatial), "softmax")
        pruning = [0.5, 0.2, 0.9, 0.0][trial % 4]
        ignore = rng.random((2, *spatial)) < 0.2 if trial >= 4 else None
        out = rankseg_rma(
            probs, metric=metric, unassigned=unassigned, pruning_prob=pruning, ignore_mask=ignore
        )
        assert out.dtype == np.int64 and out.shape == (2, *spatial)
        for b in range(2):
            valid = np.ones(spatial, bool) if ignore is None else ~ignore[b]
            expected = oracle_labels(probs[b][:, valid], metric, unassigned, pruning)
            np.testing.assert_array_equal(out[b][valid], expected)
            assert (out[b][~valid] == 255).all()


def test_multiclass_ignore_mask_and_class_subset(monkeypatch):
    rng = np.random.default_rng(2)
    probs = random_maps(rng, (1, 3, 8, 9), "softmax")
    ignore = rng.random((1, 8, 9)) < 0.25
    out = rankseg_rma(probs, ignore_mask=ignore, void_label=99)
    assert (out[ignore] == 99).all()
    # Ignored pixels take no part: the result on valid pixels equals a run on those pixels only.
    valid_probs = probs[0][:, ~ignore[0]][None, :, :]
    alone = rankseg_rma(valid_probs)
    alone_sub = rankseg_rma(valid_probs, classes=[1, 2], pruning_prob=0.0)
    np.testing.assert_array_equal(out[0][~ignore[0]], alone[0])
    # Leaving background (class 0) out: unclaimed pixels go to the argmax of the rest (class 0).
    sub = rankseg_rma(probs, classes=[1, 2], pruning_prob=0.0)
    for dense in (True, False):  # both ways of resolving contested pixels agree
        monkeypatch.setattr(core.seg.rma, "_dense_is_cheaper", lambda pending, n, d=dense: d)
        again = rankseg_rma(probs, classes=[1, 2], pruning_prob=0.0, ignore_mask=ignore)
        np.testing.assert_array_equal(again[0][~ignore[0]], np.asarray(alone_sub)[0])
    ml = rankseg_rma(probs[:, 1:], multilabel=True, pruning_prob=0.0)
    claimed = ml[0].any(0)
    assert (sub[0][~claimed] == 0).all()
    assert set(np.unique(sub[0][claimed])) <= {1, 2}


def test_info_fields_and_numpy_float16_gui_call():
    rng = np.random.default_rng(4)
    probs = random_maps(rng, (1, 3, 5, 6, 4), "softmax")[0].astype(np.float16)  # (C, I, J, K)
    labels, info = rankseg_rma(probs[None], metric="dice", pruning_prob=0.5, return_info=True)
    assert isinstance(info, RMAInfo) and labels.shape == (1, 5, 6, 4)
    for field in (info.threshold, info.tau, info.objective, info.expected, info.count):
        assert isinstance(field, np.ndarray) and field.shape == (1, 3)
    np.testing.assert_array_equal(info.count[0], np.bincount(labels.ravel(), minlength=3))
    assert ((info.expected >= 0) & (info.expected <= 1)).all()
    assert np.isnan(info.threshold[~info.active]).all()
    assert (info.threshold[info.active] < 0.5).all()


def test_rules_share_conventions():
    probs = np.array([[[[0.7, 0.2]], [[0.3, 0.8]]]])  # (1, 2, 1, 2)
    np.testing.assert_array_equal(argmax_decision(probs), [[[0, 1]]])
    np.testing.assert_array_equal(
        threshold_decision(probs, 0.5), [[[[True, False]], [[False, True]]]]
    )
    np.testing.assert_array_equal(threshold_decision(probs, 0.75, multilabel=False), [[[255, 1]]])
    ignore = np.array([[[True, False]]])
    np.testing.assert_array_equal(argmax_decision(probs, ignore_mask=ignore), [[[255, 1]]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(probs=np.full((1, 2, 3, 3), np.nan)), "NaN"),
        (dict(probs=np.full((1, 2, 3, 3), 1.5)), r"\[0, 1\]"),
        (dict(probs=np.full((2, 3), 0.5)), "dimension"),
        (dict(probs=np.full((1, 1, 3, 3), 0.5)), "multilabel=True"),
        (dict(probs=np.full((1, 2, 3, 3), 0.5), ignore_mask=np.zeros((1, 3, 4), bool)), "ignore"),
        (dict(probs=np.full((1, 2, 3, 3), 0.5), metric="f1"), "metric"),
        (dict(probs=np.full((1, 2, 3, 3), 0.5), classes=[5]), "classes"),
        (dict(probs=np.full((1, 2, 3, 3), 0.5), void_label=1), "void_label"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    probs = kwargs.pop("probs")
    with pytest.raises(ValueError, match=message):
        rankseg_rma(probs, **kwargs)


def test_chunked_path_gives_the_same_answer_and_torch_in_torch_out():
    rng = np.random.default_rng(9)
    probs = torch.from_numpy(random_maps(rng, (2, 3, 20, 20), "softmax")).float()
    whole = rankseg_rma(probs, metric="iou")
    tiny_chunks = rankseg_rma(probs, metric="iou", chunk_elements=7)
    assert torch.equal(whole, tiny_chunks)
    assert whole.dtype == torch.int64


def test_memmap_input_is_read_in_chunks(tmp_path):
    rng = np.random.default_rng(12)
    probs = random_maps(rng, (1, 3, 16, 16), "softmax").astype(np.float32)
    stored = np.lib.format.open_memmap(
        tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=probs.shape
    )
    stored[:] = probs
    stored.flush()
    mapped = np.load(tmp_path / "p.npy", mmap_mode="r")
    np.testing.assert_array_equal(rankseg_rma(mapped, chunk_elements=50), rankseg_rma(probs))


def test_all_classes_pruned_and_multilabel_class_subset():
    probs = np.full((1, 3, 2, 2), 1 / 3)
    # Every class is pruned at 0.5: 'best' still labels every pixel, 'void' abstains.
    assert (rankseg_rma(probs) >= 0).all() and (rankseg_rma(probs) < 3).all()
    assert (rankseg_rma(probs, unassigned="void") == 255).all()
    sig = np.array([[[[0.9, 0.3]], [[0.6, 0.4]]]])  # (1, 2, 1, 2)
    out = rankseg_rma(sig, multilabel=True, classes=[0], pruning_prob=0.0)
    # class 1 is not optimised: thresholded at 0.5
    np.testing.assert_array_equal(out[0, 1], [[True, False]])
    ref, _ = sort_reference(sig[0, 0].ravel(), "dice")
    np.testing.assert_array_equal(out[0, 0].ravel(), ref)


def test_pairs_that_converge_early_are_left_out_of_later_passes(monkeypatch):
    # Two-valued maps converge at once; random ones need more passes. Later passes then run
    # on the remaining (b, c) rows only, and every row must still match the sort reference.
    rng = np.random.default_rng(21)
    # 128 x 128 pixels: more than the warm-start sample, so the random rows need passes.
    probs = random_maps(rng, (2, 8, 128, 128), "sigmoid")
    probs[:, :6] = np.where(rng.random((2, 6, 128, 128)) < 0.3, 0.95, 0.02)
    calls = []
    original = core.seg.rma._sums_above

    def spy(source, thresholds, want_stats=False, rows=None, tally=None):
        calls.append(rows is not None)
        return original(source, thresholds, want_stats, rows, tally)

    monkeypatch.setattr(core.seg.rma, "_sums_above", spy)
    # A pass predicted to be the last one runs over every row (it writes the masks): never
    # predict here, so that the row-subset passes run.
    monkeypatch.setattr(core.seg.rma, "_SPECULATE_BELOW", -np.inf)
    out = rankseg_rma(probs, multilabel=True, metric="iou")
    assert any(calls), "the row-subset path was not exercised"
    for b, c in itertools.product(range(2), range(8)):
        ref, _ = sort_reference(probs[b, c].ravel(), "iou")
        np.testing.assert_array_equal(out[b, c].ravel(), ref)


def test_info_without_expected_keeps_every_other_field():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 3, 6, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    full_mask, full = rankseg_rma(probs, pruning_prob=0.2, return_info=True)
    fast_mask, fast = rankseg_rma(probs, pruning_prob=0.2, return_info=True, info_expected=False)
    np.testing.assert_array_equal(full_mask, fast_mask)
    np.testing.assert_array_equal(full.threshold, fast.threshold)
    np.testing.assert_array_equal(full.count, fast.count)
    assert np.isnan(fast.expected).all() and np.isfinite(full.expected).all()


@pytest.mark.parametrize("speculate", [True, False])
def test_claims_tallied_in_the_last_threshold_pass_or_after_it(speculate, monkeypatch):
    # The multiclass claims are tallied during the solver's last pass when it is predicted
    # to be the last, else in a pass of their own. Forcing the guess on every pass (so that
    # passes that are not the last refill the tally) or never must give the oracle's labels.
    monkeypatch.setattr(core.seg.rma, "_SPECULATE_BELOW", np.inf if speculate else -np.inf)
    own_passes = []
    original = core.seg.rma._ClaimTally.run

    def spy(self, source, t_cmp):
        own_passes.append(True)
        return original(self, source, t_cmp)

    monkeypatch.setattr(core.seg.rma._ClaimTally, "run", spy)
    rng = np.random.default_rng(31)
    # 100 x 100 pixels: more than the warm-start sample, so the solver needs several passes
    # (with every pass guessed last, the tally is filled and thrown away before the last).
    probs = random_maps(rng, (2, 4, 100, 100), "softmax")
    for metric in ("dice", "iou"):
        out = rankseg_rma(probs, metric=metric, pruning_prob=0.2, chunk_elements=5000)
        for b in range(2):
            expected = oracle_labels(probs[b].reshape(4, -1), metric, "best", 0.2)
            np.testing.assert_array_equal(out[b].ravel(), expected)
    assert own_passes == ([] if speculate else [True, True])
    # Multilabel: the masks are written by the guessed-last pass or by a pass of their own.
    sig = random_maps(rng, (1, 3, 100, 100), "sigmoid")
    masks = rankseg_rma(sig, metric="iou", multilabel=True, pruning_prob=0.0)
    for c in range(3):
        np.testing.assert_array_equal(
            masks[0, c].ravel(), sort_reference(sig[0, c].ravel(), "iou")[0]
        )


@pytest.mark.parametrize("classes", [256, 300])
def test_more_than_255_classes_work_with_the_default_void_label(classes):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, classes, 6, 5)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rankseg_rma(probs.astype(np.float32), pruning_prob=0.0)
    assert labels.shape == (1, 6, 5) and labels.max() < classes
    ignore = np.zeros((1, 6, 5), bool)
    ignore[0, 0, 0] = True
    voided = rankseg_rma(probs.astype(np.float32), pruning_prob=0.0, ignore_mask=ignore)
    assert voided[0, 0, 0] == classes  # the void label is no class index


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_multiclass_probabilities_that_do_not_sum_to_one_are_refused(scale):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=(8, 8)).transpose(2, 0, 1)[None] * scale
    with pytest.raises(ValueError, match="must sum to 1 over the classes"):
        rankseg_rma(np.clip(probs, 0, 1).astype(np.float32))
    # Sigmoid outputs need not sum to 1: multilabel takes them as they are.
    assert rankseg_rma(np.clip(probs, 0, 1), multilabel=True).shape == (1, 3, 8, 8)
    # float16 rounding of a real softmax stays within the tolerance.
    assert rankseg_rma((probs / scale).astype(np.float16)).shape == (1, 8, 8)

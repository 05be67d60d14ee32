"""RankSEG-RMA decisions in linear time: each class's mask is a threshold set found without sorting.

Under the reciprocal moment approximation the Dice objective of a top-tau set is
``f = 2 S / (tau + mu + 1)`` and the IoU objective ``g = S / (tau + mu - S)`` (S: sum of the
selected probabilities, mu: sum over the item). Both are ratios of set functions, so the
optimum is found by Dinkelbach's iteration: with the current ratio the best set is the threshold
set ``{p > t}`` (t = f/2 for Dice, g/(1+g) for IoU), whose ratio is at least as large. Each step
is one O(d) pass; the iteration stops when the pixel count repeats, which certifies the global
optimum of the RMA objective (see docs/RANKSEG_IMPL.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core.seg.expected import expected_metric_of_masks
from core.seg.inputs import ProbabilityInput, check_ignore_mask, check_probabilities, round_down_to

__all__ = ["RMAInfo", "rankseg_rma", "DEFAULT_CHUNK_ELEMENTS"]

#: Elements (B * C * pixels) processed at once; bounds the temporaries of every pass.
DEFAULT_CHUNK_ELEMENTS = 1 << 20
#: Dinkelbach passes between convergence checks (one host-device sync per block on CUDA).
_PASSES_PER_CHECK = 2
_MAX_PASSES = 200


@dataclass
class RMAInfo:
    """Per (item, class) diagnostics of a RankSEG-RMA decision; every field is shaped (B, C).

    Arrays are numpy when the input was numpy, torch (CPU) otherwise.

    Attributes
    ----------
    threshold : float64
        t*: the class's RMA mask is ``{p > t*}``. NaN for classes that were pruned or not
        optimised.
    tau : int64
        Pixels in the class's RMA mask before the multiclass assignment (0 when pruned).
    objective : float64
        The RMA objective (Dice or IoU approximation) of that mask; NaN when not optimised.
    expected : float64
        Exact expected Dice or IoU (the ``metric``) of the *returned* mask of each class under
        the independence model, computed by ``expected_dice``/``expected_iou``.
    count : int64
        Pixels of each class in the returned decision.
    active : bool
        Class optimised and not pruned (max probability above ``pruning_prob``).
    metric : str
        "dice" or "iou".
    """

    threshold: torch.Tensor | np.ndarray
    tau: torch.Tensor | np.ndarray
    objective: torch.Tensor | np.ndarray
    expected: torch.Tensor | np.ndarray
    count: torch.Tensor | np.ndarray
    active: torch.Tensor | np.ndarray
    metric: str


def _chunks(info: ProbabilityInput, n_classes: int, chunk_elements: int):
    step = max(1, chunk_elements // max(1, info.batch * n_classes))
    for start in range(0, info.pixels, step):
        yield start, min(info.pixels, start + step)


class _Source:
    """Chunked access to the optimised classes' probabilities with ignored pixels zeroed."""

    def __init__(self, info, valid, opt_index, chunk_elements):
        self.info, self.valid, self.opt_index = info, valid, opt_index
        self.chunk_elements = chunk_elements

    def __iter__(self):
        n_opt = self.info.classes if self.opt_index is None else len(self.opt_index)
        for start, stop in _chunks(self.info, self.info.classes, self.chunk_elements):
            full = self.info.chunk(start, stop).to(self.info.device)
            part = full if self.opt_index is None else full.index_select(1, self.opt_index)
            if self.valid is not None:
                # Ignored pixels become probability 0: they never pass a threshold t >= 0
                # and add nothing to mu, i.e. they take no part in the objective.
                part = part * self.valid[:, None, start:stop]
            assert part.shape[1] == n_opt
            yield start, stop, full, part


def _sums_above(source: _Source, t_cmp: torch.Tensor, want_total: bool = False):
    """Per (b, c): sum and count of probabilities strictly above t, and optionally their total."""
    shape = t_cmp.shape[:2]
    device = source.info.device
    s = torch.zeros(shape, dtype=torch.float64, device=device)
    n = torch.zeros(shape, dtype=torch.int64, device=device)
    total = torch.zeros(shape, dtype=torch.float64, device=device) if want_total else None
    for _, _, _, p in source:
        # A float 0/1 mask multiplies and sums with vectorised kernels; bool sums and
        # torch.where are several times slower on the CPU. Chunk sums are exact integers for
        # the count (chunks hold far fewer than 2^24 pixels per row).
        above = (p > t_cmp).to(p.dtype)
        s += (above * p).sum(-1).to(torch.float64)
        n += above.sum(-1).to(torch.int64)
        if want_total:
            total += p.sum(-1).to(torch.float64)
    return s, n, total


def _ratio_threshold(s, n, mu, metric):
    """Threshold t = objective/2 (Dice) or g/(1+g) (IoU) of the set with sum s and count n."""
    nf = n.to(torch.float64)
    den = nf + mu + 1.0 if metric == "dice" else nf + mu
    return torch.where(den > 0, s / den.clamp_min(1e-300), torch.zeros_like(s))


def _objective(s, n, mu, metric):
    nf = n.to(torch.float64)
    if metric == "dice":
        return 2.0 * s / (nf + mu + 1.0)
    den = nf + mu - s
    return torch.where(den > 0, s / den.clamp_min(1e-300), torch.zeros_like(s))


def _solve_thresholds(source: _Source, metric: str, pruning_prob: float, work_dtype):
    """Dinkelbach iteration for every (b, c) at once. Returns t*, tau, S, mu, active."""
    device = source.info.device
    n_opt = source.info.classes if source.opt_index is None else len(source.opt_index)
    shape = (source.info.batch, n_opt)
    prune = torch.full(shape, float(pruning_prob), dtype=torch.float64, device=device)
    # First pass: the set {p > pruning_prob} is a valid starting set, and it is empty exactly
    # when the class is pruned, so pruning costs no extra pass.
    s, n, mu = _sums_above(source, round_down_to(prune, work_dtype)[..., None], want_total=True)
    active = n > 0
    inf = torch.full_like(s, np.inf)
    t = torch.where(active, _ratio_threshold(s, n, mu, metric), inf)
    n_prev = n
    for done in range(1, _MAX_PASSES + 1):
        s, n, _ = _sums_above(source, round_down_to(t, work_dtype)[..., None])
        t_next = torch.where(active, _ratio_threshold(s, n, mu, metric), inf)
        converged_now = n == n_prev
        if done % _PASSES_PER_CHECK == 0 and bool(converged_now.all()):
            break
        n_prev = n
        # Classes that have converged keep their threshold: their set is a fixed point.
        t = torch.where(converged_now, t, t_next)
    # At the fixed point {p > t} has ratio t_next and {p > t_next} is the same set.
    return t, n, s, mu, active


def _check_options(metric, multilabel, unassigned, void_label, classes, n_classes, pruning_prob):
    if metric not in ("dice", "iou"):
        raise ValueError(f"metric must be 'dice' or 'iou', got {metric!r}")
    if unassigned not in ("best", "void"):
        raise ValueError(f"unassigned must be 'best' or 'void', got {unassigned!r}")
    if not isinstance(pruning_prob, (int, float)) or not 0.0 <= float(pruning_prob) <= 1.0:
        raise ValueError(f"pruning_prob must be a number in [0, 1], got {pruning_prob!r}")
    if n_classes == 1 and not multilabel:
        raise ValueError(
            "probs has a single channel (C == 1): that is a sigmoid output and needs "
            "multilabel=True (or give background and foreground channels)"
        )
    if not multilabel and 0 <= int(void_label) < n_classes:
        raise ValueError(f"void_label {void_label} collides with a class index (C = {n_classes})")
    if classes is None:
        return None
    chosen = sorted({int(c) for c in classes})
    if not chosen:
        raise ValueError("classes must name at least one class to optimise")
    if chosen[0] < 0 or chosen[-1] >= n_classes:
        raise ValueError(f"classes {chosen} out of range for C = {n_classes}")
    return chosen


def rankseg_rma(
    probs: torch.Tensor | np.ndarray,
    *,
    metric: Literal["dice", "iou"] = "dice",
    multilabel: bool = False,
    pruning_prob: float = 0.5,
    ignore_mask: torch.Tensor | np.ndarray | None = None,
    classes: list[int] | tuple[int, ...] | None = None,
    unassigned: Literal["best", "void"] = "best",
    void_label: int = 255,
    return_info: bool = False,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
):
    """Decide segmentation masks that maximise the RMA approximation of expected Dice or IoU.

    Parameters
    ----------
    probs : torch.Tensor or numpy.ndarray, shape (B, C, *spatial)
        Probabilities (float16/32/64, any device). Each item b (an image or a whole volume) is
        optimised on its own. A numpy input (a ``numpy.memmap`` too: it is read chunk by
        chunk) gives numpy results.
    metric : {'dice', 'iou'}
        Objective to maximise.
    multilabel : bool
        True: independent masks per class (sigmoid outputs), result bool (B, C, *spatial).
        False: one label per pixel (softmax outputs), result int64 (B, *spatial). C == 1 needs
        True.
    pruning_prob : float
        Classes whose maximum probability (over valid pixels) is at or below this get no pixels.
    ignore_mask : bool array (B, *spatial), optional
        Pixels outside the valid region: excluded from the objective, returned as
        ``void_label`` (multiclass) or False (multilabel).
    classes : sequence of int, optional
        Classes that RMA optimises. Multiclass: pixels no optimised class takes go to the
        argmax of the remaining classes (``unassigned`` then only matters when no class
        remains). Multilabel: the remaining classes are thresholded at 0.5.
    unassigned : {'best', 'void'}
        Multiclass pixels claimed by no class: 'best' gives them the active class with the
        largest increment (every class when all are pruned), 'void' gives ``void_label``.
    void_label : int
        Label for ignored (and, with 'void', unassigned) pixels; must not be a class index.
    return_info : bool
        Also return an :class:`RMAInfo` with per (b, c) threshold, tau, objective, exact
        expected metric of the returned mask, final count and activity.
    chunk_elements : int
        Elements processed per pass step; bounds extra memory (about 10 bytes per element
        in temporaries, plus the output).

    Returns
    -------
    decision : bool (B, C, *spatial) or int64 (B, *spatial)
    info : RMAInfo, only when ``return_info``

    Notes
    -----
    Each class's RMA mask is ``{p > t*}``; among optimal sets it is the smallest (pixels with
    ``p == t*`` exactly do not change the objective and are left out), which is the package
    ``rankseg``'s choice of the smallest optimal tau. Pixels claimed by several classes go to the
    class with the largest RMA increment among those claiming it; equal increments go to the
    lowest class index (``argmax`` returns the first maximum). Cost: a few O(B C d) passes, no
    sort; the number of Dinkelbach passes is typically 3 to 6.

    Raises
    ------
    ValueError
        NaN or out-of-range probabilities, wrong rank, mismatched ignore mask, C == 1 without
        multilabel, bad option values.
    """
    info = check_probabilities(probs)
    chosen = _check_options(
        metric, multilabel, unassigned, void_label, classes, info.classes, pruning_prob
    )
    ignore = check_ignore_mask(ignore_mask, info)
    valid = None if ignore is None else ~ignore
    device, B, C, d = info.device, info.batch, info.classes, info.pixels
    opt_index = None
    rest_index = None
    if chosen is not None and len(chosen) < C:
        opt_index = torch.tensor(chosen, dtype=torch.long, device=device)
        rest_index = torch.tensor(
            [c for c in range(C) if c not in chosen], dtype=torch.long, device=device
        )
    with torch.no_grad():
        source = _Source(info, valid, opt_index, int(chunk_elements))
        t, tau, s, mu, active = _solve_thresholds(source, metric, pruning_prob, info.work_dtype)
        t_cmp = round_down_to(t, info.work_dtype)[..., None]
        if multilabel:
            out = torch.empty((B, C, d), dtype=torch.bool, device=device)
            for start, stop, full, p in source:
                masks = p > t_cmp
                if opt_index is None:
                    out[:, :, start:stop] = masks
                else:
                    rest = full.index_select(1, rest_index) > 0.5
                    if valid is not None:
                        rest &= valid[:, None, start:stop]
                    out[:, opt_index, start:stop] = masks
                    out[:, rest_index, start:stop] = rest
        else:
            out = _assign_labels(
                source, t_cmp, mu, active, metric, unassigned, void_label, rest_index, opt_index
            )
        result = out.reshape(B, C, *info.spatial) if multilabel else out.reshape(B, *info.spatial)
        if not return_info:
            return result.cpu().numpy() if info.as_numpy else result
        rma_info = _build_info(info, result, t, tau, s, mu, active, metric, opt_index, ignore_mask)
    return (result.cpu().numpy() if info.as_numpy else result), rma_info


def _increments(p, n_u, m_u, mu, metric):
    """RMA objective increase of adding each pixel to each class's uniquely claimed set."""
    if metric == "dice":
        d_c = n_u + mu + 1.0
        offset = (m_u / d_c)[..., None].to(p.dtype)
        scale = (2.0 / (d_c + 1.0))[..., None].to(p.dtype)
        # Factored as (p - m/D) * 2/(D+1): no cancellation between two nearly equal scores.
        return (p - offset).mul_(scale)
    den = n_u + mu - m_u
    g = torch.where(den > 0, m_u / den.clamp_min(1e-300), torch.zeros_like(m_u))
    g = g[..., None].to(p.dtype)
    den = den[..., None].to(p.dtype)
    remaining = 1.0 - p
    return (p - g * remaining).div_(den + remaining)


def _assign_labels(
    source, t_cmp, mu, active, metric, unassigned, void_label, rest_index, opt_index
):
    info, valid = source.info, source.valid
    device = info.device
    B, d = info.batch, info.pixels
    # Pass 1: size and mass of each class's uniquely claimed pixels.
    n_u = torch.zeros_like(mu)
    m_u = torch.zeros_like(mu)
    for _, _, _, p in source:
        claims = (p > t_cmp).to(p.dtype)
        unique = claims * (claims.sum(1, keepdim=True) == 1)
        n_u += unique.sum(-1).to(torch.float64)
        m_u += (unique * p).sum(-1).to(torch.float64)
    # Pixels nobody claims: active classes compete; every class does when all are pruned.
    fallback = active | ~active.any(1, keepdim=True)
    out = torch.empty((B, d), dtype=torch.int64, device=device)
    for start, stop, full, p in source:
        claims = p > t_cmp
        claimed = claims.any(1)
        eligible = torch.where(claimed[:, None], claims, fallback[..., None])
        score = _increments(p, n_u, m_u, mu, metric).masked_fill_(~eligible, -np.inf)
        # max(dim) returns the first maximum like argmax, and is much faster on the CPU.
        labels = score.max(1).indices
        if opt_index is not None:
            labels = opt_index[labels]
            rest_best = rest_index[full.index_select(1, rest_index).argmax(1)]
            labels = torch.where(claimed, labels, rest_best)
        elif unassigned == "void":
            labels.masked_fill_(~claimed, int(void_label))
        if valid is not None:
            labels.masked_fill_(~valid[:, start:stop], int(void_label))
        out[:, start:stop] = labels
    return out


def _build_info(info, result, t, tau, s, mu, active, metric, opt_index, ignore_mask):
    B, C = info.batch, info.classes
    threshold = torch.full((B, C), np.nan, dtype=torch.float64, device=info.device)
    objective = torch.full_like(threshold, np.nan)
    tau_all = torch.zeros((B, C), dtype=torch.int64, device=info.device)
    active_all = torch.zeros((B, C), dtype=torch.bool, device=info.device)
    cols = slice(None) if opt_index is None else opt_index
    threshold[:, cols] = torch.where(active, t, torch.full_like(t, np.nan))
    objective[:, cols] = _objective(s, tau, mu, metric)
    tau_all[:, cols] = tau
    active_all[:, cols] = active
    if result.dtype == torch.bool:
        count = result.reshape(B, C, -1).sum(-1)
    else:
        labels = result.reshape(B, -1)
        # Labels outside [0, C) (void) land in an extra bin that is dropped.
        bins = torch.where((labels >= 0) & (labels < C), labels, torch.full_like(labels, C))
        count = torch.zeros((B, C + 1), dtype=torch.int64, device=labels.device)
        count = count.scatter_add_(1, bins, torch.ones_like(bins))[:, :C]
    expected = expected_metric_of_masks(
        info.flat.reshape(B, C, *info.spatial),
        result,
        metric=metric,
        ignore_mask=ignore_mask,
        as_torch=True,
    )
    fields = dict(
        threshold=threshold,
        tau=tau_all,
        objective=objective,
        expected=expected.to(info.device),
        count=count.to(torch.int64),
        active=active_all,
    )
    if info.as_numpy:
        fields = {k: v.cpu().numpy() for k, v in fields.items()}
    else:
        fields = {k: v.cpu() for k, v in fields.items()}
    return RMAInfo(metric=metric, **fields)

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

from core.jobs import CancelToken
from core.seg.expected import expected_metric_of_masks
from core.seg.inputs import (
    ProbabilityInput,
    check_ignore_mask,
    check_probabilities,
    check_sums_to_one,
    numpy_to_torch,
    round_down_to,
    void_label_for,
)

__all__ = ["RMAInfo", "rankseg_rma", "DEFAULT_CHUNK_ELEMENTS"]

#: Elements (B * C * pixels) processed at once on the CPU; bounds the temporaries of every pass
#: and keeps them cache-friendly.
DEFAULT_CHUNK_ELEMENTS = 1 << 20
#: On CUDA fewer, larger chunks keep kernel launches few.
_CUDA_CHUNK_ELEMENTS = 1 << 26
#: Dinkelbach passes between convergence checks (one host-device sync per block on CUDA).
_PASSES_PER_CHECK = 3
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
    """(start, stop) pixel ranges holding about ``chunk_elements`` values over all (b, c)."""
    step = max(1, chunk_elements // max(1, info.batch * n_classes))
    for start in range(0, info.pixels, step):
        yield start, min(info.pixels, start + step)


class _Scratch:
    """Temporaries reused from chunk to chunk, by name.

    A fresh tensor of a few MiB is new memory from the system on every chunk (page faults on
    first touch); on the CPU that cost as much as the arithmetic done in it (measured).
    """

    def __init__(self):
        self._store: dict[str, torch.Tensor] = {}

    def like(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous tensor with ``tensor``'s shape, dtype and device."""
        return self.empty(name, tuple(tensor.shape), tensor.dtype, tensor.device)

    def empty(self, name: str, shape: tuple[int, ...], dtype, device) -> torch.Tensor:
        numel = int(np.prod(shape))
        store = self._store.get(name)
        if store is None or store.numel() < numel or store.dtype != dtype:
            store = torch.empty(numel, dtype=dtype, device=device)
            self._store[name] = store
        return store[:numel].view(shape)


class _Source:
    """Chunked access to the optimised classes' probabilities with ignored pixels zeroed."""

    def __init__(self, info, valid, opt_index, chunk_elements, cancel=None):
        self.info, self.valid, self.opt_index = info, valid, opt_index
        self.chunk_elements = chunk_elements
        self.cancel = cancel
        # One set of chunk-sized temporaries for every pass of a call.
        self.scratch = _Scratch()

    def __iter__(self):
        for start, stop in _chunks(self.info, self.info.classes, self.chunk_elements):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()  # every pass is a loop over these chunks
            full = self.info.chunk(start, stop).to(self.info.device)
            part = full if self.opt_index is None else full.index_select(1, self.opt_index)
            if self.valid is not None:
                # Ignored pixels become probability 0: they never pass a threshold t >= 0
                # and add nothing to mu, i.e. they take no part in the objective.
                part = part * self.valid[:, None, start:stop]
            yield start, stop, full, part


def _sums_above(
    source: _Source,
    thresholds: list[torch.Tensor],
    want_stats: bool = False,
    rows: torch.Tensor | None = None,
    tally: _ClaimTally | _MaskTally | None = None,
):
    """Per (b, c) and per threshold t: sum and count of probabilities strictly above t.

    With ``want_stats`` also the total and the maximum per (b, c). Returns
    ``(sums, counts, total, peak)``; sums and counts are lists matching ``thresholds``.
    With ``rows`` (indices into the flattened (b, c) pairs) only those pairs are computed
    and the results are 1-D, one value per listed row; ``thresholds`` are then (R, 1).
    With ``tally`` (one threshold, all rows) the same comparisons also feed the multiclass
    claim tally or the multilabel masks (:class:`_ClaimTally`, :class:`_MaskTally`).
    """
    shape = thresholds[0].shape[:2] if rows is None else thresholds[0].shape[:1]
    device = source.info.device
    sums = [torch.zeros(shape, dtype=torch.float64, device=device) for _ in thresholds]
    counts = [torch.zeros(shape, dtype=torch.float64, device=device) for _ in thresholds]
    total = torch.zeros(shape, dtype=torch.float64, device=device) if want_stats else None
    peak = torch.zeros(shape, dtype=source.info.work_dtype, device=device) if want_stats else None
    for start, stop, _, p in source:
        if rows is not None:
            # Only the (b, c) pairs still iterating: a copy of their rows of this chunk.
            p = p.reshape(-1, p.shape[-1]).index_select(0, rows)
        above = source.scratch.like("above", p)
        for t_cmp, s, n in zip(thresholds, sums, counts, strict=True):
            # The comparison is written straight into a reused float 0/1 buffer: float
            # products and sums run vectorised, while bool reductions and fresh allocations
            # are several times slower on the CPU. Counts stay exact (per-chunk sums of 0/1
            # stay far below 2^24).
            torch.gt(p, t_cmp, out=above)
            n += above.sum(-1)
            if tally is not None:
                tally.add_claims(start, stop, p, above)
            s += above.mul_(p).sum(-1)
            if tally is not None:
                tally.add_masses(above)
        if want_stats:
            total += p.sum(-1)
            peak = torch.maximum(peak, p.amax(-1))
    return sums, counts, total, peak


def _sample_estimate(source: _Source, metric: str, samples: int = 4096, steps: int = 5):
    """Warm-start threshold from a strided sample of the pixels (a fixed number of steps).

    Any starting threshold keeps the result exact (the first full pass turns it into a valid
    lower bound); a good one saves full passes over the data.
    """
    info = source.info
    stride = max(1, info.pixels // samples)
    part = info.flat[:, :, ::stride]
    if isinstance(part, np.ndarray):
        part = numpy_to_torch(part)
    q = part.to(device=info.device, dtype=torch.float64)
    if source.opt_index is not None:
        q = q.index_select(1, source.opt_index)
    if source.valid is not None:
        q = q * source.valid[:, None, ::stride]
    mu = q.sum(-1)
    extra = 1.0 / stride if metric == "dice" else 0.0  # the "+1" of Dice at sample scale
    t = torch.full_like(mu, 0.5)
    above = torch.empty_like(q)
    # Few, in-place operations: on small inputs the per-operation overhead is the cost.
    for _ in range(steps):
        torch.gt(q, t[..., None], out=above)
        den = above.sum(-1).add_(mu).add_(extra)
        # An empty set with no mass has den = 0 and s = 0: the clamp gives t = 0 there.
        t = above.mul_(q).sum(-1).div_(den.clamp_min_(1e-300))
    return t


def _ratio_threshold(s, n, mu, metric):
    """Threshold t = objective/2 (Dice) or g/(1+g) (IoU) of the set with sum s and count n."""
    den = n.to(torch.float64) + mu
    if metric == "dice":
        den += 1.0
    # den = 0 only for an empty set of an item with no mass, where s = 0: the clamp gives 0.
    return s / den.clamp_min_(1e-300)


def _objective(s, n, mu, metric):
    nf = n.to(torch.float64)
    if metric == "dice":
        return 2.0 * s / (nf + mu + 1.0)
    den = nf + mu - s
    return torch.where(den > 0, s / den.clamp_min(1e-300), torch.zeros_like(s))


def _solve_thresholds(
    source: _Source,
    metric: str,
    pruning_prob: float | torch.Tensor,
    work_dtype,
    tally: _ClaimTally | _MaskTally | None = None,
):
    """Dinkelbach iteration for every (b, c) at once. Returns t*, tau, S, mu, active, tallied.

    With a ``tally`` (CPU only) a pass that is predicted to be the last one (the one that
    only confirms that the counts repeat) also fills the tally; ``tallied`` says whether
    the pass that ended the iteration did, i.e. whether the tally holds the claims at t*.
    """
    t_start = _sample_estimate(source, metric)
    # First full pass: the sets {p > t_start} and {p > 0.5} become starting candidates (any
    # set's ratio is a lower bound of the optimum; the better one is kept). The sample can
    # miss a small faint structure, and 0.5 then is the safer start. The same pass gives mu
    # and the maxima for pruning.
    half = torch.full_like(t_start, 0.5)
    starts = [round_down_to(x, work_dtype)[..., None] for x in (t_start, half)]
    sums, counts, mu, peak = _sums_above(source, starts, True)
    active = peak.to(torch.float64) > pruning_prob
    ratios = [_ratio_threshold(s, n, mu, metric) for s, n in zip(sums, counts, strict=True)]
    use_half = ratios[1] > ratios[0]
    n = torch.where(active, torch.where(use_half, counts[1], counts[0]), 0.0)
    inf = torch.full_like(mu, np.inf)
    t = torch.where(active, torch.maximum(ratios[0], ratios[1]), inf)
    n_prev = n
    # Pixels per unit of threshold near the current one, from the last two passes (here the
    # two candidates): the expected count change of the next pass is this slope times the
    # threshold step. Only used to decide when the next pass is worth filling the tally.
    if tally is not None:
        t_used = torch.where(use_half, half, t_start).numpy()
        slope = _count_slope(counts[1] - counts[0], half - t_start)
    # On CUDA a convergence check is a host-device sync: check only every few passes there.
    per_check = 1 if source.info.device.type == "cpu" else _PASSES_PER_CHECK
    cpu = source.info.device.type == "cpu"
    s = torch.where(use_half, sums[1], sums[0])
    converged_now = torch.zeros_like(active)
    tallied = False
    for done in range(1, _MAX_PASSES + 1):
        t_cmp = round_down_to(t, work_dtype)[..., None]
        iterating = (~converged_now).reshape(-1).nonzero()[:, 0] if cpu else None
        tallied = tally is not None and _expected_changes(slope, t, t_used) < _SPECULATE_BELOW
        if tallied:
            # Probably the confirming pass: its comparisons are the tally's (same pixels,
            # same thresholds), so the claims pass after the solver is saved. Should the
            # counts still change, the tally is refilled by the next such pass or after.
            tally.reset()
            (s,), (n,), _, _ = _sums_above(source, [t_cmp], tally=tally)
        elif iterating is not None and 2 * iterating.numel() <= converged_now.numel():
            # On the CPU, once most (b, c) pairs have converged (their threshold is frozen
            # and their sums cannot change) only the others are passed over.
            (s_rows,), (n_rows,), _, _ = _sums_above(
                source, [t_cmp.reshape(-1, 1)[iterating]], rows=iterating
            )
            s, n = s.clone(), n.clone()
            s.view(-1)[iterating] = s_rows
            n.view(-1)[iterating] = n_rows
        else:
            (s,), (n,), _, _ = _sums_above(source, [t_cmp])
        t_next = torch.where(active, _ratio_threshold(s, n, mu, metric), inf)
        converged_now = n == n_prev
        if done % per_check == 0 and bool(converged_now.all()):
            break
        if tally is not None:
            slope = _count_slope(n - n_prev, t - torch.from_numpy(t_used))
            t_used = t.numpy()
        n_prev = n
        # Classes that have converged keep their threshold: their set is a fixed point.
        t = torch.where(converged_now, t, t_next)
    # At the fixed point {p > t} has ratio t_next and {p > t_next} is the same set.
    return t, n.to(torch.int64), s, mu, active, tallied


#: Fill the multiclass tally in a threshold pass when fewer pixels than this are expected to
#: change sets in it: a wrong guess costs the tally's work in one pass, a right one saves a
#: whole pass (about 2.5 to 1 on the benchmark inputs).
_SPECULATE_BELOW = 1.0


# The two helpers below run on the CPU only (with a tally) and on (B, C) values: numpy,
# whose per-call overhead on such tiny arrays is a fraction of torch's.


def _expected_changes(slope: np.ndarray, t: torch.Tensor, t_used: np.ndarray) -> float:
    """Pixels expected to change sets when the thresholds move from ``t_used`` to ``t``."""
    # Pruned classes sit at an infinite threshold and never change: inf - inf is left out
    # (without numpy's "invalid value" warning, which would reach a user's script).
    with np.errstate(invalid="ignore"):
        step = np.abs(t.numpy() - t_used)
    return float(np.sum(slope * step, where=np.isfinite(step)))


def _count_slope(count_change: torch.Tensor, threshold_change: torch.Tensor) -> np.ndarray:
    """|count change| / |threshold change| per (b, c); 0 where the threshold did not move."""
    moved = np.abs(threshold_change.numpy())
    moving = np.isfinite(moved) & (moved > 0)
    return np.divide(np.abs(count_change.numpy()), moved, out=np.zeros_like(moved), where=moving)


def _check_pruning(pruning_prob, n_classes: int) -> None:
    if isinstance(pruning_prob, (list, tuple, np.ndarray)):
        values = list(np.asarray(pruning_prob, dtype=object).ravel())
        if len(values) != n_classes:
            raise ValueError(
                f"pruning_prob has {len(values)} values for {n_classes} classes (give one number "
                "or one per class)"
            )
    else:
        values = [pruning_prob]
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.floating))
            or not 0.0 <= float(value) <= 1.0
        ):
            raise ValueError(f"pruning_prob must be a number in [0, 1], got {pruning_prob!r}")


def _pruning_tensor(pruning_prob, chosen, device) -> float | torch.Tensor:
    """The pruning threshold as a float, or per optimised class as a (1, n_opt) float64 row."""
    if not isinstance(pruning_prob, (list, tuple, np.ndarray)):
        return float(pruning_prob)
    values = torch.tensor([float(v) for v in np.asarray(pruning_prob).ravel()], dtype=torch.float64)
    if chosen is not None:
        values = values[list(chosen)]
    return values.to(device)[None, :]


def _check_options(metric, multilabel, unassigned, void_label, classes, n_classes, pruning_prob):
    if metric not in ("dice", "iou"):
        raise ValueError(f"metric must be 'dice' or 'iou', got {metric!r}")
    if unassigned not in ("best", "void"):
        raise ValueError(f"unassigned must be 'best' or 'void', got {unassigned!r}")
    _check_pruning(pruning_prob, n_classes)
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
    pruning_prob: float | list[float] | tuple[float, ...] | np.ndarray = 0.5,
    ignore_mask: torch.Tensor | np.ndarray | None = None,
    classes: list[int] | tuple[int, ...] | None = None,
    unassigned: Literal["best", "void"] = "best",
    void_label: int | None = None,
    return_info: bool = False,
    info_expected: bool = True,
    chunk_elements: int | None = None,
    cancel: CancelToken | None = None,
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
    pruning_prob : float or sequence of float
        Classes whose maximum probability (over valid pixels) is at or below this get no pixels;
        one value per class (C values) prunes each class at its own level.
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
    void_label : int, optional
        Label for ignored (and, with 'void', unassigned) pixels; must not be a class index.
        Default 255, or C when there are more than 255 classes.
    return_info : bool
        Also return an :class:`RMAInfo` with per (b, c) threshold, tau, objective, exact
        expected metric of the returned mask, final count and activity.
    info_expected : bool
        With ``return_info``, also compute ``RMAInfo.expected`` (exact, but several passes over
        the input: the slowest part of the call on a volume). False leaves it NaN, for callers
        that score the final mask themselves.
    chunk_elements : int, optional
        Elements processed per pass step (default 2^20 on the CPU, 2^26 on CUDA); bounds the
        temporaries (a few bytes per element) on top of the output and per-pixel claim counts.
    cancel : core.jobs.CancelToken, optional
        Checked before every chunk of every pass (a 900 MB volume stops within about 0.1 s on
        the CPU); cancelling raises :class:`core.jobs.JobCancelled`.

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
        NaN or out-of-range probabilities, multiclass probabilities that do not sum to 1 at
        every pixel (beyond rounding), wrong rank, mismatched ignore mask, C == 1 without
        multilabel, bad option values.
    """
    info = check_probabilities(probs)
    if not multilabel:
        check_sums_to_one(info)
    void_label = void_label_for(void_label, info.classes)
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
        if chunk_elements is None:
            cuda = device.type == "cuda"
            chunk_elements = _CUDA_CHUNK_ELEMENTS if cuda else DEFAULT_CHUNK_ELEMENTS
        if int(chunk_elements) < 1:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        source = _Source(info, valid, opt_index, int(chunk_elements), cancel)
        n_opt = C if opt_index is None else len(opt_index)
        # CPU only: predicting the last pass syncs with the device once per pass.
        tally = None
        if device.type == "cpu" and not multilabel:
            tally = _ClaimTally(info, n_opt, source.scratch)
        elif device.type == "cpu" and opt_index is None:
            tally = _MaskTally(torch.empty((B, C, d), dtype=torch.bool, device=device))
        pruning = _pruning_tensor(pruning_prob, chosen if opt_index is not None else None, device)
        t, tau, s, mu, active, tallied = _solve_thresholds(
            source, metric, pruning, info.work_dtype, tally
        )
        t_cmp = round_down_to(t, info.work_dtype)[..., None]
        if multilabel and tallied:
            out = tally.out
        elif multilabel:
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
            if tally is None:
                tally = _ClaimTally(info, mu.shape[1], source.scratch)
            if not tallied:
                tally.run(source, t_cmp)
            out = _assign_labels(
                source,
                t_cmp,
                mu,
                active,
                metric,
                unassigned,
                void_label,
                rest_index,
                opt_index,
                tally,
            )
        result = out.reshape(B, C, *info.spatial) if multilabel else out.reshape(B, *info.spatial)
        if not return_info:
            return result.cpu().numpy() if info.as_numpy else result
        rma_info = _build_info(
            info,
            result,
            t,
            tau,
            s,
            mu,
            active,
            metric,
            opt_index,
            ignore_mask,
            info_expected,
            cancel,
        )
    return (result.cpu().numpy() if info.as_numpy else result), rma_info


def _increment_coefficients(n_u, m_u, mu, metric, dtype):
    """Per (b, c) constants of the increment rule, in the working dtype (two (B, C) arrays)."""
    if metric == "dice":
        d_c = n_u + mu + 1.0
        return (m_u / d_c).to(dtype), (2.0 / (d_c + 1.0)).to(dtype)
    den = n_u + mu - m_u
    g = torch.where(den > 0, m_u / den.clamp_min(1e-300), torch.zeros_like(m_u))
    return g.to(dtype), den.to(dtype)


def _increments(p, first, second, metric, scratch):
    """RMA objective increase of adding each pixel to each class's uniquely claimed set.

    ``p`` is (N, C) for N pixels or a dense (B, C, n) chunk; ``first``/``second`` are the
    matching rows of :func:`_increment_coefficients` (broadcasting against ``p``).
    """
    score = scratch.like("score", p)
    if metric == "dice":
        # (p - m/D) * 2/(D+1): factored, so no cancellation between two nearly equal scores.
        return torch.sub(p, first, out=score).mul_(second)
    # (p - g (1 - p)) / (den + 1 - p), with g the current IoU estimate m/den.
    remaining = torch.neg(p, out=scratch.like("remaining", p)).add_(1.0)  # 1 - p, exactly
    torch.sub(p, torch.mul(first, remaining, out=score), out=score)
    return score.div_(remaining.add_(second))


class _MaskTally:
    """Multilabel masks written by the solver's last pass (its comparisons are the masks)."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def reset(self):
        pass

    def add_claims(self, start: int, stop: int, p: torch.Tensor, claims: torch.Tensor):
        self.out[:, :, start:stop] = claims  # 0/1 floats -> bool

    def add_masses(self, claimed_mass: torch.Tensor):
        pass


class _ClaimTally:
    """Multiclass claims at the final thresholds, tallied chunk by chunk.

    Per pixel: the number of claiming classes and, for a unique claim, which class (written
    to ``out``; ``pending`` marks the other pixels). Per (b, c): size ``n_u`` and mass
    ``m_u`` of the uniquely claimed pixels. Sums over classes and over pixels are batched
    matrix products, the fastest reductions here. Fed either by its own pass or by the
    solver's last threshold pass, which compares the same pixels with the same thresholds.
    """

    def __init__(self, info: ProbabilityInput, n_opt: int, scratch: _Scratch):
        device, dtype = info.device, info.work_dtype
        self.n_opt, self.dtype = n_opt, dtype
        weights = torch.stack(
            [torch.ones(n_opt, dtype=dtype, device=device), torch.arange(n_opt, device=device)]
        ).to(dtype)
        self.weights = weights.expand(info.batch, 2, n_opt)
        self.n_u = torch.zeros((info.batch, n_opt), dtype=torch.float64, device=device)
        self.m_u = torch.zeros_like(self.n_u)
        self.pending = torch.empty((info.batch, info.pixels), dtype=torch.bool, device=device)
        self.out = torch.empty((info.batch, info.pixels), dtype=torch.int64, device=device)
        self.scratch = scratch
        self._unique = None

    def reset(self):
        self.n_u.zero_()
        self.m_u.zero_()

    def add_claims(self, start: int, stop: int, p: torch.Tensor, claims: torch.Tensor):
        """Record one chunk's 0/1 claims (B, C, n) of probabilities ``p``; leaves them as is."""
        B, n = p.shape[0], p.shape[-1]
        count_and_label = torch.bmm(  # (B, 2, n)
            self.weights, claims, out=self.scratch.empty("count", (B, 2, n), p.dtype, p.device)
        )
        # 0/1 float flags and float labels: on the CPU bool results and torch.where into
        # int64 cost several times more than float arithmetic (all values are small
        # integers, so the floats are exact).
        unique = torch.eq(count_and_label[:, 0], 1, out=self.scratch.like("unique", p[:, 0]))
        # For a uniquely claimed pixel the label row is its class; elsewhere it is a sum of
        # indices (or 0), so it is zeroed before use as an index.
        self.out[:, start:stop] = count_and_label[:, 1].mul_(unique)
        torch.lt(unique, 0.5, out=self.pending[:, start:stop])
        if self.n_opt > _SCATTER_MIN_CLASSES:
            # Many classes: scatter one value per pixel into its class, O(n), instead of
            # products over the class axis, O(C n).
            index = self.out[:, start:stop]
            weight = unique.to(torch.float64)
            self.n_u.scatter_add_(1, index, weight)
            mass = p.gather(1, index.unsqueeze(1))[:, 0].to(torch.float64)
            self.m_u.scatter_add_(1, index, mass * weight)
            self._unique = None
        else:
            # Few classes: CPU scatters into a handful of bins serialise; products are faster.
            self._unique = unique.unsqueeze(-1)
            self.n_u += torch.bmm(claims, self._unique)[..., 0]

    def add_masses(self, claimed_mass: torch.Tensor):
        """The same chunk's claims multiplied by the probabilities (products path only)."""
        if self._unique is not None:
            self.m_u += torch.bmm(claimed_mass, self._unique)[..., 0]

    def run(self, source: _Source, t_cmp: torch.Tensor):
        """Its own pass over the pixels at thresholds ``t_cmp`` (B, C, 1)."""
        self.reset()
        for start, stop, _, p in source:
            claims = torch.gt(p, t_cmp, out=self.scratch.like("above", p))
            self.add_claims(start, stop, p, claims)
            self.add_masses(claims.mul_(p))


def _assign_labels(
    source, t_cmp, mu, active, metric, unassigned, void_label, rest_index, opt_index, tally
):
    """Multiclass labels: unique claims keep their class, the rest go by largest increment.

    ``tally`` is a :class:`_ClaimTally` filled at ``t_cmp``.
    """
    info, valid = source.info, source.valid
    device, dtype = info.device, info.work_dtype
    n_opt = mu.shape[1]
    out, pending, n_u, m_u = tally.out, tally.pending, tally.n_u, tally.m_u
    if opt_index is not None:
        out = opt_index[out]  # positions among the optimised classes -> class indices
    if valid is not None:
        pending &= valid
    # Pixels claimed by several classes or by none (typically a thin band along edges) are
    # resolved in a second pass: gathered while the chunk is in cache when they are few,
    # or scored densely over the chunk when gathering would cost more (few classes, many
    # pending pixels) and always on CUDA, where dense kernels are cheap and need no sync.
    first, second = _increment_coefficients(n_u, m_u, mu, metric, dtype)
    # Unclaimed pixels: active classes compete; every class does when all are pruned.
    fallback = active | ~active.any(1, keepdim=True)
    thresholds = t_cmp[..., 0]
    rule = dict(
        metric=metric,
        unassigned=unassigned,
        void_label=void_label,
        opt_index=opt_index,
        rest_index=rest_index,
        scratch=source.scratch,
    )
    for start, stop, full, p in source:
        pend = pending[:, start:stop]
        if device.type != "cpu" or _dense_is_cheaper(pend, n_opt):
            labels = _resolve(
                p, full, t_cmp, first[..., None], second[..., None], fallback[..., None], **rule
            )
            # Uniquely claimed pixels come out of the increment rule with their own class
            # (the only eligible one), so the whole chunk is written.
            out[:, start:stop] = labels
            continue
        b, i = pend.nonzero(as_tuple=True)
        if b.numel() == 0:
            continue
        labels = _resolve(
            p[b, :, i],
            full[b, :, i] if opt_index is not None else None,
            thresholds[b],
            first[b],
            second[b],
            fallback[b],
            **rule,
        )
        out[b, i + start] = labels
    if valid is not None:
        out.masked_fill_(~valid, int(void_label))
    return out


#: Above this many optimised classes the unique-claim sums use scatters rather than products.
_SCATTER_MIN_CLASSES = 8


def _dense_is_cheaper(pending: torch.Tensor, n_classes: int) -> bool:
    """CPU cost model: gathering a pixel costs about as much as scoring 6 dense values."""
    gathered = int(pending.sum()) * (n_classes + 2) * 6
    return gathered > pending.numel() * n_classes


def _resolve(
    values,
    full_values,
    thresholds,
    first,
    second,
    fallback,
    *,
    metric,
    unassigned,
    void_label,
    opt_index,
    rest_index,
    scratch,
):
    """Labels of pixels by the increment rule; the class axis of ``values`` is axis 1.

    Works on gathered pixels (N, C) and on dense chunks (B, C, n) alike; the per-class
    arguments broadcast against ``values``.
    """
    # Float 0/1 masks throughout: on the CPU bool temporaries and bool reductions over the
    # class axis (``any``) were several times slower than the float equivalents.
    claims = torch.gt(values, thresholds, out=scratch.like("claims", values))
    claimed = claims.amax(1, keepdim=True)
    # Eligible classes: the claiming ones, or the fallback classes where none claims.
    eligible = claims.addcmul_(1.0 - claimed, fallback.to(values.dtype))
    # Ineligible classes get the lowest finite score; eligible ones keep theirs exactly
    # (adding 0). Every pixel has an eligible class, and scores are far above that floor.
    floor = torch.finfo(values.dtype).max
    score = _increments(values, first, second, metric, scratch)
    labels = _first_max_index(score.add_(eligible.sub_(1.0).mul_(floor)), scratch)
    if opt_index is not None:
        labels = opt_index[labels]
        rest = full_values.index_select(1, rest_index)
        labels = torch.where(claimed[:, 0] > 0, labels, rest_index[_first_max_index(rest, scratch)])
    elif unassigned == "void":
        labels.masked_fill_(claimed[:, 0] == 0, int(void_label))
    return labels


def _first_max_index(score: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """Index of the first maximum along axis 1 (lowest class index on ties), like ``argmax``.

    On the CPU ``max(dim).indices`` over a dense chunk's class axis (not the innermost one)
    branches per element and is several times slower on scores that change class often
    (measured: 3.4 ms against 0.4 ms for 3 x 350k scores); the maximum, an equality test and
    a second maximum over reversed class weights (``C - c`` where the score is maximal, 0
    elsewhere) give the same index without branches.
    """
    if score.device.type != "cpu" or score.dim() == 2:
        # Gathered (N, C) scores reduce along the contiguous axis, where max is fast.
        return score.max(1).indices
    n_classes = score.shape[1]
    top = score.amax(1, keepdim=True)
    hits = torch.eq(score, top, out=scratch.like("hits", score))
    shape = [1] * score.dim()
    shape[1] = n_classes
    reversed_rank = torch.arange(n_classes, 0, -1, dtype=score.dtype, device=score.device)
    first = hits.mul_(reversed_rank.reshape(shape)).amax(1)
    return (n_classes - first).to(torch.int64)


def _build_info(
    info, result, t, tau, s, mu, active, metric, opt_index, ignore_mask, with_expected, cancel
):
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
        count = torch.zeros((B, C + 1), dtype=torch.int64, device=labels.device)
        # Chunk by chunk: the bins and ones of a whole volume are int64 temporaries of 27
        # bytes a voxel (2 GB on a 512x512x300 CT, twice what the decision itself needs).
        for start in range(0, labels.shape[1], DEFAULT_CHUNK_ELEMENTS):
            part = labels[:, start : start + DEFAULT_CHUNK_ELEMENTS]
            # Labels outside [0, C) (void) land in an extra bin that is dropped.
            bins = torch.where((part >= 0) & (part < C), part, torch.full_like(part, C))
            count.scatter_add_(1, bins, torch.ones_like(bins))
        count = count[:, :C]
    if with_expected:
        expected = expected_metric_of_masks(
            info.flat.reshape(B, C, *info.spatial),
            result,
            metric=metric,
            ignore_mask=ignore_mask,
            as_torch=True,
            cancel=cancel,
        )
    else:
        expected = torch.full_like(threshold, np.nan)
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

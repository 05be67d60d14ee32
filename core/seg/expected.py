"""Exact expected Dice and IoU of any mask when ground-truth pixels are independent Bernoulli(p).

For a mask M with tau pixels and Y_i ~ Bernoulli(p_i) independent:

- ``E[Dice] = sum_{i in M} 2 p_i E[1 / (tau + 1 + X_{-i})]`` where X_{-i} counts the other
  positives, and ``E[1/(a + X)] = int_0^1 t^(a-1) E[t^X] dt`` with ``E[t^X] = prod (1 - p_j s)``,
  ``s = 1 - t``. Hence ``E[Dice] = int_0^1 t^tau G(t) H(t) dt`` with ``G = prod_all (1 - p_j s)``
  and ``H = sum_{i in M} 2 p_i / (1 - p_i s)``.
- ``E[IoU] = (sum_{i in M} p_i) int_0^1 t^(tau-1) prod_{j not in M} (1 - p_j s) dt``.

The integral is taken in u = -log t on geometric panels of 8-point Gauss-Legendre rules, up to
the point where the integrand's bound falls below e^-45. ``log G`` is summed exactly for pixels
with ``p * s_max > 0.05`` and through its power series (13 moments of p, truncation error
below 1e-16 per pixel) for the rest, which keeps the cost near a few passes over the pixels.
Only the first 4 moments are summed over every pixel: beyond them the terms of pixels with
``p * s_max <= 1e-4`` are below 1e-16 of their first one, and on a large class s_max is tiny
(about 45 / tau), so the higher moments come from the few pixels above that bound, gathered.
An empty mask scores ``empty`` times P(no positive pixel).
"""

from __future__ import annotations

import numpy as np
import torch

from core.seg.inputs import check_ignore_mask, check_probabilities

__all__ = ["expected_dice", "expected_iou", "expected_metric_of_masks"]

_SERIES_LIMIT = 0.05
_SERIES_TERMS = 13
#: Moments summed densely over every pixel; the rest only over pixels with p * s_max above
#: _DENSE_LIMIT, where (p s)^4 / 5 < 1e-16 bounds what the skipped terms would add.
_DENSE_TERMS = 4
_DENSE_LIMIT = 1e-4
_TAIL_EXPONENT = 45.0
_GL_NODES = 8
_CHUNK_ELEMENTS = 1 << 21


def expected_dice(probs, mask, *, ignore_mask=None, empty: float = 1.0, cancel=None):
    """Exact expected Dice of ``mask`` per (b, c) under the independence model.

    Parameters
    ----------
    probs : torch.Tensor or numpy.ndarray, shape (B, C, *spatial)
        Probabilities in [0, 1].
    mask : bool (B, C, *spatial) per-class masks, or int (B, *spatial) label map
        The decision to score; in a label map, class c's mask is ``label == c`` (other values,
        such as a void label, belong to no class).
    ignore_mask : bool (B, *spatial), optional
        Pixels left out of both the mask and the random ground truth.
    empty : float
        Score of an empty mask against an empty ground truth (0/0); default 1.
    cancel : core.jobs.CancelToken, optional
        Checked before every chunk of every pass; cancelling raises ``JobCancelled``.

    Returns
    -------
    float64 array (B, C), numpy if probs is numpy, else a CPU torch tensor.
    """
    return expected_metric_of_masks(
        probs, mask, metric="dice", ignore_mask=ignore_mask, empty=empty, cancel=cancel
    )


def expected_iou(probs, mask, *, ignore_mask=None, empty: float = 1.0, cancel=None):
    """Exact expected IoU of ``mask`` per (b, c); same conventions as :func:`expected_dice`."""
    return expected_metric_of_masks(
        probs, mask, metric="iou", ignore_mask=ignore_mask, empty=empty, cancel=cancel
    )


def _mask_tensor(mask, B, C, spatial, device):
    if isinstance(mask, np.ndarray):
        if mask.dtype.kind == "u" and mask.dtype.itemsize > 1:
            # torch compares uint16/32/64 with nothing else; uint8 and signed labels pass as is.
            mask = mask.astype(np.int64)
        m = torch.from_numpy(mask)
    else:
        m = mask
    if not isinstance(m, torch.Tensor):
        raise ValueError(f"mask must be a bool or integer array, got {type(mask).__name__}")
    m = m.to(device)
    if m.dtype == torch.bool:
        if tuple(m.shape) != (B, C, *spatial):
            raise ValueError(
                f"bool mask shape {tuple(m.shape)} does not match probs' {(B, C, *spatial)}"
            )
        return m.reshape(B, C, -1), True
    if m.dtype.is_floating_point or m.dtype.is_complex:
        raise ValueError(f"mask must be bool (B, C, ...) or integer labels (B, ...), got {m.dtype}")
    if tuple(m.shape) != (B, *spatial):
        raise ValueError(f"label-map mask shape {tuple(m.shape)} does not match {(B, *spatial)}")
    return m.reshape(B, -1), False


def _panel_nodes(u_max, scale):
    """Gauss-Legendre nodes/weights on panels [0, h], [h, 2h], ..., [u_max/2, u_max] per (b, c)."""
    needed = torch.log2((9.0 * u_max * scale).clamp_min(2.0)).ceil() + 2
    panels = int(needed.max().clamp(4, 70))
    x, w = np.polynomial.legendre.leggauss(_GL_NODES)
    x = torch.tensor(x, dtype=torch.float64, device=u_max.device)
    w = torch.tensor(w, dtype=torch.float64, device=u_max.device)
    k = torch.arange(panels, dtype=torch.float64, device=u_max.device)
    right = u_max[..., None] * torch.pow(2.0, k - (panels - 1))  # (B, C, P)
    left = torch.where(k == 0, torch.zeros_like(right), right / 2)
    half = (right - left) / 2
    nodes = (left + half)[..., None] + half[..., None] * x  # (B, C, P, 8)
    weights = half[..., None] * w
    return nodes.flatten(-2), weights.flatten(-2)


def _solve_tail(tau, rate):
    """Smallest u with tau*u + rate*(1 - e^-u) >= the tail exponent (bisection, per (b, c))."""
    lo = torch.zeros_like(tau)
    hi = _TAIL_EXPONENT / tau.clamp_min(1.0)
    for _ in range(80):
        mid = (lo + hi) / 2
        big = tau * mid - rate * torch.expm1(-mid) >= _TAIL_EXPONENT
        hi = torch.where(big, mid, hi)
        lo = torch.where(big, lo, mid)
    return hi


def expected_metric_of_masks(
    probs, mask, *, metric, ignore_mask=None, empty=1.0, as_torch=None, cancel=None
):
    """Shared implementation of :func:`expected_dice` and :func:`expected_iou`.

    ``metric`` picks the score; ``as_torch=True`` returns the (B, C) result as a tensor on the
    input's device (used by ``rankseg_rma`` for its diagnostics) whatever the input type.
    """
    if metric not in ("dice", "iou"):
        raise ValueError(f"metric must be 'dice' or 'iou', got {metric!r}")
    info = check_probabilities(probs)
    B, C, d, device = info.batch, info.classes, info.pixels, info.device
    masks, per_class = _mask_tensor(mask, B, C, info.spatial, device)
    ignore = check_ignore_mask(ignore_mask, info)
    valid = None if ignore is None else ~ignore
    class_ids = torch.arange(C, device=device)[None, :, None]
    f64 = torch.float64
    step = max(1, _CHUNK_ELEMENTS // (B * C))

    def chunks():
        for start in range(0, d, step):
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(d, start + step)
            p = info.chunk(start, stop).to(device=device, dtype=f64)
            inside = (
                masks[:, :, start:stop] if per_class else masks[:, None, start:stop] == class_ids
            )
            if valid is not None:
                v = valid[:, None, start:stop]
                p = p * v
                inside = inside & v
            yield p, inside

    with torch.no_grad():
        tau = torch.zeros((B, C), dtype=f64, device=device)
        mu = torch.zeros_like(tau)
        mu_in = torch.zeros_like(tau)
        for p, inside in chunks():
            tau += inside.sum(-1, dtype=f64)
            mu += p.sum(-1)
            mu_in += torch.where(inside, p, 0).sum(-1)
        # Pixels whose factor enters G: all pixels (Dice) or those outside the mask (IoU).
        rate = mu if metric == "dice" else mu - mu_in
        u_max = _solve_tail(tau, rate)
        nodes, weights = _panel_nodes(u_max, tau + 1.0 + rate)
        s_nodes = -torch.expm1(-nodes)  # (B, C, K)
        s_max = -torch.expm1(-u_max)
        safe_s_max = s_max.clamp_min(1e-300)
        cut = (_SERIES_LIMIT / safe_s_max)[..., None]
        dense_cut = (_DENSE_LIMIT / safe_s_max)[..., None]
        K = s_nodes.shape[-1]
        log_g = torch.zeros((B * C, K), dtype=f64, device=device)
        h = torch.zeros_like(log_g)
        g_moments = torch.zeros((B * C, _SERIES_TERMS), dtype=f64, device=device)
        h_moments = torch.zeros_like(g_moments)
        with_h = metric == "dice"  # E[IoU] needs no H
        high_exponents = torch.arange(_DENSE_TERMS + 1, _SERIES_TERMS + 1, device=device, dtype=f64)
        # 1 - p s written as (1 - p) + p t stays exact when s rounds to 1 (p = 1, large u).
        t_flat = torch.exp(-nodes).reshape(B * C, K)
        for p, inside in chunks():
            in_g = torch.ones_like(inside) if metric == "dice" else ~inside
            small = p <= cut
            # Series part: log(1 - p s) = -sum_k (p s)^k / k; 1/(1 - p s) = sum_k (p s)^k.
            g_series = small & in_g
            h_series = small & inside
            g_part = torch.where(g_series, p, 0)
            g_power = g_part.clone()
            if with_h:
                h_part = torch.where(h_series, p, 0)
                h_power = h_part.clone()
            for k in range(_DENSE_TERMS):
                g_moments[:, k] += g_power.sum(-1).reshape(-1)
                if with_h:
                    h_moments[:, k] += h_power.sum(-1).reshape(-1)
                if k + 1 < _DENSE_TERMS:
                    g_power.mul_(g_part)
                    if with_h:
                        h_power.mul_(h_part)
            # Higher moments: only the pixels where they are not negligible, gathered.
            high = small & (p > dense_cut)
            rows = high.nonzero()
            if rows.numel():
                at = rows.unbind(1)  # one nonzero() serves every gather below
                row_bc = rows[:, 0] * C + rows[:, 1]
                powers_high = p[at][:, None] ** high_exponents
                g_rows = g_series[at]
                g_moments[:, _DENSE_TERMS:].index_add_(0, row_bc[g_rows], powers_high[g_rows])
                if with_h:
                    h_rows = h_series[at]
                    h_moments[:, _DENSE_TERMS:].index_add_(0, row_bc[h_rows], powers_high[h_rows])
            # Exact part for the few pixels where the series would converge slowly.
            big = ~small & (p > 0)
            rows = big.nonzero()
            if rows.numel():
                at = rows.unbind(1)
                row_bc = rows[:, 0] * C + rows[:, 1]
                pv = p[at]
                tv = t_flat[row_bc]
                g_rows = in_g[at]
                remaining = (1.0 - pv)[:, None] + pv[:, None] * tv
                factor = torch.log(remaining)
                log_g.index_add_(0, row_bc[g_rows], factor[g_rows])
                if metric == "dice":
                    h_rows = inside[at]
                    term = 2.0 * pv[h_rows, None] / remaining[h_rows]
                    h.index_add_(0, row_bc[h_rows], term)
        log_g = log_g.reshape(B, C, K)
        g_moments = g_moments.reshape(B, C, _SERIES_TERMS)
        h_moments = h_moments.reshape(B, C, _SERIES_TERMS)
        powers = s_nodes[..., None] ** torch.arange(1, _SERIES_TERMS + 1, device=device, dtype=f64)
        k_idx = torch.arange(1, _SERIES_TERMS + 1, device=device, dtype=f64)
        log_g = log_g - (powers * (g_moments / k_idx)[..., None, :]).sum(-1)
        if metric == "dice":
            # sum_M 2 p / (1 - p s) = 2 sum_k s^k sum_M p^(k+1)
            series_h = 2.0 * h_moments[..., None, 0] + 2.0 * (
                powers[..., :-1] * h_moments[..., None, 1:]
            ).sum(-1)
            h_all = h.reshape(B, C, K) + series_h
            integrand = torch.exp(log_g - (tau[..., None] + 1.0) * nodes) * h_all
            value = (integrand * weights).sum(-1)
        else:
            integrand = torch.exp(log_g - tau[..., None] * nodes)
            value = mu_in * (integrand * weights).sum(-1)
        empty_masks = tau == 0
        if bool(empty_masks.any()):
            # P(no positive pixel) only matters for empty masks (usually none): a pass of its own.
            log_none = torch.zeros_like(tau)
            for p, _ in chunks():
                log_none += torch.log1p(-p).sum(-1)
            value = torch.where(empty_masks, float(empty) * torch.exp(log_none), value)
    if as_torch:
        return value
    return value.cpu().numpy() if info.as_numpy else value.cpu()

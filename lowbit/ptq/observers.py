"""Calibration observers: from a tensor's statistics to a clipping threshold, then to a fixed scale.

Every method picks a clipping threshold T for |x| (0 < T <= amax = max |x|); the scale follows from
T and the format, exactly as lowbit's dynamic scaling does from amax (:mod:`lowbit.ops.scaling`):

    signed formats    s = T / fmt.max                     (symmetric, zero point 0)
    unsigned ints     lo, hi = r * min(x, 0), r * max(x, 0) with r = T / amax;
                      s = (hi - lo) / qmax, zero point z = round(-lo / s)

Methods (activations: from a histogram of |x| over [0, amax] with ``bins`` bins, gathered over the
calibration set; weights: from the tensor itself, per tensor or per output channel):

``minmax``      T = amax.
``percentile``  T = the ``percentile`` (e.g. 99.99) of |x| (activations: the upper edge of the bin
                where the cumulative histogram reaches it).
``mse``         T minimising the mean squared quantization error, searched over a grid of
                thresholds; the error of each candidate is measured with the real format
                (lowbit.quantize of the bin centres / the weight), so it holds for FP8 too.
``kl``          TensorRT's entropy calibration (Migacz, "8-bit inference with TensorRT", GTC 2017):
                the T minimising KL(P || Q), P the histogram clipped at T (outliers added to the
                last bin), Q the same bins merged into the format's quantization levels (bins
                whose centres round to the same value under scale T / fmt.max; for int8 these are
                TensorRT's 128 uniform groups) and spread back evenly over the bins that were non-zero.
"""
from __future__ import annotations

import math

import torch

from lowbit.ops import quantize
from lowbit.ops.scaling import pow2_ceil, ratio_scale

METHODS = ("minmax", "percentile", "mse", "kl")
_EPS = 1e-12


def _q(x, spec, s):
    """quantize with a fixed (scale, zero point 0 for unsigned) of broadcastable shape."""
    f = spec.format
    scale = (s, torch.zeros_like(s)) if f.asymmetric else s
    return quantize(x, spec, scale=scale, backend="eager")


def _level_max(spec) -> float:
    f = spec.format
    return float(f.max)


def threshold_scale(spec, amax: torch.Tensor, t: torch.Tensor, lo=None, hi=None):
    """The fixed scale (a tensor, or (scale, zero point) for unsigned ints) for threshold ``t``."""
    f = spec.format
    if f.asymmetric:
        r = torch.where(amax > 0, t / amax.clamp_min(_EPS), 1.0)
        lo_c, hi_c = r * lo.clamp(max=0), r * hi.clamp(min=0)
        s = ratio_scale(hi_c - lo_c, f.qmax)
        return s, torch.round(-lo_c / s).clamp(0, f.qmax)
    s = ratio_scale(t, _level_max(spec))
    return pow2_ceil(s) if spec.pow2_scale else s


# ---- activations: histogram over |x| --------------------------------------------------------------
def hist_threshold(hist: torch.Tensor, amax: float, spec, method: str, percentile: float = 99.99) -> float:
    """Threshold T for |x| from ``hist`` (counts of |x| in ``len(hist)`` equal bins over [0, amax])."""
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    hist = hist.double()
    total = float(hist.sum())
    if method == "minmax" or amax <= 0 or total == 0:
        return float(amax)
    bins = hist.numel()
    width = amax / bins
    if method == "percentile":
        cdf = torch.cumsum(hist, 0) / total
        i = int(torch.searchsorted(cdf, torch.tensor(percentile / 100.0, dtype=cdf.dtype)))
        return float(min(i + 1, bins) * width)
    centres = (torch.arange(bins, dtype=torch.float32) + 0.5) * width
    if method == "mse":
        cand = _candidates(bins, 128)
        t = torch.tensor(cand, dtype=torch.float32) * width
        s = (t / _level_max(spec))[:, None]          # |x| >= 0: zero point 0 for unsigned formats too
        err = (_q(centres.expand(len(cand), -1).contiguous(), spec.replace(scaling="channel", axis=0), s)
               - centres).double() ** 2
        return float(t[int(torch.argmin((err * hist).sum(1)))])
    return _kl_threshold(hist, centres, width, spec)


def _candidates(bins: int, n: int) -> list[int]:
    """Up to ``n`` bin counts from bins/16 to bins, evenly spaced (always including bins)."""
    lo = max(1, bins // 16)
    return sorted({round(lo + (bins - lo) * k / (n - 1)) for k in range(n)})


def _kl_threshold(hist, centres, width, spec) -> float:
    best, best_i = math.inf, hist.numel()
    cspec = spec.replace(scaling="tensor")
    for i in _candidates(hist.numel(), 128):
        p = hist[:i].clone()
        p[-1] += hist[i:].sum()
        s = torch.tensor(i * width / _level_max(spec), dtype=torch.float32)
        levels = _q(centres[:i], cspec, s)
        _, group = torch.unique(levels, return_inverse=True)
        nz = (hist[:i] > 0).double()
        mass = torch.zeros(int(group.max()) + 1, dtype=torch.float64).scatter_add_(0, group, hist[:i])
        count = torch.zeros_like(mass).scatter_add_(0, group, nz)
        q = torch.where(nz > 0, mass[group] / count[group].clamp_min(1), 0.0)
        pn, qn = p / p.sum(), q / q.sum().clamp_min(_EPS)
        m = pn > 0
        kl = float((pn[m] * torch.log(pn[m] / qn[m].clamp_min(_EPS))).sum())
        if kl < best:
            best, best_i = kl, i
    return float(best_i * width)


# ---- weights: the tensor itself ------------------------------------------------------------------
def weight_scale(w: torch.Tensor, spec, method: str, percentile: float = 99.99, bins: int = 2048):
    """Fixed scale of weight ``w`` for ``spec`` (scaling 'tensor' or 'channel'), by ``method``.

    Returns a tensor broadcastable to ``w`` ((O, 1, ...) per channel, () per tensor), or
    (scale, zero point) for unsigned integer formats.
    """
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not allowed; allowed: {', '.join(METHODS)}")
    w = w.detach().float()
    if not bool(torch.isfinite(w).all()):
        n_inf, n_nan = int(torch.isinf(w).sum()), int(torch.isnan(w).sum())
        what = " and ".join(p for p in (f"{n_inf} Inf" if n_inf else "", f"{n_nan} NaN" if n_nan else "") if p)
        raise ValueError(f"the weight holds {what} of {w.numel()} values; allowed: finite weights "
                         f"(a fixed scale cannot be calibrated from non-finite values)")
    per_channel = spec.scaling == "channel"
    if per_channel and spec.axis % w.dim() != 0:
        raise ValueError(f"per-channel weight calibration needs axis 0 (got axis={spec.axis})")
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    shape = (w.shape[0],) + (1,) * (w.dim() - 1) if per_channel else ()
    a = rows.abs()
    amax = a.amax(1)
    lo, hi = rows.amin(1), rows.amax(1)
    if method == "minmax":
        t = amax
    elif method == "percentile":
        t = torch.quantile(a, percentile / 100.0, dim=1) if a.shape[1] <= 16_000_000 else amax
        t = torch.where(t > 0, t, amax)
    elif method == "mse":
        t = _weight_mse(rows, amax, spec)
    else:
        t = torch.stack([torch.tensor(hist_threshold(torch.histc(r, bins, 0, float(m)), float(m), spec, "kl"))
                         if m > 0 else m for r, m in zip(a, amax)])
    s = threshold_scale(spec, amax, t, lo, hi)
    if isinstance(s, tuple):
        return s[0].reshape(shape), s[1].reshape(shape)
    return s.reshape(shape)


def _weight_mse(rows: torch.Tensor, amax: torch.Tensor, spec) -> torch.Tensor:
    """Per row: the threshold t = r * amax, r in 0.20..1.00 (step 0.01), with the least squared error.

    Coarse to fine: r on a 0.05 grid, then the 0.01 steps within +-0.04 of each row's best (26
    quantize calls instead of 81; the error is smooth enough in r at this scale).
    """
    cspec = spec.replace(scaling="channel", axis=0)
    lo, hi = rows.amin(1), rows.amax(1)
    best_err = torch.full_like(amax, math.inf, dtype=torch.float64)
    best_r = torch.ones_like(amax)

    def trial(r):
        nonlocal best_err, best_r
        t = amax * r
        s = threshold_scale(spec, amax, t, lo, hi)
        s = (s[0][:, None], s[1][:, None]) if isinstance(s, tuple) else s[:, None]
        err = ((quantize(rows, cspec, scale=s, backend="eager") - rows).double() ** 2).sum(1)
        better = err < best_err
        best_err, best_r = torch.where(better, err, best_err), torch.where(better, r, best_r)

    for k in range(20, 101, 5):
        trial(torch.full_like(amax, k / 100))
    coarse = best_r.clone()
    for d in (-4, -3, -2, -1, 1, 2, 3, 4):
        trial((coarse + d / 100).clamp(0.2, 1.0))
    return amax * best_r

"""Dynamic scales shared by several processes that each hold a slice of one batch (data parallel).

A dynamic ``tensor`` or ``channel`` scale is a function of the amax over the batch (asymmetric
formats: of min and max). When a batch is split over ranks, each rank would see only its slice's
amax and pick its own scale; inside ``with shared_scales(reduce_max):`` :func:`lowbit.quantize`
first reduces those statistics with ``reduce_max`` (an elementwise max over all ranks, e.g.
``torch.distributed.all_reduce(t, op=MAX)``) and then quantizes with the resulting scale, so every
rank uses the scale one process would compute on the whole batch, bit for bit (a max is exact).

Not reduced, because they do not mix samples: ``none``, ``group`` and ``block`` scaling, ``channel``
scaling along dim 0 (one scale per sample), and parameters (weights are equal on every rank). Every
rank must make the same quantize calls in the same order (true for data-parallel replicas). The
context is per thread / task (:mod:`contextvars`), like :func:`lowbit.backend`; autograd's backward
threads do not see it, so gradient quantizers keep per-rank scales (see lowbit.distributed.ddp).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import torch

from lowbit.ops.scaling import asym_range, asym_scale, element_scale, finite_amax, reduce_dims

_REDUCE: contextvars.ContextVar = contextvars.ContextVar("lowbit_shared_scales", default=None)


@contextlib.contextmanager
def shared_scales(reduce_max: Callable[[torch.Tensor], torch.Tensor]):
    """Quantize inside the block with dynamic scales reduced by ``reduce_max`` (see the module)."""
    token = _REDUCE.set(reduce_max)
    try:
        yield
    finally:
        _REDUCE.reset(token)


def shared_scale(x: torch.Tensor, spec):
    """The scale ``spec`` gives ``x`` with its statistics reduced over the ranks, or None (no
    ``shared_scales`` block, or a granularity that does not mix samples)."""
    reduce_max = _REDUCE.get()
    if reduce_max is None or isinstance(x, torch.nn.Parameter) or x.dim() == 0:
        return None
    if spec.scaling not in ("tensor", "channel") or (spec.scaling == "channel" and spec.axis % x.dim() == 0):
        return None
    xf = x.detach().float()
    fmt = spec.format
    if fmt.asymmetric:
        lo, hi = asym_range(xf, spec.scaling, spec.axis)
        both = reduce_max(torch.stack([-lo, hi]))
        return asym_scale(-both[0], both[1], fmt)
    amax = reduce_max(finite_amax(xf, reduce_dims(xf, spec.scaling, spec.axis), keepdim=True))
    return element_scale(amax, fmt, spec.pow2_scale)

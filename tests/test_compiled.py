"""The torch.compile'd kernel equals the eager one bit for bit (NaN-aware, -0 distinct from +0).

One compile per spec (seconds each), so a handful of representative specs, on data that holds every
special: signed zeros, Inf, NaN, fp32 subnormals, values at fp32's extremes, exact ties.
"""
from __future__ import annotations

import pytest
import torch

from conftest import assert_same
from lowbit import quantize

SPECS = [
    ("fp8_e4m3", dict(scaling="tensor")),
    ("fp4_e2m1", dict()),                                  # direct cast
    ("int8", dict(scaling="channel", axis=0)),
    ("uint4", dict()),                                     # asymmetric, zero point
    ("mxfp4", dict()),
    ("nvfp4", dict()),
    ("codebook:-1,-0.25,0,0.5,1,2", dict(scaling="tensor")),
]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g) * torch.exp(torch.randn(64, 1, generator=g) * 6)
    x[0, :32] = 0.0
    x[0, 32:64] = -0.0
    x[1, 3], x[2, 40], x[3, 0] = float("nan"), float("inf"), -float("inf")
    x[4] = torch.randn(256, generator=g) * 1e-41                 # fp32 subnormals
    x[5] = torch.randn(256, generator=g) * 1e38                  # near fp32's max
    x[6] = torch.arange(256) / 8.0 - 16                          # exact ties of many grids
    x[7] = torch.finfo(torch.float32).tiny * torch.arange(256)
    return x


@pytest.mark.parametrize("name,kw", SPECS, ids=[n for n, _ in SPECS])
def test_compiled_equals_eager(name, kw):
    x = _data()
    eager = quantize(x, name, backend="eager", **kw)
    compiled = quantize(x, name, backend="compiled", **kw)
    assert compiled.dtype == x.dtype and compiled.shape == x.shape
    assert_same(compiled, eager, x, f"{name} {kw} compiled vs eager")
    out = torch.empty_like(x)                                   # the same compiled kernel writing into out=
    quantize(x, name, backend="compiled", out=out, **kw)
    assert_same(out, eager, x, f"{name} {kw} compiled out=")


def test_backend_is_honoured_on_the_autograd_path():
    """backend='eager' with requires_grad must not compile (it used to be dropped by the autograd path)."""
    from lowbit.ops import kernels

    x = torch.randn(1024, 512, requires_grad=True)  # above kernels.AUTO_MIN_NUMEL
    before = dict(kernels._compiled)
    q = quantize(x, "int4", scaling="channel", axis=0, backend="eager", grad="clipped")
    q.sum().backward()
    assert kernels._compiled == before and x.grad.shape == x.shape

"""CUDA parity: the same operator on the GPU gives the CPU's numbers bit for bit (skipped without CUDA)."""
import pytest
import torch

import lowbit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SPECS = [
    ("fp8_e4m3", dict(scaling="tensor")),
    ("fp8_e5m2", dict(saturate=False)),
    ("fp4_e2m1", dict(scaling="tensor")),
    ("e2m0", dict(scaling="tensor")),
    ("int4", dict(scaling="channel", axis=0)),
    ("uint8", dict()),
    ("mxfp8_e4m3", dict()),
    ("mxfp4", dict()),
    ("mxint8", dict()),
    ("nvfp4", dict()),
    ("nf4", dict()),
]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1024, generator=g) * torch.exp(torch.randn(512, 1024, generator=g) * 3)
    x[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    return x


def _same(a, b):
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("name,kw", SPECS)
@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_cuda_matches_cpu(name, kw, backend):
    x = _data()
    ref = lowbit.quantize(x, name, backend="eager", **kw)
    got = lowbit.quantize(x.cuda(), name, backend=backend, **kw).cpu()
    assert _same(ref, got)


def test_cuda_autograd_and_dtypes():
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q = lowbit.quantize(x, "mxfp4", grad="clipped")
    assert q.dtype == torch.bfloat16 and q.device.type == "cuda"
    q.float().sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape

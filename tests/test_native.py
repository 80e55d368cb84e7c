"""The native C++ kernels equal the eager reference bit for bit (NaN-aware, -0 distinct from +0).

The eager kernels are proven against ml_dtypes, torch's float8 dtypes and a float64 reference
elsewhere (test_casts_oracle.py, test_mx_nvfp4.py); here the native ones are held to the eager ones on
every probe point of every format they cover (values, ties, boundaries, fp32 specials), on random
fp32 bit patterns, and through every schedule they can take: threads, non-temporal stores, tails
shorter than a vector, masks for the clipped STE, out=, fp16/bf16.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import assert_same, probe_points, rand_f32, t
from lowbit import get_format, quantize
from lowbit.ops import kernels, native, native_build

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels unavailable: "
                                                                f"{native.unavailable_reason()}")

ELEMENT_FORMATS = ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "fp16", "e3m0", "e1m0", "e2m0",
                   "e4m3fnuz", "e5m2fnuz", "e7m1", "e3m4_ftz", "e4m3_b11", "e2m1_ftz", "e6m9", "e5m2_b140", "e4m3_b133_ftz",
                   "int2", "int4", "int8", "int16"]
BLOCK_FORMATS = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"]


def _same(x, name, what="", **kw):
    e = quantize(x, name, backend="eager", **kw)
    n = quantize(x, name, backend="native", **kw)
    assert n.dtype == x.dtype and n.shape == x.shape
    assert_same(n, e, x, f"{name} {kw} {what} native vs eager")


def _mixed(n=4096, seed=0):
    """Random bit patterns and wide magnitudes, with zeros, Inf, NaN and fp32 subnormals mixed in."""
    return t(rand_f32(n, seed))


@pytest.mark.parametrize("name", ELEMENT_FORMATS)
def test_direct_cast_on_every_probe_point(name):
    fmt = get_format(name)
    x = t(np.concatenate([probe_points(fmt), rand_f32(1 << 14)]))
    rounds = ["nearest", "zero"] if fmt.kind == "int" else ["nearest"]
    for rounding in rounds:
        for saturate in (True, False):
            _same(x, name, scaling="none", rounding=rounding, saturate=saturate)


@pytest.mark.parametrize("name", ELEMENT_FORMATS)
def test_scaled_casts(name):
    x = _mixed(3 * 4096 + 5).reshape(-1, 1) * torch.ones(1, 3)     # a tail shorter than a vector
    for kw in (dict(scaling="tensor"), dict(scaling="tensor", pow2_scale=True),
               dict(scaling="channel", axis=0), dict(scaling="group", group_size=3),
               dict(scaling="group", group_size=32, axis=0, pad=True)):
        _same(x, name, **kw)
    finite = torch.randn(64, 48) * 3
    _same(finite, name, scaling="tensor", scale=torch.tensor(0.037))        # a given (delayed) scale
    _same(finite, name, scaling="tensor", saturate=False)


@pytest.mark.parametrize("name", BLOCK_FORMATS)
def test_block_formats(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 320, generator=g) * torch.exp(torch.randn(96, 1, generator=g) * 8)
    x[0, :32] = 0.0                                              # an all-zero block
    x[1, 3], x[2, 40], x[3, 0] = float("nan"), float("inf"), -float("inf")
    x[4] = torch.randn(320, generator=g) * 1e-41                 # fp32 subnormals
    x[5] = torch.randn(320, generator=g) * 1e38                  # near fp32's max
    x[6] = torch.arange(320) / 8.0 - 20                          # ties of many grids
    _same(x, name)
    _same(x, name, axis=0)                                       # blocks across rows (a layout copy)
    _same(_mixed(32 * 1024).reshape(-1, 64), name)
    for rule in ("ceil", "rceil"):
        if get_format(name).scale == "e8m0":
            fmt = dataclasses.replace(get_format(name), scale_rule=rule, name=f"{name}_{rule}")
            _same(x, fmt)
    for bs in (8, 48, 64):                                       # other block sizes, tails in a block
        _same(x[:, :192], name, block_size=bs)
    if get_format(name).element.kind == "int":
        _same(x, name, rounding="zero")


def test_nvfp4_without_tensor_scale():
    fmt = dataclasses.replace(get_format("nvfp4"), tensor_scale=False, name="nvfp4_nots")
    _same(torch.randn(64, 256) * 100, fmt)


@pytest.mark.parametrize("name,kw", [("fp8_e4m3", dict(scaling="tensor")), ("int4", {}), ("mxfp4", {}),
                                     ("nvfp4", {}), ("int8", dict(scaling="group", group_size=64)),
                                     ("fp6_e2m3", dict(scaling="channel", axis=0))])
def test_every_schedule_gives_the_same_bits(name, kw, monkeypatch):
    """Threads and non-temporal stores change the memory schedule, never a bit."""
    x = torch.randn(1 << 20) * torch.exp(torch.randn(1 << 20))
    x = x.reshape(1024, 1024)
    x[7, 9], x[100, 3] = float("nan"), float("inf")
    ref = quantize(x, name, backend="eager", **kw)
    threads = torch.get_num_threads()
    try:
        for nthreads in (1, 2, 3):
            torch.set_num_threads(nthreads)
            for nt_bytes in (0, 1 << 62):
                monkeypatch.setattr(native, "NT_MIN_BYTES", nt_bytes)
                monkeypatch.setattr(native, "MIN_PER_THREAD", 1 << 12)
                out = torch.full_like(x, 7.0)
                quantize(x, name, backend="native", out=out, **kw)
                assert_same(out, ref, x, f"{name} threads={nthreads} nt={nt_bytes == 0}")
                new = quantize(x, name, backend="native", **kw)          # a fresh (or reused) allocation
                assert_same(new, ref, x, f"{name} threads={nthreads} nt={nt_bytes == 0} new tensor")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name,kw", [("fp8_e4m3", dict(scaling="tensor")), ("int4", dict(scaling="channel", axis=0)),
                                     ("mxfp4", {}), ("nvfp4", {}), ("fp4_e2m1", {}),
                                     ("int8", dict(scaling="group", group_size=24))])
def test_clipped_ste_masks_match(name, kw):
    x = torch.randn(40, 96, generator=torch.Generator().manual_seed(0)) * 4
    x[0, 0] = 1e30
    x[1, :32] = torch.linspace(-7, 7, 32)  # on fp4's clip bounds (6 + half a gap), in an MX block of scale 1
    grads = []
    for backend in ("eager", "native"):
        xx = x.clone().requires_grad_(True)
        q = quantize(xx, name, backend=backend, grad="clipped", **kw)
        q.backward(torch.arange(q.numel(), dtype=torch.float32).reshape(q.shape))
        grads.append((q.detach(), xx.grad))
    assert_same(grads[1][0], grads[0][0], x, f"{name} forward")
    assert torch.equal(grads[1][1], grads[0][1]), f"{name}: clipped-STE gradients differ"
    assert (grads[1][1] == 0).any() and (grads[1][1] != 0).any()   # the mask is not trivial


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_and_layouts(dtype):
    x = (torch.randn(64, 96) * 10).to(dtype)
    for name, kw in (("fp8_e4m3", dict(scaling="tensor")), ("mxfp4", {}), ("int4", {})):
        _same(x, name, **kw)
        _same(x.t(), name, "non-contiguous", **kw)
        out = torch.empty_like(x)
        quantize(x, name, backend="native", out=out, **kw)
        assert_same(out, quantize(x, name, backend="eager", **kw), x, f"{name} out= {dtype}")
    _same(torch.randn(128, 64)[:, ::2], "nvfp4", "strided fp32")
    _same(torch.randn(0, 32), "mxfp4", "empty")
    _same(torch.tensor(3.3), "int8", "0-dim")


def test_auto_uses_native_where_it_applies_and_falls_back_elsewhere():
    x = torch.randn(64, 64)
    spec_native = quantize.__globals__["make_spec"]("fp8_e4m3", scaling="tensor")
    assert kernels._choose(x, spec_native, None, None, None, "auto") == "native"
    for name, kw in (("uint4", {}), ("fp8_e4m3", dict(rounding="stochastic")), ("bf16", {}),
                     ("nf4", {}), ("int8", dict(scaling="channel", axis=1))):
        spec = quantize.__globals__["make_spec"](name, **kw)
        noise = torch.rand_like(x) if spec.rounding == "stochastic" else None
        values = torch.tensor(spec.format.points) if spec.format.kind == "codebook" else None
        assert native.unsupported(x, spec, None, noise, values), name
        assert kernels._choose(x, spec, None, noise, values, "auto") in ("eager", "compiled")
        with pytest.raises(ValueError, match="backend='native' cannot run this call"):
            quantize(x, name, backend="native", **kw)


def test_without_a_compiler_auto_falls_back(monkeypatch, tmp_path):
    """No C++ compiler: available() says why, and auto gives the same numbers through the other kernels."""
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_broken", {})
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native_build, "compiler", lambda: None)
    with pytest.warns(UserWarning, match="native kernels unavailable"):
        assert not native.available()
    assert "no C++ compiler" in native.unavailable_reason()
    x = torch.randn(32, 64)
    want = quantize(x, "mxfp4", backend="eager")
    assert_same(quantize(x, "mxfp4"), want, x, "auto without native")
    with pytest.raises(ValueError, match="no C\\+\\+ compiler"):
        quantize(x, "mxfp4", backend="native")


def test_build_is_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_broken", {})
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    assert native.available(), native.unavailable_reason()
    libs = list((tmp_path / "native").glob("qdq_native_native_*.so"))
    assert len(libs) == 1
    stamp = libs[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_libs", {})
    assert native.available() and libs[0].stat().st_mtime_ns == stamp       # loaded, not rebuilt
    assert not [p for p in (tmp_path / "native").iterdir() if p.suffix != ".so"]   # no temporary left


def test_nvfp4_block_scales_at_e4m3_ties():
    """Block amaxes whose scale (amax / tensor scale / 6) lands on or next to every E4M3 midpoint, with
    a tensor scale that is not a power of two: the order of the two divisions matters there."""
    e4m3 = get_format("fp8_e4m3")
    v = np.asarray(e4m3.values(), dtype=np.float64)
    v = v[v > 0]
    mids = np.concatenate([(v[1:] + v[:-1]) / 2, v])
    st = np.float32(np.float32(1000.0) / np.float32(2688.0))
    a = (mids * 6 * np.float64(st)).astype(np.float32)
    a = np.concatenate([a] + [np.nextafter(a, np.float32(np.inf)) for _ in range(1)]
                       + [np.nextafter(a, np.float32(0))])
    for k in range(2, 6):                                           # a few more ulps either way
        a = np.concatenate([a, (a.view(np.int32) + k).view(np.float32), (a.view(np.int32) - k).view(np.float32)])
    a = a[(a > 0) & (a <= 1000)]
    blocks = np.random.default_rng(0).uniform(-1, 1, (a.size, 16)).astype(np.float32) * a[:, None]
    blocks[:, 0] = a
    blocks[0, 1] = 1000.0                                           # the tensor amax
    _same(t(blocks), "nvfp4")


def _fresh_build(monkeypatch, tmp_path, variants=None):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_broken", {})
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    if variants is not None:
        monkeypatch.setattr(native_build, "variants", lambda isa: variants)
    assert native.available(), native.unavailable_reason()


def test_without_openmp_the_own_pool_gives_the_same_bits(monkeypatch, tmp_path):
    """The build without -fopenmp runs on the kernels' own thread pool; also from two Python threads
    at once (the second caller runs its parts serially)."""
    import threading

    _fresh_build(monkeypatch, tmp_path, (["-march=native"], []))
    monkeypatch.setattr(native, "MIN_PER_THREAD", 1 << 10)
    x = torch.randn(512, 512) * 5
    want = {n: quantize(x, n, backend="eager") for n in ("int8", "mxfp4", "nvfp4")}
    errors = []

    def work():
        try:
            for _ in range(5):
                for n, w in want.items():
                    assert_same(quantize(x, n, backend="native"), w, x, f"{n} pool")
        except AssertionError as e:     # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(2)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("openmp", [True, False], ids=["openmp", "pool"])
def test_a_forked_child_can_use_the_kernels(monkeypatch, tmp_path, openmp):
    """After the parent used its threads, a fork()ed child (DataLoader workers, forked sweeps) still runs the
    kernels (on the own pool: GNU OpenMP hangs in such a child, torch's own ops too)."""
    import multiprocessing as mp

    if not openmp:
        _fresh_build(monkeypatch, tmp_path, (["-march=native"], []))
    monkeypatch.setattr(native, "MIN_PER_THREAD", 1 << 10)
    x = torch.randn(256, 256)
    quantize(x, "mxfp4", backend="native")                       # threads started in the parent
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(x, q))
    p.start()
    got = q.get(timeout=60)
    p.join(10)
    assert p.exitcode == 0, f"child exit code {p.exitcode}"
    assert_same(got, quantize(x, "mxfp4", backend="eager"), x, "forked child")


def _child(x, q):
    q.put(quantize(x, "mxfp4", backend="native").numpy())


def test_huge_page_outputs_change_no_bit(monkeypatch):
    """Fresh outputs on transparent huge pages (where the system grants them on request) are only an
    allocation choice: the same bits, in every mode."""
    monkeypatch.setattr(native, "_HUGE", True)
    monkeypatch.setattr(native, "HUGE_MIN_BYTES", 0)
    x = torch.randn(1024, 1024) * 3
    for name, kw in (("fp8_e4m3", dict(scaling="tensor")), ("mxfp4", {}), ("nvfp4", {})):
        _same(x, name, **kw)
    q = torch.empty(1 << 20)
    assert native._load().lowbit_advise_huge(q.data_ptr(), q.numel() * 4) in (0, -1)   # -1: THP not built in


@pytest.mark.parametrize("name,kw", [("fp8_e4m3", dict(scaling="tensor")), ("fp4_e2m1", {}), ("int8", {}),
                                     ("int4", dict(scaling="channel", axis=0)), ("mxfp4", dict(axis=1)),
                                     ("int8", dict(scaling="group", group_size=8, axis=1))])
def test_layout_is_the_eager_one(name, kw):
    """Results (and the clipped-STE mask, through the gradient) keep the input's memory layout as the
    eager kernels do: a BatchNorm reduces in memory order, so another layout rounds differently."""
    x = torch.randn(4, 32, 6, 6) * 3
    for layout in (x.to(memory_format=torch.channels_last), x.transpose(2, 3), x[:, :, ::2]):
        got = []
        for backend in ("eager", "native"):
            xx = layout.clone(memory_format=torch.preserve_format).requires_grad_(True)
            q = quantize(xx, name, backend=backend, grad="clipped", **kw)
            q.backward(torch.ones_like(q))
            got.append((q, xx.grad))
        (qe, ge), (qn, gn) = got
        assert qn.stride() == qe.stride(), f"{name} {kw}: strides {qn.stride()} != eager {qe.stride()}"
        assert gn.stride() == ge.stride()
        assert_same(qn, qe, layout, f"{name} {kw} layout")
        assert torch.equal(gn, ge)


def test_training_steps_equal_the_eager_ones():
    """A quantized CNN with BatchNorm, trained a few SGD steps with either backend: the same weights, bit
    for bit (a layout difference once made the BatchNorm after a quantized activation round differently)."""
    from lowbit.models import create_model
    from lowbit.nn import quantize_model, recipe_for_precision

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    x = torch.empty_strided(x.shape, (64, 1, 8, 1)).copy_(x)   # the strides digits batches arrive with:
                                                                # the convs then go channels_last
    weights = {}
    for backend in ("eager", "native"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LOWBIT_BACKEND", backend)
            torch.manual_seed(0)
            model = quantize_model(create_model("cnn", in_chans=1, img_size=8), recipe_for_precision("fp8_e4m3")).model
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            for _ in range(3):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            weights[backend] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(weights["eager"], weights["native"]):
        assert_same(b, a, None, "weights after 3 steps")

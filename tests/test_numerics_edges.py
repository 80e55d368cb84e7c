"""Numeric edge cases checked against independent oracles (issue 14).

* unsigned (zero-point) integers: q = clamp(round(x / s) + z, 0, qmax), as torch's
  fake_quantize_per_{tensor,channel}_affine and onnxruntime's QuantizeLinear -> DequantizeLinear;
* empty tensors on every path (eager, compiled, native, encode/decode);
* the compiled backend stays compiled over tensors of many ranks (Dynamo's recompile limit);
* tensors so small that amax / max_fmt is an fp32 subnormal or underflows: a float64 oracle of the
  documented scale rule, and pow2_scale exact on subnormal scales;
* ``values()`` on every format.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import assert_same
from lowbit import decode, encode, get_format, quantize
from lowbit.formats.reference import reference_cast
from lowbit.formats.registry import list_formats
from lowbit.ops import kernels, native

UINTS = [f"uint{b}" for b in range(2, 9)]


def _data(n, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * scale + shift


# ---- unsigned integers: round(x / s) + z ----------------------------------------------------------
def test_uint2_rounds_before_adding_the_zero_point():
    x = torch.tensor([-1.0, 2.0, 0.5, 1.5, -0.5])      # s = (2 - -1) / 3 = 1, z = round(1 / 1) = 1
    enc = encode(x, "uint2")
    assert [float(t) for t in enc.scale] == [1.0, 1.0]
    assert enc.codes.tolist() == [0, 3, 1, 3, 1]          # round([-1, 2, .5, 1.5, -.5]) + 1, ties to even
    for backend in ("eager", "compiled"):
        assert quantize(x, "uint2", backend=backend).tolist() == [-1.0, 2.0, 0.0, 2.0, 0.0]
    assert decode(enc).tolist() == [-1.0, 2.0, 0.0, 2.0, 0.0]


@pytest.mark.parametrize("name", UINTS)
@pytest.mark.parametrize("shift", [0.0, 0.7, -2.5])
def test_uint_per_tensor_matches_torch_fake_quantize(name, shift):
    fmt = get_format(name)
    x = _data(200_000, fmt.bits, 1.0, shift)
    s, z = encode(x, name).scale
    want = torch.fake_quantize_per_tensor_affine(x, float(s), int(z), 0, fmt.qmax)
    assert_same(quantize(x, name, backend="eager"), want, x, f"{name} per tensor vs torch")
    # a given (scale, zero point), also off the computed grid: ties land elsewhere. torch multiplies by
    # fp32(1 / s) where lowbit (and ONNX) divide: compare where the two quotients are the same fp32
    for sg, zg in ((0.37, 1), (2.0 ** -3, fmt.qmax // 2), (1.0, 0)):
        want = torch.fake_quantize_per_tensor_affine(x, sg, zg, 0, fmt.qmax)
        got = quantize(x, name, scale=(torch.tensor(sg), torch.tensor(float(zg))), backend="eager")
        same_quotient = (x / sg) == (x * (1.0 / torch.tensor(sg)))
        assert same_quotient.float().mean() > 0.5
        assert_same(got[same_quotient], want[same_quotient], x[same_quotient], f"{name} s={sg} z={zg} vs torch")


@pytest.mark.parametrize("name", UINTS)
@pytest.mark.parametrize("axis", [0, 1])
def test_uint_per_channel_matches_torch_fake_quantize(name, axis):
    fmt = get_format(name)
    g = torch.Generator().manual_seed(fmt.bits)
    x = torch.randn(12, 3000, generator=g) * torch.linspace(0.01, 5, 12)[:, None] + 0.3
    x = x if axis == 0 else x.T.contiguous()
    s, z = encode(x, name, scaling="channel", axis=axis).scale
    want = torch.fake_quantize_per_channel_affine(x, s.reshape(-1), z.reshape(-1).to(torch.int32), axis,
                                                   0, fmt.qmax)
    got = quantize(x, name, scaling="channel", axis=axis, backend="eager")
    assert_same(got, want, x, f"{name} per channel axis {axis} vs torch")


def _ort_qdq(x: np.ndarray, scale, zp, dtype: int, opset: int, axis=None) -> np.ndarray:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    scale = np.asarray(scale, np.float32)
    dtype = getattr(TensorProto, dtype)
    zp_t = helper.make_tensor("zp", dtype, list(scale.shape), np.asarray(zp).reshape(-1).astype(int).tolist())
    kw = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], **kw),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **kw)]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        initializer=[numpy_helper.from_array(scale, "s"), zp_t])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # an onnxruntime build without this integer type
        pytest.skip(f"onnxruntime cannot run QuantizeLinear for this type: {str(exc).splitlines()[0]}")
    return sess.run(None, {"x": x})[0]


ORT_TYPES = [("uint8", "UINT8", 13), ("uint4", "UINT4", 21), ("uint16", "UINT16", 21), ("uint2", "UINT2", 25)]


@pytest.mark.parametrize("name,dtype,opset", ORT_TYPES)
def test_uint_matches_onnxruntime_quantize_linear(name, dtype, opset):
    fmt = get_format(name)
    x = _data(50_000, 7, 3.0, 0.4)
    s, z = encode(x, name).scale
    want = _ort_qdq(x.numpy(), float(s), int(z), dtype, opset)
    assert_same(quantize(x, name, backend="eager"), want, x, f"{name} vs onnxruntime")
    # an odd scale and zero point: x / s ties and near-ties away from the computed grid
    got = quantize(x, name, scale=(torch.tensor(0.31), torch.tensor(float(fmt.qmax // 3))), backend="eager")
    assert_same(got, _ort_qdq(x.numpy(), 0.31, fmt.qmax // 3, dtype, opset), x, f"{name} s=0.31 vs onnxruntime")


def test_uint8_per_axis_matches_onnxruntime():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 500, generator=g) * torch.arange(1, 7)[:, None] - 0.5
    s, z = encode(x, "uint8", scaling="channel", axis=0).scale
    want = _ort_qdq(x.numpy(), s.reshape(-1).numpy(), z.reshape(-1).numpy(), "UINT8", 13, axis=0)
    assert_same(quantize(x, "uint8", scaling="channel", axis=0), want, x, "uint8 per axis vs onnxruntime")


@pytest.mark.parametrize("name", ["uint2", "uint4", "uint8"])
@pytest.mark.parametrize("kw", [{}, {"scaling": "channel", "axis": 0}, {"scaling": "group", "group_size": 8}])
def test_uint_paths_agree(name, kw):
    x = _data(64 * 96, 11, 2.0, 0.5).reshape(64, 96)
    eager = quantize(x, name, backend="eager", **kw)
    assert_same(quantize(x, name, backend="compiled", **kw), eager, x, "compiled")
    assert_same(quantize(x, name, backend="auto", **kw), eager, x, "auto")
    assert_same(decode(encode(x, name, **kw)), eager, x, "decode(encode)")
    # the native kernels do not cover zero points: auto must not take them (they would differ)
    spec = __import__("lowbit").QuantSpec(name, **kw)
    assert "asymmetric" in native.unsupported(x, spec, None, None, None)


# ---- empty tensors --------------------------------------------------------------------------------
EMPTY_CASES = [("int8", {}), ("int8", {"scaling": "channel", "axis": 0}), ("int4", {"scaling": "group",
               "group_size": 4, "pad": True}), ("uint4", {}), ("uint4", {"scaling": "channel", "axis": 0}),
               ("fp8_e4m3", {}), ("fp8_e4m3", {"scaling": "tensor"}), ("fp8_e4m3", {"scaling": "channel"}),
               ("nf4", {}), ("nvfp4", {"pad": True}), ("mxfp8_e4m3", {"pad": True}), ("mxint8", {"pad": True}),
               ("int8", {"rounding": "stochastic"}), ("fp4_e2m1", {"rounding": "stochastic", "scaling": "tensor"}),
               ("int8", {"scaling": "tensor", "pow2_scale": True})]


@pytest.mark.parametrize("shape", [(0,), (0, 4), (4, 0)])
@pytest.mark.parametrize("name,kw", EMPTY_CASES)
def test_empty_tensors(shape, name, kw):
    x = torch.empty(shape)
    for backend in ("eager", "compiled", "auto"):
        q = quantize(x, name, backend=backend, **kw)
        assert q.shape == x.shape and q.dtype == x.dtype
    xg = x.clone().requires_grad_(True)
    q = quantize(xg, name, grad="clipped", **kw)
    q.sum().backward()
    assert xg.grad.shape == x.shape
    enc = encode(x, name, **kw)
    assert enc.codes.shape == x.shape and decode(enc).shape == x.shape


# ---- the compiled backend over many ranks ---------------------------------------------------------
def test_compiled_stays_compiled_for_ranks_1_to_9():
    from torch._dynamo.utils import counters

    for kw in ({"scaling": "channel", "axis": 0}, {"scaling": "tensor"}):
        for rank in range(1, 10):
            x = _data(3 ** (rank - 1) * 16, rank).reshape(*([3] * (rank - 1)), 16)
            before = counters["stats"]["unique_graphs"]
            got = quantize(x, "int8", backend="compiled", **kw)   # fullgraph: a recompile-limit hit raises
            assert counters["stats"]["unique_graphs"] > before, f"rank {rank} was not compiled"
            assert_same(got, quantize(x, "int8", backend="eager", **kw), x, f"rank {rank} {kw}")
    assert kernels._compile_broken is None


# ---- tiny tensors: scales in fp32's subnormal range -----------------------------------------------
def _contract_scale(amax: float, fmax: float) -> float:
    """The documented rule (lowbit.ops.scaling.ratio_scale), in float64: nearest fp32 where normal,
    else the next multiple of 2^-149 up (at least 2^-149); 1 for amax = 0."""
    if amax == 0:
        return 1.0
    q = amax / fmax
    s32 = float(np.float32(q))
    if s32 >= 2.0 ** -126:
        return s32
    return max(1, math.ceil(q / 2.0 ** -149)) * 2.0 ** -149


def _tiny_oracle(x: np.ndarray, name: str, pow2: bool) -> np.ndarray:
    fmt = get_format(name)
    amax = float(np.abs(x.astype(np.float64)).max())
    s = _contract_scale(amax, fmt.max)
    if pow2:
        s = min(2.0 ** math.ceil(math.log2(s)), 2.0 ** 127)
    y = (x.astype(np.float64) / s).astype(np.float32)          # the fp32 division x / s
    return (reference_cast(y, fmt) * s).astype(np.float32)     # q * s, rounded once to fp32


def test_tiny_tensor_golden_values():
    x = torch.tensor([1e-43, -5e-44])                          # 71 and -36 times 2^-149
    assert quantize(x, "fp8_e4m3", scaling="tensor").tolist() == [72 * 2.0 ** -149, -36 * 2.0 ** -149]
    x = torch.tensor([1e-37, 3e-38])                           # s = 2^-129 (was 2^-126: off by 6-18%)
    enc = encode(x, "int8", pow2_scale=True)
    assert enc.scale.item() == 2.0 ** -129 and enc.codes.tolist() == [68, 20]
    got = quantize(x, "int8", pow2_scale=True).double()
    assert ((got - x.double()).abs() <= 2.0 ** -130).all(), got   # within half a step


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "int8", "int4", "fp6_e2m3"])
@pytest.mark.parametrize("magnitude", [1e-36, 1e-39, 1e-41, 1e-43, 3e-45])
@pytest.mark.parametrize("pow2", [False, True])
def test_tiny_tensors_match_float64_oracle(name, magnitude, pow2):
    x = (_data(4096, 3) * magnitude).numpy()
    x = x[np.abs(x) > 0] if (np.abs(x) > 0).any() else np.array([2.0 ** -149], np.float32)
    xt = torch.from_numpy(x.copy())
    want = _tiny_oracle(x, name, pow2)
    for backend in ("eager", "compiled", "native"):
        got = quantize(xt, name, scaling="tensor", pow2_scale=pow2, backend=backend)
        assert_same(got, want, x, f"{name} x~{magnitude:g} pow2={pow2} {backend}")
    assert_same(decode(encode(xt, name, scaling="tensor", pow2_scale=pow2)), want, x, "decode(encode)")
    assert (want != 0).any()                                   # not flushed


@pytest.mark.parametrize("name", ["fp8_e4m3", "int8"])
def test_tiny_channel_and_group_scales_agree_across_paths(name):
    x = (_data(8 * 64, 9).reshape(8, 64) * torch.logspace(-46, -36, 8)[:, None]).float()
    for kw in ({"scaling": "channel", "axis": 0}, {"scaling": "group", "group_size": 16},
               {"scaling": "channel", "axis": 0, "pow2_scale": True}):
        eager = quantize(x, name, backend="eager", **kw)
        for backend in ("compiled", "native"):
            assert_same(quantize(x, name, backend=backend, **kw), eager, x, f"{name} {kw} {backend}")
        rows = [_tiny_oracle(r.numpy(), name, kw.get("pow2_scale", False)) for r in x] \
            if kw["scaling"] == "channel" else None
        if rows is not None:
            assert_same(eager, np.stack(rows), x, f"{name} {kw} vs float64 oracle")


def test_tiny_nvfp4_is_not_flushed():
    x = torch.tensor([1e-43, -5e-44] * 8)
    for backend in ("eager", "native"):
        q = quantize(x, "nvfp4", backend=backend)
        assert q[0].item() > 0 and q[1].item() < 0
        assert abs(q[0].item() - 1e-43) < 0.1e-43


def test_uint_tiny_range_is_not_flushed():
    x = torch.tensor([1e-44, -3e-44, 2e-44])
    q = quantize(x, "uint8")
    assert (q != 0).all() and torch.allclose(q.double(), x.double(), rtol=0.1, atol=0)


# ---- values() -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in list_formats() if n != "fp32"])
def test_values_method_on_every_format(name):
    fmt = get_format(name)
    v = fmt.values()
    assert isinstance(v, np.ndarray) and v.dtype == np.float64 and len(v) >= 2
    assert (np.diff(v) > 0).all() and np.isfinite(v).all()
    assert not np.signbit(v[v == 0]).any()                     # one zero, +0


def test_codebook_values_are_its_points():
    nf4 = get_format("nf4")
    assert nf4.values().tolist() == list(nf4.points) and len(nf4.points) == 16
    with pytest.raises(ValueError, match="32 bits"):
        get_format("fp32").values()

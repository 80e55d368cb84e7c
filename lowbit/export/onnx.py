"""ONNX export of a quantized model with QuantizeLinear / DequantizeLinear (QDQ) nodes.

    qmodel = quantize_ptq(model, "int8", "int8", calib_x).model     # or quantize_model(...)
    info = export_onnx(qmodel, "model.onnx", example_input, calib_x=calib_x)
    check = compare_onnx("model.onnx", info.model, x)              # max |onnxruntime - PyTorch|

How: the model is traced by :mod:`lowbit.export.trace` (torch.fx; quantized layers and torch.nn modules are leaves) and the
ONNX graph is built node by node with ``onnx.helper`` (opset 21), so no part of torch.onnx is needed.
Supported graph ops: QLinear / nn.Linear (MatMul + Add), QConv2d / nn.Conv2d (Conv; groups, stride,
padding, dilation; zero padding), BatchNorm1d/2d (eval statistics), ReLU / ReLU6 / LeakyReLU /
Sigmoid / Tanh / GELU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten / ``flatten``, ``+``,
Identity and Dropout (dropped). Anything else is an error naming the node.

Quantizers:

* weights: stored QUANTIZED as initializers of the ONNX element type (int8, uint8, int4, uint4,
  int16, uint16, float8e4m3fn, float8e5m2) plus a DequantizeLinear with the scale (per tensor, or
  per output channel with ``axis=0``; zero point for unsigned integers). DequantizeLinear computes
  ``(code - zp) * scale`` in fp32, exactly what ``lowbit.decode`` does: the dequantized weights are
  bit-identical to the fake-quantized ones (tested). Direct casts (fp8 with scaling 'none') get
  scale 1.
* activations (a layer's input / output quantizer): QuantizeLinear + DequantizeLinear with a
  per-tensor scale. A calibrated (``lowbit.ptq``) fixed scale is used as is. A DYNAMIC per-tensor
  spec (``quantize_model``: the scale is recomputed from every batch) cannot be expressed in a
  static graph: :func:`freeze_activation_scales` replaces it (on a copy) by a fixed scale computed
  from calibration data exactly as lowbit computes a dynamic one (``amax / format max`` with amax
  over ALL calibration samples); the ONNX file matches that frozen model, which ``export_onnx``
  returns. Without calibration data such a model is an error.

Formats: int8, uint8, int4, uint4, int16, uint16 (opset 21), fp8_e4m3 (FLOAT8E4M3FN) and fp8_e5m2
(FLOAT8E5M2) (opset 19+). ONNX has no type for fp6, e2m0/e1m0 or codebooks, and onnxruntime (CPU)
runs no FLOAT4E2M1 QDQ, no MX and no NVFP4 (blocked scales of E8M0 / E4M3 type): those are a one-line
error naming the format and the allowed ones. Group-wise weights of int4 / uint4 / int8 / uint8
(``scaling='group'``, any axis, ``pad=True`` allowed) become a blocked DequantizeLinear (opset 21
``axis`` + ``block_size``; the scale tensor is the weight's shape with that axis cut to n_groups);
block formats (MX) and group-scaled activations are rejected.

Layouts: ``layout='deploy'`` (default) places Q/DQ as onnxruntime / TensorRT fuse them (around each
quantized op, int32 bias, Gemm; see :mod:`lowbit.export.onnx_deploy`, fold BatchNorm first with
``fold_batchnorm``); ``layout='simulate'`` puts Q/DQ only where lowbit quantizes (layer inputs).

Numerics vs PyTorch: QuantizeLinear rounds ``x / scale`` half to even and saturates, as lowbit's
'nearest' rounding does; for unsigned formats lowbit rounds ``x / s + zp`` and ONNX ``x / s`` then
adds ``zp``, which differs only at exact ties when ``zp`` is odd. Convolutions and matmuls
accumulate in a different order, so outputs agree to float rounding (about 1e-5 relative), not bit
for bit; a tensor that lands on a rounding tie of the next activation quantizer can then move by
one quantization step. ``compare_onnx(optimize=False)`` runs onnxruntime with graph optimizations
disabled; with ``optimize=True`` its integer kernels requantize with their own fixed-point
multipliers, so outputs may move by a quantization step (accuracy equal to within one test image
on digits, tested in tests/test_export_onnx_deploy.py).
"""
from __future__ import annotations

import copy
import operator
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .trace import trace

OPSET = 21

# lowbit format name -> (onnx TensorProto attribute name, minimum opset)
ONNX_TYPES = {"int8": ("INT8", 10), "uint8": ("UINT8", 10), "int4": ("INT4", 21), "uint4": ("UINT4", 21),
              "int16": ("INT16", 21), "uint16": ("UINT16", 21), "fp8_e4m3": ("FLOAT8E4M3FN", 19),
              "fp8_e5m2": ("FLOAT8E5M2", 19)}
ALLOWED = ", ".join(ONNX_TYPES)


def check_format(fmt, where: str = "") -> str:
    """The ONNX element type name of lowbit format ``fmt`` (name or object), else a one-line ValueError."""
    from lowbit.formats.registry import get_format
    f = get_format(fmt) if isinstance(fmt, str) else fmt
    if f.name not in ONNX_TYPES:
        if f.name == "fp4_e2m1":
            why = "ONNX has FLOAT4E2M1 (opset 23) but onnxruntime (CPU) has no Quantize/DequantizeLinear kernel for it"
        else:
            why = f"ONNX has no QDQ element type onnxruntime runs for this {f.label} format"
        raise ValueError(f"format {f.name!r} cannot be exported to ONNX{' (' + where + ')' if where else ''}: {why}; "
                         f"allowed: {ALLOWED}")
    return ONNX_TYPES[f.name][0]


class UnsupportedOpError(ValueError):
    """A layer or operation the hand-built graph has no ONNX rule for (``lowbit.export.onnx_traced``
    exports such models through torch.onnx.export)."""


@dataclass
class OnnxInfo:
    path: str
    model: nn.Module                 # the model the ONNX graph matches (activation scales frozen)
    opset: int
    nodes: dict = field(default_factory=dict)     # op type -> count
    weights: list = field(default_factory=list)   # (layer, format, scaling)
    acts: list = field(default_factory=list)      # (tensor, format, scale)


# ---- activation scales ------------------------------------------------------------------------
def _is_dynamic(q) -> bool:
    return q is not None and type(q).__name__ in ("FakeQuantizer",)


@torch.no_grad()
def freeze_activation_scales(model: nn.Module, calib_x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """A copy of ``model`` whose dynamic per-tensor activation quantizers (input / output quantizers of
    quantized layers) are :class:`lowbit.ptq.CalibratedQuantizer` with the scale lowbit would compute
    from the amax over all of ``calib_x`` (see the module docstring)."""
    from lowbit.nn.modules import QuantLayer
    from lowbit.nn.walker import walk
    from lowbit.ops.scaling import element_scale
    from lowbit.ptq import CalibratedQuantizer
    model = copy.deepcopy(model).eval()
    slots = [(li.module, s) for li in walk(model) if isinstance(li.module, QuantLayer)
             for s in ("input_quantizer", "output_quantizer") if _is_dynamic(getattr(li.module, s, None))]
    if not slots:
        return model
    for m, s in slots:
        spec = getattr(m, s).spec
        if spec.scaling != "tensor" and not (spec.scaling == "none" and spec.format.direct_cast_ok):
            raise ValueError(f"activation {spec.format.name}/{spec.scaling} cannot be exported to ONNX; allowed: "
                             f"per-tensor scaling ('tensor'), or a direct fp8 cast ('none')")
    amax = {id(m) * 2 + (s == "output_quantizer"): torch.tensor(0.0) for m, s in slots}
    handles = []

    def obs(key, x):
        xf = x.detach().float()
        xf = xf[torch.isfinite(xf)]
        if xf.numel():
            amax[key] = torch.maximum(amax[key], xf.abs().max())

    for m, s in slots:
        key = id(m) * 2 + (s == "output_quantizer")
        if s == "input_quantizer":
            handles.append(m.register_forward_pre_hook(lambda mod, a, k=key: obs(k, a[0])))
        else:
            handles.append(getattr(m, s).register_forward_pre_hook(lambda mod, a, k=key: obs(k, a[0])))
    try:  # amax of the inputs as the model runs them (earlier activation quantizers still dynamic)
        for i in range(0, len(calib_x), batch_size):
            model(calib_x[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    for m, s in slots:
        spec = getattr(m, s).spec
        key = id(m) * 2 + (s == "output_quantizer")
        if spec.scaling == "none":
            setattr(m, s, CalibratedQuantizer(spec, None))
        else:
            setattr(m, s, CalibratedQuantizer(spec, element_scale(amax[key], spec.format, spec.pow2_scale)))
    return model


# ---- graph building ----------------------------------------------------------------------------
class _Builder:
    def __init__(self):
        import onnx  # noqa: F401
        self.nodes, self.inits, self.n = [], [], 0
        self.counts: dict = {}
        self.deploy, self.post, self.skip, self.ranks = False, {}, set(), {}

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def node(self, op, inputs, name=None, **attrs):
        from onnx import helper
        out = self.name(name or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.counts[op] = self.counts.get(op, 0) + 1
        return out

    def const(self, arr, base="c"):
        from onnx import numpy_helper
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def raw(self, base, dtype_name, dims, data: bytes):
        from onnx import TensorProto, helper
        name = self.name(base)
        self.inits.append(helper.make_tensor(name, getattr(TensorProto, dtype_name), list(dims), data, raw=True))
        return name


def _zero_point(b: _Builder, fmt, zp=None, shape=()):
    """A zero-point initializer of the format's ONNX type (fixes the QuantizeLinear output type)."""
    import lowbit
    tname = check_format(fmt)
    n = int(np.prod(shape)) if shape else 1
    if zp is None:
        codes = torch.zeros(n, dtype=torch.int64)
    else:
        codes = torch.as_tensor(zp).reshape(-1).round().to(torch.int64)
        if not torch.equal(codes.double(), torch.as_tensor(zp).reshape(-1).double()):
            raise ValueError("a non-integer zero point cannot be exported to ONNX")
    codes = codes & (fmt.n_codes - 1)  # two's complement pattern for signed formats (0 stays 0)
    data = lowbit.pack(codes.to(torch.int32), fmt.bits).numpy().tobytes()
    return b.raw("zp", tname, list(shape), data)


def _scale_of(fixed, spec, channels=None):
    """(scale array fp32, zero point or None) as 1-D (channel) or scalar."""
    if isinstance(fixed, tuple):
        s, zp = fixed
    else:
        s, zp = fixed, None
    s = s.detach().float().reshape(-1)
    if spec.scaling == "channel":
        return s.numpy(), (None if zp is None else zp.detach().reshape(-1))
    return s.reshape(()).numpy(), (None if zp is None else zp.detach().reshape(()))


def _weight(b: _Builder, w: torch.Tensor, q, layer: str, info: OnnxInfo):
    """Initializer(s) + DequantizeLinear of a quantized weight; returns the fp32 tensor name."""
    import lowbit
    from lowbit.nn.packing import encode_weight
    if q is None:
        return b.const(w.detach().float().numpy(), "w")
    if type(q).__name__ not in ("WeightQuantizer", "FakeQuantizer", "CalibratedQuantizer"):
        raise ValueError(f"layer {layer!r}: weight quantizer {type(q).__name__} cannot be exported to ONNX; allowed: "
                         f"WeightQuantizer (quantize_model) or CalibratedQuantizer (lowbit.ptq)")
    spec = q.spec
    tname = check_format(spec.format, f"weights of {layer}")
    grouped = spec.scaling == "group" and spec.format.name in GROUP_FORMATS
    if not grouped and (spec.scaling not in ("tensor", "channel", "none")
                        or (spec.scaling == "channel" and spec.axis % w.dim() != 0)):
        raise ValueError(f"layer {layer!r}: weight scaling {spec.scaling!r} (axis {spec.axis}, {spec.format.name}) "
                         f"cannot be exported to ONNX; allowed: 'tensor', 'channel' on axis 0, 'none', or 'group' "
                         f"for {', '.join(GROUP_FORMATS)} (blocked DequantizeLinear)")
    if spec.scaling == "none" and not spec.format.direct_cast_ok:
        raise ValueError(f"layer {layer!r}: unscaled integer weights are not exported; allowed: 'tensor' or 'channel'")
    if spec.rounding == "stochastic":
        raise ValueError(f"layer {layer!r}: stochastic rounding cannot be exported; allowed: nearest, zero")
    enc = encode_weight(w, q)
    f = spec.format
    data = lowbit.pack(enc.codes.reshape(-1).to(torch.int32), f.bits).numpy().tobytes()
    codes = b.raw("wq", tname, list(w.shape), data)
    attrs = {}
    if enc.scale is None:
        scale, zp = np.array(1.0, dtype=np.float32), None
    elif grouped:
        scale, zp, attrs = _group_scale(enc.scale, spec, w.dim())
    else:
        scale, zp = _scale_of(enc.scale, spec)
    if spec.scaling == "channel":
        attrs["axis"] = 0
    inputs = [codes, b.const(scale.astype(np.float32), "wscale")]
    if zp is not None or (b.deploy and f.name.startswith(("int", "uint"))):  # onnxruntime's QGemm fusion needs it
        inputs.append(_zero_point(b, f, zp, list(scale.shape)))
    info.weights.append((layer, f.name, spec.scaling))
    return b.node("DequantizeLinear", inputs, f"{layer}.weight_dq", **attrs)


GROUP_FORMATS = ("int4", "uint4", "int8", "uint8")   # blocked (block_size) DequantizeLinear, opset 21


def _group_scale(fixed, spec, ndim):
    """Group scales laid out as ONNX's blocked DequantizeLinear wants them: the weight's shape with
    the grouped axis cut to n_groups (lowbit keeps them as (other dims..., n_groups, 1), axis last)."""
    s, zp = fixed if isinstance(fixed, tuple) else (fixed, None)
    axis = spec.axis % ndim

    def lay(t):
        return t.detach().squeeze(-1).movedim(-1, axis).contiguous()
    scale = lay(s).float().numpy()
    return scale, (None if zp is None else lay(zp)), {"axis": axis, "block_size": spec.group_size}


def _bias(b: _Builder, m: nn.Module, layer: str) -> str:
    """The bias input: int32 codes + DequantizeLinear (scale s_in * s_w) in the deploy layout when
    the layer's formats allow it (:func:`lowbit.export.onnx_deploy.quantize_bias`), else fp32."""
    from .onnx_deploy import quantize_bias
    qb = quantize_bias(m) if b.deploy else None
    if qb is None:
        return b.const(m.bias.detach().float().numpy(), "b")
    codes, scale, axis = qb
    return b.node("DequantizeLinear", [b.const(codes, "bq"), b.const(scale.astype(np.float32), "bscale")],
                  f"{layer}.bias_dq", axis=axis)


def _act(b: _Builder, x: str, q, where: str, info: OnnxInfo):
    """QuantizeLinear + DequantizeLinear of an activation with a fixed per-tensor scale."""
    if q is None:
        return x
    spec = q.spec
    check_format(spec.format, where)
    if type(q).__name__ != "CalibratedQuantizer":
        raise ValueError(f"{where}: quantizer {type(q).__name__} has no fixed scale; freeze it first "
                         f"(freeze_activation_scales / pass calibration data)")
    fixed = q.fixed_scale()
    if fixed is None:
        if not (spec.scaling == "none" and spec.format.direct_cast_ok):
            raise ValueError(f"{where}: activation {spec.format.name}/{spec.scaling} cannot be exported; allowed: a "
                             f"per-tensor scale")
        scale, zp = np.array(1.0, dtype=np.float32), None
    else:
        if spec.scaling != "tensor" or (isinstance(fixed, torch.Tensor) and fixed.numel() != 1):
            raise ValueError(f"{where}: activation scaling {spec.scaling!r} cannot be exported; allowed: 'tensor'")
        scale, zp = _scale_of(fixed, spec)
    s = b.const(scale.astype(np.float32), "ascale")
    z = _zero_point(b, spec.format, zp)
    info.acts.append((where, spec.format.name, float(scale)))
    qx = b.node("QuantizeLinear", [x, s, z], "a_q")
    return b.node("DequantizeLinear", [qx, s, z], "a_dq")


SUPPORTED = ("Linear", "Conv2d", "BatchNorm1d/2d", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "GELU",
             "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d(1)", "Flatten", "Identity", "Dropout", "add")


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _module(b: _Builder, m: nn.Module, x: str, target: str, info: OnnxInfo) -> str:
    from lowbit.nn.modules import QuantLayer
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        wq = m.weight_quantizer if isinstance(m, QuantLayer) else None
        if isinstance(m, QuantLayer) and target not in b.skip:
            x = _act(b, x, m.input_quantizer, f"input of {target}", info)
        bias = _bias(b, m, target) if m.bias is not None else None
        if isinstance(m, nn.Linear) and b.deploy and b.ranks.get(target) == 2:
            w = _weight(b, m.weight, wq, target, info)
            y = b.node("Gemm", [x, w] + ([bias] if bias else []), transB=1)
        elif isinstance(m, nn.Linear):
            w = _weight(b, m.weight, wq, target, info)
            y = b.node("MatMul", [x, b.node("Transpose", [w], "wt", perm=[1, 0])])
            if bias:
                y = b.node("Add", [y, bias])
        else:
            w = _weight(b, m.weight, wq, target, info)
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise ValueError(f"layer {target!r}: padding {m.padding!r}/{m.padding_mode} is not exported; allowed: "
                                 f"numeric zero padding")
            ins = [x, w] + ([bias] if bias else [])
            p = _pair(m.padding)
            y = b.node("Conv", ins, kernel_shape=list(m.kernel_size), strides=_pair(m.stride), pads=p + p,
                       dilations=_pair(m.dilation), group=m.groups)
        if isinstance(m, QuantLayer):
            y = _act(b, y, m.output_quantizer, f"output of {target}", info)
        if target in b.post:
            q, consumer = b.post[target]
            y = _act(b, y, q, f"input of {consumer} (after {target})", info)
        return y
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.training or m.running_mean is None:
            raise ValueError(f"layer {target!r}: BatchNorm must be in eval mode with running statistics")
        c = m.num_features
        g = m.weight.detach() if m.affine else torch.ones(c)
        bb = m.bias.detach() if m.affine else torch.zeros(c)
        ins = [x] + [b.const(t.float().numpy(), "bn") for t in (g, bb, m.running_mean, m.running_var)]
        return b.node("BatchNormalization", ins, epsilon=float(m.eps))
    if isinstance(m, nn.ReLU):
        return b.node("Relu", [x])
    if isinstance(m, nn.ReLU6):
        return b.node("Clip", [x, b.const(np.array(0.0, np.float32)), b.const(np.array(6.0, np.float32))])
    if isinstance(m, nn.LeakyReLU):
        return b.node("LeakyRelu", [x], alpha=float(m.negative_slope))
    if isinstance(m, nn.Sigmoid):
        return b.node("Sigmoid", [x])
    if isinstance(m, nn.Tanh):
        return b.node("Tanh", [x])
    if isinstance(m, nn.GELU):
        return b.node("Gelu", [x], approximate=m.approximate)  # Gelu: opset 20
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or m.return_indices:
            raise ValueError(f"layer {target!r}: MaxPool2d ceil_mode/return_indices is not exported")
        p = _pair(m.padding)
        return b.node("MaxPool", [x], kernel_shape=_pair(m.kernel_size), strides=_pair(m.stride or m.kernel_size),
                      pads=p + p, dilations=_pair(m.dilation))
    if isinstance(m, nn.AvgPool2d):
        p = _pair(m.padding)
        return b.node("AveragePool", [x], kernel_shape=_pair(m.kernel_size), strides=_pair(m.stride or m.kernel_size),
                      pads=p + p, count_include_pad=int(m.count_include_pad), ceil_mode=int(m.ceil_mode))
    if isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == [1, 1]:
        return b.node("GlobalAveragePool", [x])
    if isinstance(m, nn.Flatten):
        if m.end_dim != -1:
            raise ValueError(f"layer {target!r}: Flatten(end_dim={m.end_dim}) is not exported; allowed: end_dim=-1")
        return b.node("Flatten", [x], axis=m.start_dim)
    raise UnsupportedOpError(f"layer {target!r} ({type(m).__name__}) cannot be exported to ONNX; "
                     f"allowed: {', '.join(SUPPORTED)}")


def _hooked(model):
    return [n for n, m in model.named_modules() if type(m).__name__ == "HookQuantizers"]


LAYOUTS = ("deploy", "simulate")


def build_graph(model: nn.Module, example: torch.Tensor, info: OnnxInfo, layout: str = "deploy"):
    """The onnx.ModelProto of ``model`` (eval mode, fixed activation scales). ``layout``: 'deploy'
    (Q/DQ around each quantized op, int32 bias, Gemm: :mod:`lowbit.export.onnx_deploy`; MODIFIES the
    biases of ``model`` to their int32-rounded values) or 'simulate' (Q/DQ only where lowbit quantizes)."""
    import onnx
    from onnx import TensorProto, helper

    hooked = _hooked(model)
    if hooked:
        raise ValueError(f"quantizers on non-weight layers ({hooked[0].rsplit('.', 1)[0]}) are not exported; allowed: "
                         f"weight / input / output quantizers of Linear and Conv2d layers")
    graph = trace(model, UnsupportedOpError).graph
    mods = dict(model.named_modules())
    b = _Builder()
    if layout not in LAYOUTS:
        raise ValueError(f"ONNX layout {layout!r} is not allowed; allowed: {', '.join(LAYOUTS)}")
    if layout == "deploy":
        from .onnx_deploy import input_ranks, plan
        b.deploy = True
        b.post, b.skip = plan(graph, mods)
        b.ranks = input_ranks(model, graph, example)
    env, out_names = {}, []
    for n in graph.nodes:
        if n.op == "placeholder":
            if env:
                raise ValueError("models with more than one input are not exported; allowed: one input tensor")
            env[n.name] = "input"
        elif n.op == "call_module":
            env[n.name] = _module(b, mods[n.target], env[n.args[0].name], n.target, info)
        elif n.op in ("call_function", "call_method"):
            env[n.name] = _call(b, n, env)
        elif n.op == "output":
            res = n.args[0]
            if isinstance(res, (tuple, list)):
                raise ValueError("models with several outputs are not exported; allowed: one output tensor")
            out_names.append(env[res.name])
        elif n.op == "get_attr":
            raise UnsupportedOpError(f"graph attribute {n.target!r} is not exported; "
                             f"allowed: module layers ({', '.join(SUPPORTED)})")
    with torch.no_grad():
        y = model(example)
    out = b.node("Identity", [out_names[0]], "output")
    b.nodes[-1].output[0] = "output"
    b.counts["Identity"] -= 1
    in_shape = ["N"] + list(example.shape[1:])
    out_shape = ["N"] + list(y.shape[1:])
    g = helper.make_graph(b.nodes, "lowbit", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], b.inits)
    mp = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lowbit")
    mp.ir_version = min(mp.ir_version, 10)
    onnx.checker.check_model(mp)
    info.nodes = {k: v for k, v in sorted(b.counts.items()) if v}
    del out
    return mp


def _call(b: _Builder, n, env):
    t = n.target
    args = [env[a.name] if hasattr(a, "name") and a.name in env else a for a in n.args]
    if t in (operator.add, torch.add, "add") and len(args) == 2 and all(isinstance(a, str) for a in args):
        return b.node("Add", args)
    if t in (torch.flatten, "flatten"):
        start = args[1] if len(args) > 1 else n.kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else n.kwargs.get("end_dim", -1)
        if end != -1:
            raise ValueError("flatten(end_dim != -1) is not exported; allowed: end_dim=-1")
        return b.node("Flatten", [args[0]], axis=int(start))
    if t in (F.relu, torch.relu, "relu"):
        return b.node("Relu", [args[0]])
    name = getattr(t, "__name__", t)
    raise UnsupportedOpError(f"operation {name!r} cannot be exported to ONNX; allowed: {', '.join(SUPPORTED)}")


def export_onnx(model: nn.Module, path, example: torch.Tensor, *, calib_x: torch.Tensor | None = None,
                backend: str | None = None, layout: str = "deploy") -> OnnxInfo:
    """Write ``model`` (a quantized model, eval mode) to ``path`` as an ONNX QDQ graph (opset 21).

    ``example``: one input batch (sets the input shape; the batch dimension is dynamic). Dynamic
    activation quantizers need ``calib_x`` (see :func:`freeze_activation_scales`). Returns an
    :class:`OnnxInfo` whose ``model`` is the PyTorch model the graph matches. ``backend``: the
    fake-quant kernels of the calibration and tracing passes (None: the current ``lowbit.backend``).
    ``layout``: 'deploy' (default; onnxruntime fuses it into integer kernels, see
    :mod:`lowbit.export.onnx_deploy`; fold BatchNorm first with ``fold_batchnorm``) or 'simulate'.
    ``model`` itself is never modified.
    """
    from lowbit.ops.backend import backend as use_backend
    with use_backend(backend):
        return _export_onnx(model, path, example, calib_x, layout)


def _export_onnx(model, path, example, calib_x, layout="deploy") -> OnnxInfo:
    import onnx
    model = model.eval()
    dyn = [n for n, m in model.named_modules() if _is_dynamic(m) and n.rsplit(".", 1)[-1] in
           ("input_quantizer", "output_quantizer")]
    if dyn:
        if calib_x is None:
            raise ValueError(f"{dyn[0]} has a dynamic (per-batch) scale; pass calib_x to freeze it")
        model = freeze_activation_scales(model, calib_x)
    elif layout == "deploy":
        model = copy.deepcopy(model)   # the deploy layout rounds biases to their int32 grid
    info = OnnxInfo(str(path), model, OPSET)
    mp = build_graph(model, example, info, layout)
    onnx.save(mp, str(path))
    return info


def onnx_weights(path) -> dict:
    """{layer name: fp32 array} of every dequantized weight in an exported file, computed by
    onnxruntime (each weight's DequantizeLinear run on its own; for bit-exactness checks)."""
    import onnx
    from onnx import TensorProto, helper
    mp = onnx.load(str(path))
    inits = {t.name: t for t in mp.graph.initializer}
    out = {}
    for n in mp.graph.node:
        if n.op_type == "DequantizeLinear" and ".weight_dq" in n.output[0] and all(i in inits for i in n.input):
            layer = n.output[0].rsplit(".weight_dq", 1)[0]
            g = helper.make_graph([n], "w", [], [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)],
                                  [inits[i] for i in n.input])
            sub = helper.make_model(g, opset_imports=list(mp.opset_import))
            sub.ir_version = mp.ir_version
            path_bytes = sub.SerializeToString()
            import onnxruntime as ort
            sess = ort.InferenceSession(path_bytes, providers=["CPUExecutionProvider"])
            out[layer] = sess.run(None, {})[0]
    return out


def ort_session(path, optimize: bool = False):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_onnx(path, x: torch.Tensor, optimize: bool = False, batch_size: int = 512) -> torch.Tensor:
    sess = ort_session(path, optimize)
    outs = [sess.run(None, {"input": x[i:i + batch_size].float().numpy()})[0] for i in range(0, len(x), batch_size)]
    return torch.from_numpy(np.concatenate(outs))


@torch.no_grad()
def compare_onnx(path, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                 optimize: bool = False) -> dict:
    """{"max_abs_diff", "ref_max_abs", "frac_exact", "argmax_agree", "acc_torch", "acc_onnx"} of ONNX vs
    PyTorch on ``x``; ``frac_exact``: the fraction of samples whose outputs all agree within 1e-4."""
    ref = torch.cat([model.eval()(x[i:i + 512]) for i in range(0, len(x), 512)])
    out = run_onnx(path, x, optimize)
    diff = (out - ref).abs().reshape(len(ref), -1).amax(1)
    d = {"max_abs_diff": float(diff.max()), "ref_max_abs": float(ref.abs().max()),
         "frac_exact": float((diff <= 1e-4).float().mean()),
         "argmax_agree": float((out.argmax(1) == ref.argmax(1)).float().mean()) if ref.dim() == 2 else None}
    if y is not None:
        d["acc_torch"] = float((ref.argmax(1) == y).float().mean())
        d["acc_onnx"] = float((out.argmax(1) == y).float().mean())
    return d

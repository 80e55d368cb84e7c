"""ONNX export of any traceable model (transformers: LayerNorm, Softmax, attention, reshapes,
transposes) through ``torch.onnx.export`` (the TorchScript exporter, offline), with lowbit's scales
inserted as QuantizeLinear / DequantizeLinear.

    info = export_onnx_traced(qmodel, "vit.onnx", example, calib_x=calib_x)
    compare_onnx("vit.onnx", info.model, x)          # onnxruntime vs the fake-quantized model

How: every quantized Linear / Conv2d is swapped (on a copy) for a module whose forward runs
``torch.fake_quantize_per_tensor_affine`` on its input / output and
``torch.fake_quantize_per_channel_affine`` (or per-tensor) on its weight; the TorchScript exporter
writes each as a QuantizeLinear + DequantizeLinear pair with lowbit's scale and zero point. The
weight stored is lowbit's dequantized weight (already on the grid), so ONNX's QuantizeLinear gives
back lowbit's codes exactly and the dequantized weights equal lowbit's bit for bit. Activation
QuantizeLinear divides by the scale and rounds half to even as lowbit does; accumulation order
differs, so outputs agree to float rounding except where a value lands on a rounding tie.

Limits (each a one-line ValueError): formats int8 and uint8 only (what the exporter's
fake_quantize symbolics emit); weight scaling 'tensor' or 'channel' on axis 0; activations with a
fixed per-tensor scale (dynamic ones are frozen from ``calib_x``, as in :mod:`lowbit.export.onnx`);
quantizers outside Linear / Conv2d layers (softmax / attention slots) are refused. Graph
optimisation of onnxruntime may fuse the Q/DQ; the graph is opset 17.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

TRACED_FORMATS = {"int8": (-128, 127), "uint8": (0, 255)}
OPSET_TRACED = 17


def _range(spec, where):
    name = spec.format.name
    if name not in TRACED_FORMATS:
        raise ValueError(f"{where}: format {name!r} cannot be exported through torch.onnx.export; allowed: "
                         f"{', '.join(TRACED_FORMATS)}")
    return TRACED_FORMATS[name]


def _split(fixed):
    s, zp = fixed if isinstance(fixed, tuple) else (fixed, None)
    s = s.detach().float().reshape(-1)
    zp = torch.zeros_like(s, dtype=torch.int32) if zp is None else zp.detach().reshape(-1).round().to(torch.int32)
    return s, zp


class _ActQDQ(nn.Module):
    def __init__(self, q, where):
        super().__init__()
        if type(q).__name__ != "CalibratedQuantizer" or q.fixed_scale() is None or q.spec.scaling != "tensor":
            raise ValueError(f"{where}: activation quantizer {q.spec.format.name}/{q.spec.scaling} has no fixed "
                             f"per-tensor scale; allowed: a calibrated per-tensor scale (pass calib_x)")
        self.lo, self.hi = _range(q.spec, where)
        s, zp = _split(q.fixed_scale())
        self.scale, self.zp = float(s[0]), int(zp[0])

    def forward(self, x):
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zp, self.lo, self.hi)


class _TracedLayer(nn.Module):
    """A quantized Linear / Conv2d as fake_quantize ops the TorchScript exporter turns into Q/DQ."""

    def __init__(self, m, name):
        super().__init__()
        self.m = m
        self.q_in = _ActQDQ(m.input_quantizer, f"input of {name}") if m.input_quantizer is not None else None
        self.q_out = _ActQDQ(m.output_quantizer, f"output of {name}") if m.output_quantizer is not None else None
        wq = m.weight_quantizer
        self.per_channel = False
        if wq is not None:
            self.w_lo, self.w_hi = _range(wq.spec, f"weights of {name}")
            if wq.spec.scaling not in ("tensor", "channel") or (wq.spec.scaling == "channel"
                                                                  and wq.spec.axis % m.weight.dim() != 0):
                raise ValueError(f"weights of {name}: scaling {wq.spec.scaling!r} (axis {wq.spec.axis}) cannot be "
                                 f"exported through torch.onnx.export; allowed: 'tensor', 'channel' on axis 0")
            from lowbit.nn.packing import encode_weight
            enc = encode_weight(m.weight, wq)
            s, zp = _split(enc.scale)
            self.per_channel = wq.spec.scaling == "channel"
            self.register_buffer("w_scale", s)
            self.register_buffer("w_zp", zp)
            self.w_s0, self.w_z0 = float(s[0]), int(zp[0])   # per-tensor: Python numbers (no tracer warning)
            with torch.no_grad():
                self.register_buffer("wq", wq(m.weight).detach().clone())   # lowbit's grid values
        else:
            self.register_buffer("wq", m.weight.detach().clone())

    def _weight(self):
        if not hasattr(self, "w_scale"):
            return self.wq
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(self.wq, self.w_scale, self.w_zp, 0, self.w_lo, self.w_hi)
        return torch.fake_quantize_per_tensor_affine(self.wq, self.w_s0, self.w_z0, self.w_lo, self.w_hi)

    def forward(self, x):
        if self.q_in is not None:
            x = self.q_in(x)
        m, w = self.m, self._weight()
        if isinstance(m, nn.Linear):
            y = F.linear(x, w, m.bias)
        else:
            y = F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
        return self.q_out(y) if self.q_out is not None else y


def _swap(model):
    from lowbit.nn.modules import QuantLayer
    hooked = [n for n, m in model.named_modules() if type(m).__name__ == "HookQuantizers"]
    if hooked:
        raise ValueError(f"quantizers on non-weight layers ({hooked[0].rsplit('.', 1)[0]}: softmax / attention / "
                         f"activation slots) are not exported; allowed: weight / input / output quantizers of "
                         f"Linear and Conv2d layers")
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantLayer):
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                raise ValueError(f"layer {name!r} ({type(m).__name__}) is not exported through torch.onnx.export; "
                                 f"allowed: quantized Linear and Conv2d")
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, _TracedLayer(m, name))
    return model


def export_onnx_traced(model: nn.Module, path, example: torch.Tensor, *, calib_x: torch.Tensor | None = None):
    """Write ``model`` (eval) to ``path`` through ``torch.onnx.export`` with lowbit's scales as Q/DQ
    (opset 17, input "input", output "output", dynamic batch). Returns an
    :class:`lowbit.export.onnx.OnnxInfo` whose ``model`` is the fake-quantized model the graph matches."""
    import onnx

    from .onnx import OnnxInfo, _is_dynamic, freeze_activation_scales
    model = model.eval()
    if any(_is_dynamic(m) for m in model.modules()):
        if calib_x is None:
            raise ValueError("the model has dynamic (per-batch) activation scales; pass calib_x to freeze them")
        model = freeze_activation_scales(model, calib_x)
    export_model = _swap(copy.deepcopy(model)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # the TorchScript exporter: offline, no onnxscript
        torch.onnx.export(export_model, (example,), str(path), dynamo=False, opset_version=OPSET_TRACED,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    mp = onnx.load(str(path))
    counts: dict = {}
    for n in mp.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return OnnxInfo(str(path), model, OPSET_TRACED, dict(sorted(counts.items())))

"""Converted layers: packed integer weights run by torch's CPU integer kernels (:func:`lowbit.nn.convert`).

Each layer keeps the integer codes and the fp32 scales that the fake-quantized layer's weight quantizer
produced (``lowbit.encode``: the same integers, the same scales), drops the fp32 weight, and runs:

=================  ==========================================  ==========================================
kernel             op                                          numerics
=================  ==========================================  ==========================================
``onednn-int8``    ``torch.ops.onednn.qlinear_pointwise`` /    y = s_x * s_w[o] * sum(c_x * c_w) + b: the
                   ``qconv_pointwise`` (uint8 x int8 -> fp32)  int32 sum is exact, then one fp32 rescale
``int8-weight``    ``torch._weight_int8pack_mm``               y = (x @ c_w^T) * s_w + b, fp32 accumulation
``int4-weight``    ``torch._weight_int4pack_mm_for_cpu``       y = x @ ((q - 8) * s_g)^T + b, fp32 accum.
=================  ==========================================  ==========================================

Integer activations (``onednn-int8``): the layer's input is encoded exactly as its fake quantizer
does it (dynamic per-tensor scale s = amax / qmax, or the calibrated fixed scale; signed codes c are
passed as c + 128 with zero point 128, the kernel's uint8 activation type, which is exact).
The fake-quantized layer computes the same sum in fp32 over the dequantized values
fl(c_x s_x), fl(c_w s_w), so the two differ by float rounding only: at most about
(K + 4) * 2^-24 * sum_k |x_k w_k| per output (K = the reduction length). The weight-only kernels take
the layer's input after its own (fake) input quantizer, which stays in place.

Bias stays fp32; an output quantizer stays as it was. The layers are for inference: they hold no
trainable weight (the gradient slot is not carried over).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.formats.cast import int_cast
from lowbit.ops import quantize
from lowbit.ops.scaling import asym_codes, element_scale, finite_amax, scaled_qdq

INT4_GROUPS = (32, 64, 128, 256)   # group sizes _weight_int4pack_mm_for_cpu accepts
TINY = 2.0 ** -118                 # scales below: c * s may be an fp32 subnormal (|c| <= 255)
INT4_N = 16                        # its packing needs out_features divisible by 16 (padded here)


def _amax(x: torch.Tensor) -> torch.Tensor:
    """``finite_amax(x)`` (the fake quantizer's): the plain max |x| where that is finite (one pass)."""
    a = x.abs().amax() if x.numel() else x.new_zeros(())
    return a if bool(torch.isfinite(a)) else finite_amax(x)


def act_codes(x: torch.Tensor, spec, fixed):
    """(uint8 codes, scale as a float, zero point) of ``x`` under a per-tensor integer ``spec``: the
    codes the fake quantizer rounds ``x`` to. ``fixed``: a calibrated scale (or (scale, zero point)),
    else the dynamic scale, computed as ``lowbit.ops.scaling`` does. The values come from
    ``lowbit.quantize`` with that scale (its fast kernels), the codes from q / s: q = fl(c * s) is
    within half an ulp of c * s, so q / s rounds back to c exactly while c * s is a normal fp32
    (otherwise, with a tiny scale, the slow elementwise path computes the codes themselves)."""
    f, xf = spec.format, x.float()
    if f.asymmetric:
        s, zp = fixed if fixed is not None else scaled_qdq(xf, f, "tensor", -1, spec.rounding, True, False, None)[1]
        if float(s) < TINY:
            return asym_codes(xf, f, s, zp, spec.rounding, None).to(torch.uint8), float(s), int(zp)
        c = quantize(xf, spec, scale=(s, zp)).div_(s).round_().add_(zp)
        return c.to(torch.uint8), float(s), int(zp)
    s = fixed if fixed is not None else element_scale(_amax(xf), f, spec.pow2_scale)
    if float(s) < TINY:
        c = int_cast(xf / s, f, spec.rounding, spec.saturate, None)
    else:
        c = quantize(xf, spec, scale=s).div_(s).round_()
    return c.add_(128).to(torch.uint8), float(s), 128


class PackedLayer(nn.Module):
    """Shared plumbing: the input/output quantizers kept from the fake-quantized layer, slot counters."""

    kernel = ""

    def _setup(self, src, bias, keep_input: bool):
        self.hits = src.hits  # the Assignment's live counters keep counting
        self.input_quantizer = src.input_quantizer if keep_input else None
        self.output_quantizer = src.output_quantizer
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def _pre(self, x):
        self.hits["weight"] = self.hits.get("weight", 0) + 1
        if self.input_quantizer is not None:
            self.hits["input"] = self.hits.get("input", 0) + 1
            x = self.input_quantizer(x)
        return x

    def _post(self, y):
        if self.output_quantizer is not None:
            self.hits["output"] = self.hits.get("output", 0) + 1
            y = self.output_quantizer(y)
        return y

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, weight={tuple(self.weight_shape)}"


class _Int8Act(PackedLayer):
    """Integer weights and activations through onednn (uint8 activations, int8 weights, fp32 out)."""

    kernel = "onednn-int8"

    def _setup_int8(self, src, codes, scale, bias):
        self._setup(src, bias, keep_input=False)
        self.act_spec = src.input_quantizer.spec
        fixed = src.input_quantizer.fixed_scale() if hasattr(src.input_quantizer, "fixed_scale") else None
        if isinstance(fixed, tuple):   # calibrated (scale, zero point) of an unsigned format
            fixed = torch.stack([fixed[0].reshape(()).float(), fixed[1].reshape(()).float()])
        self.register_buffer("act_scale", None if fixed is None else fixed.reshape(-1).float())
        self.register_buffer("weight_int8", codes.to(torch.int8).contiguous())
        self.register_buffer("weight_scale", scale.float().contiguous())
        self.register_buffer("_wzp", torch.zeros(codes.shape[0], dtype=torch.int64), persistent=False)
        self._packed = None

    def _fixed(self):
        s = self.act_scale
        if s is None:
            return None
        return (s[0], s[1]) if self.act_spec.format.asymmetric else s[0]

    def _weight(self):
        key = (self.weight_int8.data_ptr(), self.weight_int8._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, self._prepack())
        return self._packed[1]

    def dequantized_weight(self) -> torch.Tensor:
        s = self.weight_scale.reshape(-1, *([1] * (self.weight_int8.dim() - 1)))
        return self.weight_int8.float() * s


class Int8Linear(_Int8Act):
    """nn.Linear with int8 weights (per-channel or per-tensor scale) and integer activations."""

    def __init__(self, src, codes, scale, bias):
        super().__init__()
        self._setup_int8(src, codes, scale, bias)
        self.weight_shape = tuple(codes.shape)

    def _prepack(self):
        return torch.ops.onednn.qlinear_prepack(self.weight_int8, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._pre(x)
        self.hits["input"] = self.hits.get("input", 0) + 1
        lead, k = x.shape[:-1], x.shape[-1]
        c, s, zp = act_codes(x.reshape(-1, k), self.act_spec, self._fixed())
        y = torch.ops.onednn.qlinear_pointwise(c, s, zp, self._weight(), self.weight_scale, self._wzp, self.bias,
                                               1.0, 0, torch.float32, "none", [], "")
        return self._post(y.reshape(*lead, y.shape[-1]))


class Int8Conv(_Int8Act):
    """nn.Conv1d / nn.Conv2d (zero padding) with int8 weights and integer activations."""

    def __init__(self, src, codes, scale, bias):
        super().__init__()
        self._setup_int8(src, codes, scale, bias)
        self.weight_shape = tuple(codes.shape)
        self.stride, self.padding = list(src.stride), list(src.padding)
        self.dilation, self.groups = list(src.dilation), src.groups

    def _prepack(self):
        return torch.ops.onednn.qconv_prepack(self.weight_int8, self.weight_scale, 1.0, 0, self.stride,
                                              self.padding, self.dilation, self.groups, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._pre(x)
        self.hits["input"] = self.hits.get("input", 0) + 1
        c, s, zp = act_codes(x, self.act_spec, self._fixed())
        y = torch.ops.onednn.qconv_pointwise(c, s, zp, self._weight(), self.weight_scale, self._wzp, self.bias,
                                             self.stride, self.padding, self.dilation, self.groups, 1.0, 0,
                                             torch.float32, "none", [], "")
        return self._post(y.contiguous())


class Int8WeightLinear(PackedLayer):
    """nn.Linear with int8 weights (per-channel / per-tensor scale), fp32 (or fake-quantized) input."""

    kernel = "int8-weight"

    def __init__(self, src, codes, scale, bias):
        super().__init__()
        self._setup(src, bias, keep_input=True)
        self.register_buffer("weight_int8", codes.to(torch.int8).contiguous())
        self.register_buffer("weight_scale", scale.float().contiguous())
        self.weight_shape = tuple(codes.shape)

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pre(x)
        lead, k = x.shape[:-1], x.shape[-1]
        y = torch._weight_int8pack_mm(x.reshape(-1, k).float().contiguous(), self.weight_int8, self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return self._post(y.reshape(*lead, y.shape[-1]))


def int4_layout(k: int, group: int | None) -> tuple[int, int]:
    """(group size, padded K) for the int4 kernel: ``group`` if given, else the group size (one scale
    repeated per group) that stores the fewest bytes per row (K padded to a multiple of it)."""
    if group is not None:
        return group, -(-k // group) * group
    cost = {g: (-(-k // g) * g) / 2 + (-(-k // g)) * 8 for g in INT4_GROUPS}
    g = min(INT4_GROUPS, key=lambda g: (cost[g], -g))
    return g, -(-k // g) * g


class Int4WeightLinear(PackedLayer):
    """nn.Linear with int4 weights packed two per byte (torch's CPU int4 layout), per-channel, per-tensor
    or per-group (32/64/128/256 along the input) scales; fp32 (or fake-quantized) input. Out-features
    are padded to a multiple of 16 and in-features to a multiple of the group size with zero codes."""

    kernel = "int4-weight"

    def __init__(self, src, codes, scale, bias, group):
        super().__init__()
        self._setup(src, bias, keep_input=True)
        n, k = codes.shape
        self.weight_shape, self.group = (n, k), group
        npad, kpad = -(-n // INT4_N) * INT4_N, scale.shape[1] * group
        q = torch.full((npad, kpad), 8, dtype=torch.int32)
        q[:n, :k] = codes.to(torch.int32) + 8
        sz = torch.zeros(kpad // group, npad, 2)
        sz[:, :, 0] = 1.0
        sz[:, :n, 0] = scale.float().T
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scales_and_zeros", sz.contiguous())

    def _mm(self, x2):
        kpad = self.scales_and_zeros.shape[0] * self.group
        if x2.shape[-1] != kpad:
            x2 = F.pad(x2, (0, kpad - x2.shape[-1]))
        y = torch._weight_int4pack_mm_for_cpu(x2.contiguous(), self.weight_int4, self.group, self.scales_and_zeros)
        return y[:, :self.weight_shape[0]]

    def dequantized_weight(self) -> torch.Tensor:
        """The weight as the kernel itself dequantizes it (the kernel applied to the identity)."""
        k = self.weight_shape[1]
        return self._mm(torch.eye(k)).T.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pre(x)
        lead, k = x.shape[:-1], x.shape[-1]
        y = self._mm(x.reshape(-1, k).float())
        if self.bias is not None:
            y = y + self.bias
        return self._post(y.reshape(*lead, y.shape[-1]))

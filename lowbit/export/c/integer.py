"""Integer-only model for the C export, and its golden Python reference (numpy int64).

Numeric contract (``/work/shared/numerics.md``, integer-only inference):

* per-tensor symmetric scales, zero point 0. Activations are uint8 (scale amax/255) after ReLU/ReLU6,
  else int8 (scale amax/127); the model input is int8.
* weights: b in {2, 4, 8} bits, symmetric narrow range [-(2^(b-1)-1), 2^(b-1)-1], s_w = amax / (2^(b-1)-1),
  codes = round-half-even(w / s_w); bias int32 = round(b / (s_in * s_w)); accumulators int32.
* requantization: M = s_in * s_w / s_out = q * 2^-n, y = clamp((acc * q + 2^(n-1)) >> n) (arithmetic
  shift: round half up) to [0, 255] or [-128, 127] (ReLU6: upper bound round(6 / s_out)). ``width`` 31:
  q in [2^30, 2^31) (TFLite/gemmlowp style); 7: q in [64, 128] (narrow multiplier for small cores).
* pools keep the scale: max (cells outside the map, from padding or ceil_mode, are skipped), or average
  as sum / count rounded half away from zero.
* residual add: y = clamp(rq(a, M_a) + rq(b, M_b)) with M_a = s_a / s_out, M_b = s_b / s_out.
* packing: each output channel's weight row (cin/groups * kh * kw codes) is zero-padded to a multiple of
  32 / b fields (a multiple of 4), then packed into uint32 words, most significant field first:
  field j of a word occupies bits [31 - b*j, 32 - b*(j+1)], as b-bit two's complement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .graph import Graph, activations

OPS = {"conv": 0, "pool_max": 1, "pool_avg": 2, "add": 3, "relu": 4}


@dataclass
class Value:
    """One activation tensor: (C, H, W), signedness, float scale, offset in the C arena."""
    shape: tuple[int, int, int]
    signed: bool
    scale: float
    offset: int = 0

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class QLayer:
    """One integer op as the C kernels see it (all ints except the names)."""
    kind: str
    name: str
    inputs: list[str]
    output: str
    bits: int = 8
    codes: np.ndarray | None = None      # (cout, K) int64
    bias: np.ndarray | None = None       # (cout,) int64 (int32 range)
    w_scale: float = 0.0
    q: list[int] = field(default_factory=list)   # multipliers (two for add)
    n: list[int] = field(default_factory=list)   # shifts
    lo: int = -128
    hi: int = 127
    stride: int = 1
    padding: int = 0
    groups: int = 1
    kernel: int = 1
    linear: bool = False                 # Linear: reads its input as a (numel, 1, 1) map
    acc_bound: int = 255                 # max |value| that enters requantization

    def rq32(self) -> bool:
        """True when acc * q + 2^(n-1) provably fits int32 for every multiplier (the C kernel then
        requantizes in 32-bit arithmetic, as a small core without 64-bit products would; same result)."""
        return all(n <= 30 and self.acc_bound * q + (1 << (n - 1)) < 2**31 for q, n in zip(self.q, self.n))


@dataclass
class QModel:
    values: dict[str, Value]
    layers: list[QLayer]
    input: str
    output: str
    width: int

    def quantize_input(self, x: torch.Tensor) -> np.ndarray:
        """Float (already normalised) input batch -> int8 codes (round half even, saturating)."""
        s = self.values[self.input].scale
        return np.clip(np.round(x.double().numpy() / s), -128, 127).astype(np.int64)


def quantize_multiplier(m: float, width: int) -> tuple[int, int]:
    """``m`` -> (q, n) with m ~= q * 2^-n and q in [2^(width-1), 2^width] (q < 2^31 for width 31)."""
    if width not in (7, 31):
        raise ValueError(f"multiplier width {width!r} is not allowed; allowed: 31, 7")
    if m <= 0:
        return 0, 1
    frac, e = math.frexp(m)
    q, n = int(round(frac * (1 << width))), width - e
    if q == 1 << width and width == 31:
        q, n = q >> 1, n - 1
    if n > 62:
        q, n = q >> min(n - 62, 63), 62
    if n < 1:
        raise ValueError(f"requantization multiplier {m:.4g} is too large for a {width}-bit multiplier "
                         f"(needs < 2^{width - 1})")
    return q, n


def quantize_weights(w: torch.Tensor, bits: int) -> tuple[np.ndarray, float]:
    """Symmetric narrow per-tensor codes (cout, K) and scale."""
    if bits not in (2, 4, 8):
        raise ValueError(f"weight bits {bits!r} are not allowed; allowed: 2, 4, 8")
    qmax = (1 << (bits - 1)) - 1
    w = w.double().reshape(w.shape[0], -1)
    s = max(float(w.abs().max()), 1e-12) / qmax
    return torch.clamp(torch.round(w / s), -qmax, qmax).long().numpy(), s


def pack_weights(codes: np.ndarray, bits: int) -> np.ndarray:
    """(rows, K) codes -> uint32 words, rows padded to a multiple of 32/bits, MSB-first fields."""
    per = 32 // bits
    rows, k = codes.shape
    kp = -(-k // per) * per
    padded = np.zeros((rows, kp), np.int64)
    padded[:, :k] = codes
    f = (padded & ((1 << bits) - 1)).reshape(rows, kp // per, per).astype(np.uint64)
    shifts = np.array([32 - bits * (j + 1) for j in range(per)], np.uint64)
    return (f << shifts).sum(axis=2, dtype=np.uint64).astype(np.uint32).reshape(-1)


def unpack_weights(words: np.ndarray, bits: int, rows: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_weights` (sign-extends each field)."""
    per = 32 // bits
    kp = -(-k // per) * per
    w = words.astype(np.int64).reshape(rows, kp // per, 1)
    shifts = np.array([32 - bits * (j + 1) for j in range(per)], np.int64)
    f = (w >> shifts) & ((1 << bits) - 1)
    f = np.where(f >= 1 << (bits - 1), f - (1 << bits), f)
    return f.reshape(rows, kp)[:, :k]


def build_qmodel(model, graph: Graph, calib_x: torch.Tensor, bits, width: int = 31) -> QModel:
    """Calibrate (per-tensor max |x| over ``calib_x``) and quantize ``graph`` into a :class:`QModel`.

    ``bits``: an int for every conv/linear, or a dict layer name -> bits (missing names: 8). Depthwise
    convolutions stay at 8 bits unless named explicitly in the dict.
    """
    acts = activations(model, graph, calib_x)
    amax = {k: max(float(v.abs().max()), 1e-8) for k, v in acts.items()}
    values = {graph.input: Value(graph.shapes[graph.input], True, amax[graph.input] / 127)}
    layers: list[QLayer] = []
    for op in graph.ops:
        ins = [values[i] for i in op.inputs]
        shape = graph.shapes[op.output]
        if op.kind == "flatten":
            values[op.output] = Value(shape, ins[0].signed, ins[0].scale)
            layers.append(QLayer("flatten", op.name, op.inputs, op.output))
            continue
        if op.kind in ("pool_max", "pool_avg", "relu"):
            if op.kernel < 0 and ins[0].shape[1] != ins[0].shape[2]:
                raise ValueError(f"layer {op.name!r}: global average pooling of a non-square "
                                 f"{ins[0].shape[1]}x{ins[0].shape[2]} map is not supported; supported: square maps")
            v = values[op.output] = Value(shape, ins[0].signed and op.kind != "relu", ins[0].scale)
            ql = QLayer(op.kind, op.name, op.inputs, op.output, stride=op.stride, padding=op.padding,
                        kernel=op.kernel if op.kernel > 0 else ins[0].shape[1])
            ql.lo, ql.hi = _clamp(v, op.act)
            layers.append(ql)
            continue
        signed = op.act is None
        a = min(amax[op.output], 6.0) if op.act == "relu6" else amax[op.output]
        v = values[op.output] = Value(shape, signed, a / (127 if signed else 255))
        ql = QLayer(op.kind, op.name, op.inputs, op.output)
        ql.lo, ql.hi = _clamp(v, op.act)
        if op.kind == "add":
            for i in ins:
                q, n = quantize_multiplier(i.scale / v.scale, width)
                ql.q.append(q)
                ql.n.append(n)
        else:
            depthwise = op.groups > 1 and op.groups == op.weight.shape[0] and op.weight.shape[1] == 1
            if isinstance(bits, dict):
                b = bits[op.name] if op.name in bits else (8 if depthwise else bits.get(op.name, 8))
            else:
                b = 8 if depthwise else int(bits)
            ql.bits, ql.stride, ql.padding, ql.groups = b, op.stride, op.padding, op.groups
            ql.kernel = op.weight.shape[-1]
            ql.linear = op.is_linear
            ql.codes, ql.w_scale = quantize_weights(op.weight, b)
            sb = ins[0].scale * ql.w_scale
            ql.bias = np.clip(np.round(op.bias.double().numpy() / sb), -2**31, 2**31 - 1).astype(np.int64)
            q, n = quantize_multiplier(sb / v.scale, width)
            ql.q, ql.n = [q], [n]
            bound = int(np.abs(ql.bias).max()) + ql.codes.shape[1] * 255 * int(np.abs(ql.codes).max(initial=0))
            ql.acc_bound = bound
            if bound >= 2**31:
                raise ValueError(f"layer {op.name!r}: the int32 accumulator could overflow (bound {bound}); "
                                 f"reduce the reduction size or the bias range")
        layers.append(ql)
    off = 0
    for v in values.values():
        v.offset = off
        off += -(-v.numel // 4) * 4
    _alias_flatten(values, layers)
    return QModel(values, layers, graph.input, graph.output, width)


def _alias_flatten(values, layers):
    """A flatten output shares its input's storage (CHW order is already the flattened order)."""
    for ql in layers:
        if ql.kind == "flatten":
            values[ql.output].offset = values[ql.inputs[0]].offset


def _clamp(v: Value, act: str | None) -> tuple[int, int]:
    lo, hi = (-128, 127) if v.signed else (0, 255)
    if act is not None:
        lo = 0
    if act == "relu6":
        hi = min(hi, int(round(6.0 / v.scale)))
    return lo, hi

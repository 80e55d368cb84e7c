"""Golden integer reference (numpy int64, the same arithmetic as the generated C) and a float
executor of the same graph (fp32, or fake-quantized with the export's scales) for accuracy reports."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .graph import Graph
from .integer import QModel, unpack_weights, pack_weights


def requant(acc: np.ndarray, q: int, n: int) -> np.ndarray:
    """(acc * q + 2^(n-1)) >> n in int64 (arithmetic shift: round half up)."""
    return (acc.astype(np.int64) * q + (1 << (n - 1))) >> n


def div_round(s: np.ndarray, d: int) -> np.ndarray:
    """s / d rounded half away from zero (the C kernel's average)."""
    a = (np.abs(s) + d // 2) // d
    return np.where(s < 0, -a, a)


def _conv(x: np.ndarray, ql, cout: int) -> np.ndarray:
    n, cin, h, w = x.shape
    k, s, p, g = ql.kernel, ql.stride, ql.padding, ql.groups
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.stack([xp[:, :, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s]
                     for ky in range(k) for kx in range(k)], axis=2)          # (n, cin, k*k, oh, ow)
    cols = cols.reshape(n, g, (cin // g) * k * k, oh * ow)
    # weights go through the packed form so the reference also checks the packing
    codes = unpack_weights(pack_weights(ql.codes, ql.bits), ql.bits, *ql.codes.shape)
    wg = codes.reshape(g, cout // g, -1)
    acc = np.concatenate([np.matmul(wg[i], cols[:, i]) for i in range(g)], axis=1)
    acc = acc + ql.bias[None, :, None]
    y = np.clip(requant(acc, ql.q[0], ql.n[0]), ql.lo, ql.hi)
    return y.reshape(n, cout, oh, ow)


def _pool(x: np.ndarray, ql, shape) -> np.ndarray:
    n, c, h, w = x.shape
    k, s, p = ql.kernel, ql.stride, ql.padding
    oh, ow = shape[1], shape[2]
    # max pool padding / ceil_mode: cells outside the map never win (pad far below any int8/uint8)
    ph, pw = max(0, (oh - 1) * s + k - h - p), max(0, (ow - 1) * s + k - w - p)
    x = np.pad(x, ((0, 0), (0, 0), (p, ph), (p, pw)), constant_values=-(1 << 20)) if p or ph or pw else x
    win = np.stack([x[:, :, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s]
                    for ky in range(k) for kx in range(k)], axis=2)
    if ql.kind == "pool_max":
        return win.max(axis=2)
    return div_round(win.sum(axis=2), k * k)


def step(qm: QModel, ql, env: dict) -> np.ndarray:
    """One layer of the integer model: reads its inputs from ``env``, returns its output (N, C, H, W)."""
    x = env[ql.inputs[0]]
    shape = qm.values[ql.output].shape
    if ql.kind == "flatten":
        y = x
    elif ql.kind == "conv":
        y = _conv(x.reshape(len(x), -1, 1, 1) if ql.linear else x, ql, shape[0])
    elif ql.kind in ("pool_max", "pool_avg"):
        y = _pool(x, ql, shape)
    elif ql.kind == "relu":
        y = np.clip(x, ql.lo, ql.hi)
    elif ql.kind == "add":
        b = env[ql.inputs[1]]
        y = np.clip(requant(x, ql.q[0], ql.n[0]) + requant(b, ql.q[1], ql.n[1]), ql.lo, ql.hi)
    else:
        raise AssertionError(ql.kind)
    return y.reshape(len(x), *shape)


def run_integer(qm: QModel, xq: np.ndarray, layer_fn=None) -> np.ndarray:
    """int8 input codes (N, C, H, W) -> int output codes (N, out_numel), exactly as model_infer.
    ``layer_fn(qm, ql, env)`` replaces :func:`step` (the Xlbmac reference plugs in there)."""
    env = {qm.input: xq.astype(np.int64).reshape(len(xq), *qm.values[qm.input].shape)}
    for ql in qm.layers:
        env[ql.output] = (layer_fn or step)(qm, ql, env)
    return env[qm.output].reshape(len(xq), -1)


def run_float(graph: Graph, x: torch.Tensor, qm: QModel | None = None) -> torch.Tensor:
    """The traced graph in float64: plain (``qm`` None) or fake-quantized with ``qm``'s scales/codes."""
    def fq(t, name):
        if qm is None:
            return t
        v = qm.values[name]
        lo, hi = (-128, 127) if v.signed else (0, 255)
        return torch.clamp(torch.round(t / v.scale), lo, hi) * v.scale
    qls = {ql.name: ql for ql in qm.layers} if qm is not None else {}
    env = {graph.input: fq(x.double(), graph.input)}
    for op in graph.ops:
        a = env[op.inputs[0]]
        if op.kind == "flatten":
            y = a.reshape(len(a), -1)
        elif op.kind == "conv":
            w, b = op.weight.double(), op.bias.double()
            if qm is not None:
                ql = qls[op.name]
                w = torch.from_numpy(ql.codes).double().reshape(w.shape) * ql.w_scale
                b = torch.from_numpy(ql.bias).double() * ql.w_scale * qm.values[op.inputs[0]].scale
            if op.is_linear:
                y = F.linear(a.reshape(len(a), -1), w[:, :, 0, 0], b)
            else:
                y = F.conv2d(a, w, b, op.stride, op.padding, 1, op.groups)
        elif op.kind == "pool_max":
            y = F.max_pool2d(a, op.kernel, op.stride, op.padding, ceil_mode=op.extra.get("ceil_mode", False))
        elif op.kind == "pool_avg":
            y = a.mean(dim=(2, 3), keepdim=True) if op.kernel < 0 else F.avg_pool2d(a, op.kernel, op.stride)
        elif op.kind == "add":
            y = a + env[op.inputs[1]]
        else:
            y = a
        if op.act is not None:
            y = torch.clamp(y, 0, 6) if op.act == "relu6" else torch.relu(y)
        env[op.output] = fq(y, op.output) if op.kind != "flatten" else y
    return env[graph.output].reshape(len(x), -1).float()

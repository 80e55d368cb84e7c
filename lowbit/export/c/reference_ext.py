"""The RV32IMC + Xlbmac program's arithmetic in Python: the weight words it reads (Xlbmac packing), the
activation words it builds (lw of 4 bytes, or the gathered receptive field), and the instructions'
semantics from :mod:`lowbit.export.c.xlbmac` (the same functions the emulator hook executes).

:func:`run_ext` must equal :func:`lowbit.export.c.reference.run_integer` bit for bit (tested): that
ties the extension's semantics, the packing and the golden reference together.
"""
from __future__ import annotations

import numpy as np

from .codegen import uses_ext
from .integer import QModel
from .reference import run_integer, step
from .xlbmac import WORDS_PER_STEP, mac_terms, pack_ext, requantize


def _columns(x: np.ndarray, ql, oh: int, ow: int) -> np.ndarray:
    """(N, P, K) receptive fields in (ci, ky, kx) order, zeros outside the map (the kernel's gather)."""
    n, cin, h, w = x.shape
    k, s, p = ql.kernel, ql.stride, ql.padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.stack([xp[:, :, ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s]
                     for ky in range(k) for kx in range(k)], axis=2)          # (n, cin, k*k, oh, ow)
    return cols.reshape(n, cin * k * k, oh * ow).transpose(0, 2, 1)


def _words(cols: np.ndarray) -> np.ndarray:
    """(N, P, K) activation codes -> (N, P, S) little-endian words of 4 bytes (K zero-padded)."""
    n, p, k = cols.shape
    k4 = -(-k // 4) * 4
    b = np.zeros((n, p, k4), np.int64)
    b[:, :, :k] = cols & 0xFF
    b = b.reshape(n, p, k4 // 4, 4)
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)


def conv_ext(x: np.ndarray, ql, signed: bool, shape) -> np.ndarray:
    """One conv/Linear layer as lb.accw / lb.mac{b} / lb.rq compute it: (N, cout, oh, ow)."""
    cout, oh, ow = shape
    a = _words(_columns(x, ql, oh, ow))                                       # (N, P, S)
    wps = WORDS_PER_STEP[ql.bits]
    w = pack_ext(ql.codes, ql.bits).astype(np.int64).reshape(-1, a.shape[2], wps)   # (G, S, wps)
    g = w.shape[0]
    bias = np.zeros(4 * g, np.int64)
    bias[:cout] = ql.bias
    acc = np.broadcast_to(bias.reshape(1, 1, g, 4), (len(x), a.shape[1], g, 4)).copy()
    for s in range(a.shape[2]):
        for lane in range(wps):
            terms = mac_terms(ql.bits, a[:, :, None, s], w[None, None, :, s, lane], lane, signed)
            for j in range(4):
                acc[..., j] += terms[j]
    y = requantize(acc.reshape(len(x), a.shape[1], 4 * g)[:, :, :cout], ql.q[0], ql.n[0], ql.lo, ql.hi)
    return y.transpose(0, 2, 1).reshape(len(x), cout, oh, ow)


def ext_step(qm: QModel, ql, env: dict) -> np.ndarray:
    """One layer as the Xlbmac program runs it: the extension for ungrouped conv/Linear, else plain."""
    if not uses_ext(ql):
        return step(qm, ql, env)
    x = env[ql.inputs[0]]
    shape = qm.values[ql.output].shape
    xin = x.reshape(len(x), -1, 1, 1) if ql.linear else x
    return conv_ext(xin, ql, qm.values[ql.inputs[0]].signed, shape)


def run_ext(qm: QModel, xq: np.ndarray) -> np.ndarray:
    """int8 input codes -> output codes of the Xlbmac program."""
    return run_integer(qm, xq, ext_step)

"""Layout (groups/blocks along an axis) and the kernel choice for quantize.

The same pure-torch function runs eagerly or through ``torch.compile`` (one fused kernel per spec,
cached in-process and in Inductor's on-disk cache); :mod:`lowbit.ops.native` repeats its arithmetic
in C++ for the common CPU cases. All give bit-identical results because the arithmetic is exact (see
:mod:`lowbit.formats.cast`); tests check it. Backend choice:

    ``eager``     always eager (no compile time; ~20-100x slower on large tensors).
    ``compiled``  always compiled (first call per spec compiles, seconds).
    ``native``    always the C++ kernels (built once per machine, about 2 s); an error for a call they
                  do not cover (:func:`lowbit.ops.native.unsupported` says which).
    ``auto``      native where it covers the call, else compiled for tensors of at least
                  ``AUTO_MIN_NUMEL`` elements and eager below; eager inside ``torch.compile`` and
                  wherever compilation is unavailable (a warning says why, once). The choice follows
                  from what is built for the CPU, with no tuning run: the native kernels are built
                  for its ISA level (``LOWBIT_NATIVE_ISA``, vectors as wide as its registers), and
                  at x86-64-v2, v3 and v4 they measured faster than the compiled kernels (or within
                  that run's noise) in every row of benchmarks/qdq.py, whose ``backend='auto'``
                  GOAL line checks it per level.
The default is the innermost ``with lowbit.backend(...)`` block, else the ``LOWBIT_BACKEND``
environment variable, else ``auto`` (:mod:`lowbit.ops.backend`, where the list is declared).
"""
from __future__ import annotations

import types
import warnings

import torch
import torch.nn.functional as F

from . import native
from .backend import BACKENDS, check_backend, current_backend  # noqa: F401  (BACKENDS: re-exported)
from .scaling import block_qdq, block_scales, element_range_scaled, scaled_qdq

AUTO_MIN_NUMEL = 1 << 18
_compiled: dict = {}
_compile_broken: str | None = None


def _qdq(x, spec, scale, noise, values, want_mask, outb=None):
    """Quantize-dequantize ``x`` per ``spec`` -> (result in x.dtype, clip mask or None).

    For group/block scaling ``x`` (and ``noise``, ``outb``) arrive already laid out as blocks
    (..., n_blocks, n) by :func:`to_blocks`, and the result stays in that layout: the kernel then
    has one iteration space, so Inductor fuses the reduction, the cast and the store to ``outb``.
    """
    fmt = spec.format
    xf = x.float()
    if spec.chunk is None:
        q, s = scaled_qdq(xf, fmt, spec.scaling, spec.axis, spec.rounding, spec.saturate, spec.pow2_scale,
                          noise, scale, values)
        efmt = fmt
    elif spec.scaling == "group":
        q, s = scaled_qdq(xf, fmt, "group", -1, spec.rounding, spec.saturate, spec.pow2_scale, noise, scale, values)
        efmt = fmt
    else:
        s = block_scales(xf, fmt)[0] if scale is None else scale
        q, efmt = block_qdq(xf, fmt, spec.rounding, noise, s), fmt.element
    mask = _mask(xf, efmt, s, values) if want_mask else None
    q = q.to(x.dtype)
    if outb is not None:
        outb.copy_(q)
        q = outb
    return q, mask


def to_blocks(t, axis, n):
    """(..., size along ``axis``, ...) -> (..., n_blocks, n), zero-padded; a view when possible."""
    tm = t if axis == t.dim() - 1 else t.movedim(axis, -1)
    pad = (-tm.shape[-1]) % n
    if pad:
        tm = F.pad(tm, (0, pad))
    return tm.reshape(*tm.shape[:-1], tm.shape[-1] // n, n)   # explicit: -1 is ambiguous for empty tensors


def from_blocks(tb, shape, axis):
    """Inverse of :func:`to_blocks` for a tensor of original ``shape``."""
    moved = list(shape)
    moved.append(moved.pop(axis))
    size = moved[-1]
    t = tb.reshape(*moved[:-1], tb.shape[-2] * tb.shape[-1])
    if t.shape[-1] != size:
        t = t[..., :size]
    return t if axis == len(shape) - 1 else t.movedim(-1, axis).contiguous()


def _mask(x, fmt, s, values):
    lo, hi = element_range_scaled(fmt, s, values)
    return (x >= lo) & (x <= hi)


default_backend = current_backend


def _choose(x, spec, scale, noise, values, backend) -> str:
    """'eager', 'compiled' or 'native' for this call (see the module docstring)."""
    backend = check_backend(backend or default_backend())
    if backend == "eager" or torch.compiler.is_compiling():
        return "eager"
    if backend in ("auto", "native"):
        why = native.unsupported(x, spec, scale, noise, values)
        if why is None and native.available():
            return "native"
        if backend == "native":
            raise ValueError(f"backend='native' cannot run this call: {why or native.unavailable_reason()}; "
                             f"allowed: backend='auto' (uses the other kernels there)")
    if _compile_broken is not None:
        return "eager"
    return "compiled" if backend == "compiled" or x.numel() >= AUTO_MIN_NUMEL else "eager"


def _signature(x, scale, noise, values, out) -> tuple:
    """What, besides sizes, makes Dynamo compile a new graph: rank, dtype, layout, optional inputs."""
    sc = None if scale is None else (type(scale).__name__, getattr(scale, "dtype", None),
                                     getattr(scale, "dim", lambda: None)())
    return (x.dim(), x.dtype, x.is_contiguous(), sc, noise is None, values is None, out is None)


def _compiled_fn(spec, kind, signature):
    """One compiled kernel per (spec, want_mask, call signature); the spec is closed over so its fields
    are constants.

    Dynamo caches graphs per code object and gives up on one after ``recompile_limit`` (8) graphs; with
    ``fullgraph=True`` it then raises. A code object per spec and signature leaves it only the sizes to
    vary: the first size is compiled static, the second turns the sizes dynamic, so a model's layers of
    every rank (1..9 and beyond) stay compiled, and one spec cannot evict another's graphs.
    """
    key = (spec, kind, signature)
    fn = _compiled.get(key)
    if fn is None:
        def base(x, scale, noise, values, out):
            return _qdq(x, spec, scale, noise, values, kind, out)
        code = base.__code__.replace(co_name=f"lowbit_qdq_{len(_compiled)}")
        base = types.FunctionType(code, base.__globals__, code.co_name, None, base.__closure__)
        fn = torch.compile(base, fullgraph=True)
        _compiled[key] = fn
    return fn


def run(x, spec, scale, noise, values, want_mask=False, out=None, backend=None):
    """Quantize-dequantize ``x``; returns (result, mask-or-None). ``out`` receives the result."""
    global _compile_broken
    which = _choose(x, spec, scale, noise, values, backend)
    shape, n = tuple(x.shape), spec.chunk
    axis = spec.axis % x.dim() if x.dim() else 0
    outb = out
    if n is not None:
        x = to_blocks(x, axis, n)
        noise = to_blocks(noise, axis, n) if noise is not None else None
        direct = out is not None and axis == out.dim() - 1 and shape[-1] % n == 0 and out.is_contiguous()
        outb = out.view(x.shape) if direct else None
    res = None
    if which == "native":
        res = native.run(x, spec, scale, want_mask, outb)
    elif which == "compiled":
        try:
            fn = _compiled_fn(spec, want_mask, _signature(x, scale, noise, values, outb))
            res = fn(x, scale, noise, values, outb)
        except Exception as exc:  # no C++ compiler, unsupported platform...: eager gives the same numbers
            if backend == "compiled":
                raise
            _compile_broken = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"lowbit: torch.compile failed ({_compile_broken}); using the eager kernels from now on "
                          f"(same results, slower)")
    q, mask = res if res is not None else _qdq(x, spec, scale, noise, values, want_mask, outb)
    if n is None:
        return q, mask
    mask = from_blocks(mask, shape, axis) if mask is not None else None
    if outb is not None:
        return out, mask
    q = from_blocks(q, shape, axis)
    if out is not None:
        out.copy_(q)
        q = out
    return q, mask

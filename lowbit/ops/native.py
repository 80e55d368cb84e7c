"""The native CPU backend: qdq_native.cpp (+ its two headers), compiled once per machine, called via ctypes.

The C++ kernels repeat the reference arithmetic of :mod:`lowbit.formats.cast` and
:mod:`lowbit.ops.scaling` operation for operation (bit-identical, tested in tests/test_native.py);
they exist for speed: vectors as wide as the ISA level's registers, block scales computed one vector
of blocks at a time, non-temporal stores for outputs larger than the last-level cache, and torch's
OpenMP threads.

Covered (everything else goes to the compiled/eager kernels, see :func:`unsupported`):
    element formats  minifloats with round-to-nearest (any ExMy with E <= 7 and fp16; not bf16/fp32),
                     signed integers with nearest or toward-zero rounding;
    scaling          none, tensor (computed, or a given one-element fp32 scale), group, channel along
                     axis 0, and the MX / NVFP4 block formats;
    inputs           CPU tensors in fp32 (fp16/bf16 are computed in fp32 and cast back, as eager does).

Build (:mod:`lowbit.ops.native_build`): the C++ compiler from ``$CXX`` (else g++, c++, clang++) with
``-O3 -fopenmp -ffp-contract=off`` and the ISA level's ``-march`` (``$LOWBIT_NATIVE_ISA``: ``native``,
the default, or ``v2`` / ``v3`` / ``v4`` for x86-64-v2/v3/v4), cached per level. The OpenMP runtime
resolves to the one torch has loaded, so the kernels share torch's threads (without OpenMP, and in
fork()ed children, they use their own pool). No compiler: :func:`available` says why (a warning,
once) and the ``auto`` backend uses the other kernels.
"""
from __future__ import annotations

import ctypes
import math
import os
import warnings
from pathlib import Path

import torch

from . import native_build

ABI = 4
MIN_PER_THREAD = 1 << 16     # elements per thread below which fewer threads are used
SCHED_NT = 1                 # schedule flag of the C++ kernels: non-temporal stores


def _llc_bytes() -> int:
    """Size of the last-level cache (Linux sysfs), else 32 MiB."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            txt = f.read_text().strip().upper()
            best = max(best, int(txt[:-1]) << {"K": 10, "M": 20, "G": 30}[txt[-1]] if txt[-1] in "KMG" else int(txt))
        except (OSError, ValueError, KeyError):
            continue
    return best or 32 << 20


def _thp_madvise() -> bool:
    """LOWBIT_HUGEPAGES=1 asks for it, and transparent huge pages are granted on request (madvise) here."""
    if os.environ.get("LOWBIT_HUGEPAGES", "0") != "1":
        return False
    try:
        return "[madvise]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


# Opt-in (LOWBIT_HUGEPAGES=1), like torch's THP_MEM_ALLOC_ENABLE=1: fresh outputs of at least this many
# bytes go on transparent huge pages. A fresh 64 MiB output otherwise costs 16384 page faults, several
# times the kernel (allocating calls measured 2-3x faster), but where memory is fragmented the kernel
# compacts memory inside the page fault, and single calls were measured up to 100 ms slower.
HUGE_MIN_BYTES = 8 << 20
_HUGE = _thp_madvise()

# outputs at least as large as the last-level cache use non-temporal stores (they bypass the cache:
# the output would not stay there anyway, and the input keeps its cache lines)
NT_MIN_BYTES = _llc_bytes()
_libs: dict = {}             # ISA level -> loaded library (None: it could not be built)
_broken: dict = {}           # ISA level -> why not


class _Elem(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("kind", "rounding", "subnormals", "low_emin", "saturate",
                                               "no_negzero", "has_frac", "emin_f", "shift_add", "ftz_c")] + \
               [(n, ctypes.c_float) for n in ("clamp_hi", "maxv", "ovf", "frac_mul", "qmin", "qmax", "step",
                                              "lo", "hi")]


class _Blk(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("mode", "rule", "elem_emax", "rceil_e", "frac_max",
                                               "tensor_scale", "pow2")] + \
               [("fmt_max", ctypes.c_float), ("tensor_div", ctypes.c_float), ("e4m3", _Elem)]


# ---- load (one library per ISA level, see native_build) -------------------------------------------
def _load(isa: str | None = None):
    """The loaded library for ``isa`` (default: ``$LOWBIT_NATIVE_ISA``, else native), or None."""
    isa = native_build.selected_isa(isa)
    if isa in _libs:
        return _libs[isa]
    lib = None
    try:
        lib = ctypes.CDLL(str(native_build.build(isa)))
        if lib.lowbit_native_abi() != ABI:
            raise RuntimeError("stale native library (ABI mismatch)")
        p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
        lib.lowbit_qdq_tensor.argtypes = [p, p, p, i64, ctypes.POINTER(_Elem), i32, f32, f32, i32, i32, i32]
        lib.lowbit_qdq_tensor.restype = None
        lib.lowbit_qdq_blocks.argtypes = [p, p, p, i64, i64, ctypes.POINTER(_Elem), ctypes.POINTER(_Blk), i32, i32]
        lib.lowbit_qdq_blocks.restype = None
        lib.lowbit_resident.argtypes = [p, i64]
        lib.lowbit_resident.restype = i32
        lib.lowbit_advise_huge.argtypes = [p, i64]
        lib.lowbit_advise_huge.restype = i32
        lib.lowbit_native_lanes.restype = i32
    except Exception as exc:  # no compiler, unsupported platform, read-only cache...: the other kernels
        lib = None
        _broken[isa] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"lowbit: native kernels unavailable ({_broken[isa]}); using the torch.compile/eager "
                      f"kernels (same results, slower)")
    _libs[isa] = lib
    return lib


def available(isa: str | None = None) -> bool:
    return _load(isa) is not None


def unavailable_reason(isa: str | None = None) -> str | None:
    _load(isa)
    return _broken.get(native_build.selected_isa(isa))


def lanes(isa: str | None = None) -> int:
    """Vector lanes of the library built for ``isa`` (4 SSE/NEON, 8 AVX2, 16 AVX-512)."""
    lib = _load(isa)
    if lib is None:
        raise RuntimeError(f"native kernels unavailable: {unavailable_reason(isa)}")
    return lib.lowbit_native_lanes()


# ---- format parameters ---------------------------------------------------------------------------
_elem_cache: dict = {}


def _elem(fmt, rounding: str, saturate: bool) -> _Elem:
    key = (fmt, rounding, saturate)
    e = _elem_cache.get(key)
    if e is not None:
        return e
    from .scaling import element_range_scaled

    lo, hi = element_range_scaled(fmt, None)
    e = _Elem(lo=lo, hi=hi)
    if fmt.kind == "float":
        M, emin = fmt.man_bits, fmt.emin
        e.kind, e.subnormals, e.low_emin = 0, int(fmt.subnormals), int(emin < -126)
        e.saturate = int(saturate or not (fmt.has_inf or fmt.has_nan))
        e.no_negzero = int(not fmt.has_negative_zero)
        e.emin_f, e.shift_add, e.ftz_c = (emin + 127) << 23, (23 - M) << 23, (emin + 23 + 127) << 23
        e.clamp_hi, e.maxv = 2.0 ** (fmt.emax + 2), fmt.max
        e.ovf = math.inf if fmt.has_inf else math.nan
    else:
        e.kind, e.rounding, e.has_frac = 1, ROUND_CODES[rounding], int(fmt.frac_bits != 0)
        e.frac_mul, e.qmin, e.qmax, e.step = 2.0 ** fmt.frac_bits, fmt.qmin, fmt.qmax, fmt.step
    _elem_cache[key] = e
    return e


ROUND_CODES = {"nearest": 0, "zero": 1}
_RULES = {"floor": 0, "ceil": 1, "rceil": 2}


def _blk(spec) -> _Blk:
    fmt = spec.format
    b = _Blk()
    if spec.scaling in ("group", "channel"):
        b.mode, b.fmt_max, b.pow2 = 2, fmt.max, int(spec.pow2_scale)
        return b
    elem = fmt.element
    if fmt.scale == "e8m0":
        m, ex = math.frexp(elem.max)
        b.mode, b.rule, b.elem_emax = 0, _RULES[fmt.scale_rule], elem.emax
        b.rceil_e, b.frac_max = ex - 1, int((2 * m - 1) * 2 ** 23)
        return b
    from lowbit.formats.registry import get_format

    e4m3 = get_format("fp8_e4m3")
    b.mode, b.tensor_scale, b.fmt_max = 1, int(fmt.tensor_scale), elem.max
    b.tensor_div, b.e4m3 = e4m3.max * elem.max, _elem(e4m3, "nearest", True)
    return b


def _element_ok(fmt, rounding: str) -> str | None:
    if fmt.kind == "float":
        if fmt.man_bits >= 23 or fmt.emax + 2 - fmt.man_bits + 23 > 127:
            return f"{fmt.name} (needs the integer rounding path)"
        return None if rounding == "nearest" else f"rounding={rounding!r} for a minifloat"
    if fmt.kind == "int":
        if not fmt.signed:
            return f"{fmt.name} (asymmetric, zero point)"
        return None if rounding in ROUND_CODES else f"rounding={rounding!r}"
    return f"{fmt.kind} formats"


def unsupported(x: torch.Tensor, spec, scale, noise, values) -> str | None:
    """Why the native kernels cannot run this call (None: they can)."""
    if x.device.type != "cpu":
        return f"device {x.device.type}"
    if noise is not None:
        return "rounding='stochastic'"
    if values is not None:
        return "codebook formats"
    fmt = spec.format
    elem = fmt.element if spec.scaling == "block" else fmt
    why = _element_ok(elem, spec.rounding)
    if why:
        return why
    if spec.scaling == "channel" and (x.dim() == 0 or spec.axis % x.dim() != 0):
        return "channel scaling along an axis other than 0"
    if scale is not None and spec.scaling != "none":
        ok = (spec.scaling == "tensor" and isinstance(scale, torch.Tensor) and scale.numel() == 1
              and scale.dtype == torch.float32 and scale.device.type == "cpu" and scale.dim() <= x.dim())
        if not ok:
            return "a given scale other than a one-element fp32 tensor with per-tensor scaling"
    return None


# ---- calls ---------------------------------------------------------------------------------------
def _threads(n: int) -> int:
    return max(1, min(torch.get_num_threads(), n // MIN_PER_THREAD))


def _dense(t: torch.Tensor) -> bool:
    """Its elements fill one block of memory, each once, in some dimension order (contiguous,
    channels_last, a transpose...): then ``empty_like`` keeps its strides."""
    if t.is_contiguous():
        return True
    expect = 1
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s != 1):
        if stride != expect:
            return False
        expect *= size
    return True


def _like(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` in the memory layout that eager elementwise ops on ``x`` give (``empty_like``'s)."""
    like = torch.empty_like(x, dtype=t.dtype)
    return t if like.stride() == t.stride() else like.copy_(t)


def _empty_like(xf: torch.Tensor, lib) -> torch.Tensor:
    q = torch.empty_like(xf)                  # xf's layout (dense) or contiguous
    if _HUGE and q.numel() * 4 >= HUGE_MIN_BYTES:
        lib.lowbit_advise_huge(q.data_ptr(), q.numel() * 4)
    return q


def run(x: torch.Tensor, spec, scale, want_mask: bool, out: torch.Tensor | None = None):
    """Quantize-dequantize ``x`` (blocked already for group/block scaling) -> (q, mask or None).

    ``out`` (same shape as ``x``) receives the result when given. The result and the mask have the
    memory layout the eager kernels give them, ``x``'s (e.g. channels_last): a later op (a
    BatchNorm's reduction) can round differently on another layout.
    """
    lib = _load()
    dtype = x.dtype
    if spec.scaling in ("none", "tensor") and _dense(x):
        xf = x.float()                        # element order does not matter: run on x's memory as it is
    else:
        xf = x.float().contiguous()           # per-channel/group/block: the kernels need the logical order
    direct = out is not None and out.dtype == torch.float32 and out.stride() == xf.stride()
    q = out if direct else _empty_like(xf, lib)
    mask = torch.empty_like(xf, dtype=torch.bool) if want_mask else None
    n = xf.numel()
    if n:
        mp = mask.data_ptr() if mask is not None else None
        # non-temporal stores into memory that is mapped already (a given buffer, or an allocation that
        # reused memory); not into fresh pages: the kernel zeroes them through the cache when first
        # touched, and plain stores then hit those lines (measured faster)
        big = n * 4 >= NT_MIN_BYTES and q.data_ptr() % 64 == 0
        nt = SCHED_NT if big and (direct or lib.lowbit_resident(q.data_ptr(), n * 4) == 1) else 0
        fmt = spec.format
        if spec.scaling in ("none", "tensor"):
            mode = 0 if spec.scaling == "none" else (1 if scale is not None else 2)
            s = float(scale.reshape(())) if mode == 1 else 1.0
            lib.lowbit_qdq_tensor(xf.data_ptr(), q.data_ptr(), mp, n, _elem(fmt, spec.rounding, spec.saturate),
                                  mode, s, fmt.max, int(spec.pow2_scale), _threads(n), nt)
        else:
            bs = xf.shape[-1] if spec.scaling != "channel" else n // xf.shape[0]
            elem = fmt.element if spec.scaling == "block" else fmt
            sat = True if spec.scaling == "block" else spec.saturate
            lib.lowbit_qdq_blocks(xf.data_ptr(), q.data_ptr(), mp, n // bs, bs, _elem(elem, spec.rounding, sat),
                                  _blk(spec), _threads(n), nt)
    if dtype != torch.float32:
        q = q.to(dtype)
    if out is not None and not direct:
        out.copy_(q)
        q = out
    elif not x.is_contiguous():               # back to x's layout where the kernels ran on a copy
        q = _like(x, q)
    if mask is not None and not x.is_contiguous():
        mask = _like(x, mask)
    return q, mask

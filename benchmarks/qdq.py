#!/usr/bin/env python
"""Quantize-dequantize throughput: lowbit against the physical floor (a copy) and against peers.

For every format row it times, on one ``--size`` x ``--size`` fp32 tensor:

* new tensor:   ``lowbit.quantize(x, ...)``           against ``x.clone()``
* given buffer: ``lowbit.quantize(x, ..., out=buf)``  against ``buf.copy_(x)``

and every installed peer that implements the same format (torch's own casts, ml_dtypes, torchao,
Brevitas, QPyTorch; 'n/a' where one is missing or does not support the format). Each peer's result
is compared with lowbit's (max |difference| and how many elements differ), so the timings compare
the same computation.

Timing: every implementation runs twice untimed first (lowbit and compiled peers compile then; the
first call's time is printed as lowbit's compile time), then ``--reps`` interleaved rounds in which
every implementation of the row runs once, in rotating order. Reported: the median time, and the
median over rounds of the ratio to the reference (clone / copy_) timed in the same round, so a
machine shared with other jobs slows both sides of a ratio alike.

    python benchmarks/qdq.py                       # 4096 x 4096, every row, 10 rounds
    python benchmarks/qdq.py --quick               # smoke run: 1024 x 1024, 3 rounds
    python benchmarks/qdq.py --formats fp8_e4m3 mxfp4 --reps 20
    python benchmarks/qdq.py --device cuda         # same on a GPU, plus GB/s against a device copy
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import statistics
import sys
import time
import traceback
import types
import warnings
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import isa_levels  # noqa: E402  (imports neither torch nor lowbit: a level's environment comes first)

# Rows: (row name, lowbit format, extra quantize() arguments, goal group, fixed scale?)
ROWS = [
    ("fp8_e4m3", "fp8_e4m3", {"scaling": "tensor"}, "element", False),
    ("fp8_e5m2", "fp8_e5m2", {"scaling": "tensor"}, "element", False),
    ("fp6_e3m2", "fp6_e3m2", {"scaling": "tensor"}, "element", False),
    ("fp6_e2m3", "fp6_e2m3", {"scaling": "tensor"}, "element", False),
    ("fp4_e2m1", "fp4_e2m1", {"scaling": "tensor"}, "element", False),
    ("int8", "int8", {}, "element", False),
    ("int4", "int4", {}, "element", False),
    ("fp8_e4m3@fixed", "fp8_e4m3", {"scaling": "tensor"}, "element", True),
    ("int8@fixed", "int8", {}, "element", True),
    ("mxfp8_e4m3", "mxfp8_e4m3", {}, "block", False),
    ("mxfp8_e5m2", "mxfp8_e5m2", {}, "block", False),
    ("mxfp6_e3m2", "mxfp6_e3m2", {}, "block", False),
    ("mxfp6_e2m3", "mxfp6_e2m3", {}, "block", False),
    ("mxfp4", "mxfp4", {}, "block", False),
    ("nvfp4", "nvfp4", {}, "block", False),
]
ROW_NAMES = [r[0] for r in ROWS]
GOAL_LIMITS = {"element": 1.25, "block": 1.5}
GOAL_TEXT = {"element": "element formats (per-tensor scale) <= 1.25x",
             "block": "MX / NVFP4 (block scales) <= 1.5x"}
CUDA_BW_GOAL = 0.70
AUTO_SLACK = 0.05
HEADER = ("format", "implementation", "new ms", "x clone", "buf ms", "x copy_", "buf GB/s", "max|diff|",
          "differ", "notes")
PEERS = ("torch", "ml_dtypes", "torchao", "brevitas", "qtorch")


# ---- command line -----------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="rows: " + " ".join(ROW_NAMES) + "  (also: all, element, block)")
    p.add_argument("--size", type=int, default=None, help="tensor is SIZE x SIZE fp32 (default 4096; --quick 1024)")
    p.add_argument("--reps", type=int, default=None, help="timed rounds per row (default 10; --quick 3)")
    p.add_argument("--formats", nargs="+", default=["all"], metavar="ROW",
                   help="rows to run (default all); '@fixed' rows pass a given scale (delayed scaling)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: --size 1024 --reps 3, short peer budget")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--peers", nargs="+", default=["all"], metavar="PEER",
                   help=f"peers to try: all, none, or some of {', '.join(PEERS)}")
    p.add_argument("--no-compiled-peers", action="store_true",
                   help="skip the torch.compile'd variants of the torch and torchao peers")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed calls per slow peer and mode (fewer rounds, at least 3; default 4)")
    p.add_argument("--backend", choices=("auto", "eager", "compiled", "native"), default=None,
                   help="lowbit backend (default: lowbit's own default)")
    p.add_argument("--cold-cache", action="store_true",
                   help="use an empty Inductor cache so the printed compile times are cold compiles")
    p.add_argument("--burst", type=int, default=3,
                   help="timed back-to-back calls per implementation and round, after one untimed call, for "
                        "calls under 50 ms (default 3; 1 = a single call right after the previous implementation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--isa", nargs="+", default=["all"], choices=isa_levels.CHOICES, metavar="LEVEL",
                   help="CPU: x86-64 ISA levels to build and time lowbit at, one table each: all (default: every "
                        "level this CPU runs), native, v2, v3, v4")
    a = p.parse_args(argv)
    a.size = a.size or (1024 if a.quick else 4096)
    a.reps = a.reps or (3 if a.quick else 10)
    a.budget = a.budget if a.budget is not None else (0.5 if a.quick else 4.0)
    if a.size < 32 or a.size % 32:
        p.error(f"--size {a.size} is not allowed; allowed: a multiple of 32 (MX block size), >= 32")
    if a.reps < 1:
        p.error("--reps must be >= 1")
    if a.burst < 1:
        p.error(f"--burst {a.burst} is not allowed; allowed: an integer >= 1")
    rows = []
    for f in a.formats:
        if f == "all":
            rows += ROW_NAMES
        elif f in ("element", "block"):
            rows += [r[0] for r in ROWS if r[3] == f]
        elif f in ROW_NAMES:
            rows.append(f)
        else:
            p.error(f"unknown format row {f!r}; allowed: all, element, block, " + ", ".join(ROW_NAMES))
    a.rows = list(dict.fromkeys(rows))
    peers = set()
    for q in a.peers:
        if q == "all":
            peers |= set(PEERS)
        elif q in PEERS:
            peers.add(q)
        elif q != "none":
            p.error(f"unknown peer {q!r}; allowed: all, none, " + ", ".join(PEERS))
    a.peer_set = peers
    return a


# ---- implementations ----------------------------------------------------------------------------------
class Unavailable(Exception):
    """A peer does not support this row (the message says why)."""


@dataclass
class Impl:
    name: str
    new: object                  # () -> tensor, allocating
    out: object = None           # () -> buf; None: no out= API, buffer mode times the allocating call
    note: str = ""               # footnote (differences in semantics)
    kind: str = "peer"           # 'ref' | 'lowbit' | 'peer'
    first_s: dict = field(default_factory=dict)
    times: dict = field(default_factory=lambda: {"new": [], "out": []})
    ratios: dict = field(default_factory=lambda: {"new": [], "out": []})
    error: str = ""
    diff: tuple | None = None
    reps: int = 0


@dataclass
class Ctx:
    torch: object
    x: object
    buf: object
    device: str
    row: str
    fmt_name: str
    kw: dict
    fixed: bool
    scale: object                # fixed scale tensor for @fixed rows, else None
    compiled_peers: bool


def _fresh_code(fn, tag):
    """Copy ``fn`` with its own code object so torch.compile caches it separately (no recompile limit)."""
    code = fn.__code__.replace(co_name=f"qdq_peer_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


_compile_count = [0]


def _compiled_pair(torch, fn, buf, x):
    """torch.compile'd (new, out) of a pure function ``fn(x) -> tensor``; out writes via copy_ in the graph."""
    _compile_count[0] += 1
    cnew = torch.compile(_fresh_code(fn, f"n{_compile_count[0]}"), fullgraph=True)

    def into(x, b):
        b.copy_(fn(x))
        return b
    cout = torch.compile(_fresh_code(into, f"o{_compile_count[0]}"), fullgraph=True)
    return (lambda: cnew(x)), (lambda: cout(x, buf))


_RECIP = ("{} rounds x * (1/s), lowbit rounds x / s (IEEE division): the two can differ by one step "
          "where x * (1/s) rounds differently")


# -- torch's own casts ---------------------------------------------------------------------------------
def peer_torch(ctx: Ctx):
    torch, x, buf = ctx.torch, ctx.x, ctx.buf
    from lowbit import get_format
    fmt = get_format(ctx.fmt_name)
    out = []
    if ctx.fmt_name in ("fp8_e4m3", "fp8_e5m2"):
        dt = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[ctx.fmt_name]
        M = fmt.max
        fixed = ctx.scale

        def fp8(x):
            s = fixed if fixed is not None else x.abs().amax() / M
            return (x / s).to(dt).to(torch.float32) * s

        def fp8_out():
            s = fixed if fixed is not None else x.abs().amax() / M
            return torch.mul((x / s).to(dt).to(torch.float32), s, out=buf)
        out.append(Impl("torch fp8 cast", lambda: fp8(x), fp8_out))
        if ctx.compiled_peers:
            n, o = _compiled_pair(torch, fp8, buf, x)
            out.append(Impl("torch fp8 cast [compiled]", n, o))
    elif fmt.kind == "int" and ctx.fmt_name in ("int8", "int4"):
        qmin, qmax = fmt.qmin, fmt.qmax
        zp = torch.zeros((), dtype=torch.int32, device=x.device)
        fixed = ctx.scale

        def fq(x):
            s = fixed if fixed is not None else x.abs().amax() / qmax
            return torch.fake_quantize_per_tensor_affine(x, s.reshape(1), zp.reshape(1), qmin, qmax)
        out.append(Impl("torch fake_quantize", lambda: fq(x), None,
                        note=_RECIP.format("torch.fake_quantize_per_tensor_affine")))
        if ctx.compiled_peers:
            n, o = _compiled_pair(torch, fq, buf, x)
            out.append(Impl("torch fake_quantize [compiled]", n, o,
                            note=_RECIP.format("torch.fake_quantize_per_tensor_affine")))
    else:
        raise Unavailable("torch has no cast for this format")
    return out


# -- ml_dtypes (numpy) -----------------------------------------------------------------------------------
def peer_ml_dtypes(ctx: Ctx):
    torch = ctx.torch
    if ctx.device != "cpu":
        raise Unavailable("numpy runs on the CPU only")
    import ml_dtypes
    import numpy as np
    from lowbit import get_format
    fmt = get_format(ctx.fmt_name)
    a, bnp = ctx.x.numpy(), ctx.buf.numpy()
    f32 = np.float32
    np_dtypes = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2,
                 "fp6_e3m2": ml_dtypes.float6_e3m2fn, "fp6_e2m3": ml_dtypes.float6_e2m3fn,
                 "fp4_e2m1": ml_dtypes.float4_e2m1fn, "int8": np.int8, "int4": ml_dtypes.int4}
    fixed = None if ctx.scale is None else f32(ctx.scale.item())

    if fmt.kind in ("float", "int"):
        dt = np_dtypes[ctx.fmt_name]
        M = f32(fmt.max)

        def cast(v):
            if fmt.kind == "int":
                return np.clip(np.rint(v), fmt.qmin, fmt.qmax).astype(dt).astype(f32)
            return np.clip(v, -M, M).astype(dt).astype(f32)    # clip: saturate like lowbit

        def run(dst=None):
            s = fixed if fixed is not None else np.abs(a).max() / M
            q = cast(a / s)
            return np.multiply(q, s, out=dst)
    else:  # block formats
        el = fmt.element
        dt = np_dtypes[el.name if el.name in np_dtypes else ctx.fmt_name]
        M, n = f32(el.max), fmt.block_size
        if fmt.scale == "e8m0":
            def run(dst=None):
                b = a.reshape(-1, n)
                amax = np.abs(b).max(axis=1, keepdims=True)
                e = ((amax.view(np.int32) >> 23) & 0xFF) - 127 - el.emax      # OCP floor rule
                X = (np.clip(e, -127, 127) + 127).astype(np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(f32)
                q = np.clip(b / X, -M, M).astype(dt).astype(f32)
                return np.multiply(q, X, out=None if dst is None else dst.reshape(-1, n)).reshape(a.shape)
        else:  # NVFP4: fp32 tensor scale, E4M3 block scales
            def run(dst=None):
                st = np.abs(a).max() / f32(448.0 * el.max)
                st = st if st > 0 else f32(1.0)
                b = a.reshape(-1, n)
                amax = np.abs(b).max(axis=1, keepdims=True)
                sb = np.clip(amax / M / st, 0, f32(448.0)).astype(ml_dtypes.float8_e4m3fn).astype(f32)
                total = sb * st
                q = np.clip(b / np.where(total > 0, total, f32(1.0)), -M, M).astype(dt).astype(f32)
                return np.multiply(q, total, out=None if dst is None else dst.reshape(-1, n)).reshape(a.shape)
    return [Impl("ml_dtypes (numpy)", lambda: torch.from_numpy(run()), lambda: (run(bnp), ctx.buf)[1],
                 note="numpy, single-threaded")]


# -- torchao ---------------------------------------------------------------------------------------------
def peer_torchao(ctx: Ctx):
    torch, x, buf = ctx.torch, ctx.x, ctx.buf
    from lowbit import get_format
    fmt = get_format(ctx.fmt_name)
    impls = []

    def add(name, fn, note="", compile_ok=True):
        impls.append(Impl(name, lambda: fn(x), None, note=note))
        if ctx.compiled_peers and compile_ok:
            n, o = _compiled_pair(torch, fn, buf, x)
            impls.append(Impl(name + " [compiled]", n, o, note=note))

    if ctx.fmt_name in ("fp8_e4m3", "fp8_e5m2"):
        dt = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}[ctx.fmt_name]
        if ctx.scale is None:
            from torchao.quantization.granularity import PerTensor
            from torchao.quantization.qat import Float8FakeQuantizeConfig
            from torchao.quantization.qat.fake_quantizer import Float8FakeQuantizer
            fq = Float8FakeQuantizer(Float8FakeQuantizeConfig(dtype=dt, granularity=PerTensor()))
            add("torchao Float8FakeQuantizer", lambda x: fq(x))
        else:
            from torchao.quantization.quant_primitives import _dequantize_affine_float8, _quantize_affine_float8
            s = ctx.scale
            add("torchao float8 affine", lambda x: _dequantize_affine_float8(_quantize_affine_float8(x, s, dt), s))
    elif fmt.kind == "float":
        from torchao.prototype.custom_fp_utils import _f32_to_floatx_unpacked, _floatx_unpacked_to_f32
        E, Mb, M = fmt.exp_bits, fmt.man_bits, fmt.max

        def fpx(x):
            s = x.abs().amax() / M
            return _floatx_unpacked_to_f32(_f32_to_floatx_unpacked(x / s, E, Mb), E, Mb) * s
        add("torchao floatx cast", fpx)
    elif fmt.kind == "int" and ctx.fmt_name in ("int8", "int4"):
        from torchao.quantization.quant_primitives import MappingType, _fake_quantize_affine, choose_qparams_affine
        lo, hi = fmt.qmin, fmt.qmax
        if ctx.scale is None:
            def fqa(x):
                s, zp = choose_qparams_affine(x, MappingType.SYMMETRIC, x.shape, torch.int8, lo, hi)
                return _fake_quantize_affine(x, x.shape, s, zp, torch.int8, lo, hi)
            add("torchao fake_quantize_affine", fqa,
                note=f"torchao's symmetric scale is amax/{(hi - lo) / 2:g}, lowbit's amax/{hi} (scale rule)")
        else:
            s, zp0 = ctx.scale, torch.zeros((), dtype=torch.int32, device=x.device)
            add("torchao fake_quantize_affine",
                lambda x: _fake_quantize_affine(x, x.shape, s, zp0, torch.int8, lo, hi),
                note=_RECIP.format("torchao"))
    elif fmt.kind == "block" and fmt.scale == "e8m0" and fmt.element.kind == "float":
        from torchao.prototype.mx_formats import constants as C
        from torchao.prototype.mx_formats.mx_tensor import ScaleCalculationMode, to_dtype, to_mx
        dt = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2, "mxfp6_e3m2": C.DTYPE_FP6_E3M2,
              "mxfp6_e2m3": C.DTYPE_FP6_E2M3, "mxfp4": torch.float4_e2m1fn_x2}[ctx.fmt_name]
        n = fmt.block_size

        def mx(x):
            s, d = to_mx(x, dt, n, ScaleCalculationMode.FLOOR)
            return to_dtype(d, s, dt, n, torch.float32)
        add("torchao to_mx+to_dtype", mx)
    elif ctx.fmt_name == "nvfp4":
        from torchao.prototype.mx_formats.kernels import f4_unpacked_to_f32, unpack_uint4
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale

        def nv(x):
            st = per_tensor_amax_to_scale(x.abs().amax())
            sb, d = nvfp4_quantize(x, 16, st)
            v = f4_unpacked_to_f32(unpack_uint4(d)).reshape(x.shape[0], -1, 16)
            return (v * (sb.to(torch.float32) * st).unsqueeze(-1)).reshape(x.shape)
        add("torchao nvfp4_quantize", nv, note="torchao scales x by reciprocals (x * (1/s_t) / s_b), lowbit "
                                                "divides by s_b * s_t; torchao clamps s_b >= E4M3 eps")
    else:
        raise Unavailable("torchao has no fake quantization for this format")
    return impls


# -- Brevitas --------------------------------------------------------------------------------------------
def peer_brevitas(ctx: Ctx):
    torch, x = ctx.torch, ctx.x
    from lowbit import get_format
    fmt = get_format(ctx.fmt_name)
    from brevitas.nn import QuantIdentity
    if fmt.kind == "block":
        if fmt.scale != "e8m0" or fmt.element.kind != "float":
            raise Unavailable("Brevitas has no NVFP4 quantizer")
        from brevitas.quant.mx_quant_ocp import MXFloat8e4m3Act
        el = fmt.element
        quant = MXFloat8e4m3Act.let(bit_width=el.bits, exponent_bit_width=el.exp_bits,
                                    mantissa_bit_width=el.man_bits, group_dim=-1, group_size=fmt.block_size)
        name = "brevitas MX act quant"
    elif ctx.scale is None:
        raise Unavailable("Brevitas activation quantizers use a calibrated (fixed) scale in eval mode: "
                          "see the @fixed rows")
    else:
        from brevitas.inject.enum import ScalingImplType
        if ctx.fmt_name == "int8":
            from brevitas.quant import Int8ActPerTensorFloat as base
            threshold = float(ctx.scale) * 128      # Brevitas: scale = threshold / 2^(bits-1)
        elif ctx.fmt_name == "fp8_e4m3":
            from brevitas.quant.float_quant_ocp import Fp8e4m3OCPActPerTensorFloat as base
            threshold = float(ctx.scale) * fmt.max  # scale = threshold / max
        else:
            raise Unavailable("no Brevitas quantizer mapped for this row")
        quant = base.let(scaling_impl_type=ScalingImplType.CONST, scaling_init=threshold)
        name = "brevitas QuantIdentity"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = QuantIdentity(act_quant=quant, return_quant_tensor=False).to(x.device).eval()

    def run():
        with torch.no_grad():
            return mod(x)
    return [Impl(name + " (eval)", run, None)]


# -- QPyTorch --------------------------------------------------------------------------------------------
def peer_qtorch(ctx: Ctx):
    from lowbit import get_format
    fmt = get_format(ctx.fmt_name)
    if fmt.kind == "block":
        raise Unavailable("QPyTorch's block_quantize is block floating point (int mantissas), not MX/NVFP4")
    if "qtorch_build" not in _peer_state:            # the first import JIT-builds a C++ extension
        try:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _quiet_import("qtorch.quant")
            _peer_state["qtorch_build"] = f"ok ({time.perf_counter() - t0:.1f}s to import)"
        except BaseException as e:  # noqa: BLE001 - a failed extension build can raise SystemExit
            if isinstance(e, KeyboardInterrupt):
                raise
            _peer_state["qtorch_build"] = "unavailable: its C++ extension did not build: " + _short(e)
    if not _peer_state["qtorch_build"].startswith("ok"):
        raise Unavailable(_peer_state["qtorch_build"])
    from qtorch.quant import fixed_point_quantize, float_quantize
    x = ctx.x
    fixed = ctx.scale
    if fmt.kind == "float":
        E, Mb, M = fmt.exp_bits, fmt.man_bits, fmt.max

        def run():
            s = fixed if fixed is not None else x.abs().amax() / M
            return float_quantize(x / s, E, Mb, "nearest") * s
        note = ("QPyTorch's float_quantize rounds ties away from zero (lowbit: ties to even), and keeps the "
                "top exponent for numbers (e4m3 max 480, OCP 448; no effect here as |x / s| <= max)")
    else:
        bits, qmax = fmt.bits, fmt.qmax

        def run():
            s = fixed if fixed is not None else x.abs().amax() / qmax
            return fixed_point_quantize(x / s, bits, 0, rounding="nearest") * s
        note = ""
    return [Impl("qtorch", run, None, note=note)]


PEER_FUNCS = {"torch": peer_torch, "ml_dtypes": peer_ml_dtypes, "torchao": peer_torchao,
              "brevitas": peer_brevitas, "qtorch": peer_qtorch}


def peer_versions(peer_set):
    """{peer: version string or 'not installed (...)'}; imports nothing heavy that fails loudly."""
    import importlib.metadata as md
    out = {}
    for name, dist in (("torch", "torch"), ("ml_dtypes", "ml_dtypes"), ("torchao", "torchao"),
                       ("brevitas", "brevitas"), ("qtorch", "qtorch")):
        if name not in peer_set:
            out[name] = "skipped (--peers)"
            continue
        try:
            out[name] = md.version(dist)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


# ---- measuring -----------------------------------------------------------------------------------------
def _fmt_ms(t):
    return "-" if t is None else (f"{t * 1e3:.1f}" if t >= 0.1 else f"{t * 1e3:.2f}" if t >= 0.001
                                  else f"{t * 1e3:.3f}")


def _fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def _median(v):
    return statistics.median(v) if v else None


def _short(e):
    s = f"{type(e).__name__}: {e}" if not isinstance(e, Unavailable) else str(e)
    s = s.strip().splitlines()[0] if s.strip() else type(e).__name__
    return s[:150]


def measure_row(args, torch, lowbit, row, x, buf, sync, peer_ok):
    name, fmt_name, kw, group, fixed = row
    kw = dict(kw)
    scale = None
    if fixed:
        fmt = lowbit.get_format(fmt_name)
        scale = (x.abs().amax() / fmt.max).reshape(())        # a calibrated scale, given as scale=
        kw["scale"] = scale
    if args.backend:
        kw["backend"] = args.backend
    ref_clone = Impl("x.clone() | buf.copy_(x)", lambda: x.clone(), lambda: buf.copy_(x), kind="ref")
    lb = Impl("lowbit" + (f" [{args.backend}]" if args.backend else ""), lambda: lowbit.quantize(x, fmt_name, **kw),
              lambda: lowbit.quantize(x, fmt_name, out=buf, **kw), kind="lowbit")
    impls = [ref_clone, lb]
    if args.device == "cpu" and args.backend in (None, "auto"):
        # lowbit's other fast backend, for the auto goal (eager is 20-100x slower at benchmark sizes)
        kc = dict(kw, backend="compiled")
        impls.append(Impl("lowbit [compiled]", lambda: lowbit.quantize(x, fmt_name, **kc),
                          lambda: lowbit.quantize(x, fmt_name, out=buf, **kc), kind="own"))
    skipped = []                                          # (peer, reason) for the n/a lines
    ctx = Ctx(torch, x, buf, args.device, name, fmt_name, kw, fixed, scale, not args.no_compiled_peers)
    for peer in PEERS:
        if peer not in peer_ok:
            skipped.append((peer, peer_ok_reason(peer)))
            continue
        try:
            with _quiet_logs():
                impls += PEER_FUNCS[peer](ctx)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - a peer must never fail the benchmark
            skipped.append((peer, _short(e)))

    # warm-up: two untimed calls per mode; the first call's time is kept (compile time for lowbit)
    for im in impls:
        for mode in ("new", "out"):
            fn = im.new if mode == "new" else im.out
            if fn is None:
                continue
            try:
                with warnings.catch_warnings(), _quiet_logs(im.kind == "peer"):
                    warnings.simplefilter("ignore")
                    for i in range(2):
                        sync()
                        t0 = time.perf_counter()
                        r = fn()
                        sync()
                        dt = time.perf_counter() - t0
                        if i == 0:
                            im.first_s[mode] = dt
                        im.first_s[mode + "_warm"] = dt
                        del r
            except Exception as e:  # noqa: BLE001
                im.error = f"{mode}: {_short(e)}"
                if im.kind not in ("peer", "own"):
                    raise
                break
    impls = [im for im in impls if not im.error or im.kind != "peer"] + \
        [im for im in impls if im.error and im.kind == "peer"]
    live = [im for im in impls if not im.error]

    # agreement with lowbit (after warm-up, on the full tensor)
    ref = lb.new()
    sync()
    for im in live:
        if im.kind not in ("peer", "own"):
            continue
        try:
            y = im.new().to(ref.device, torch.float32)
            d = (y - ref).abs()
            both_nan = torch.isnan(y) & torch.isnan(ref)
            d = torch.where(both_nan, 0.0, d)
            nd = int((d != 0).sum()) + int(torch.isnan(d).sum())
            im.diff = (float(torch.nan_to_num(d, nan=float("inf")).max()), nd, d.numel())
            del y, d
        except Exception as e:  # noqa: BLE001
            im.diff = None
            im.error = f"compare: {_short(e)}"
    lb_out = lb.out().clone()
    lb.diff = (float((lb_out - ref).abs().max()), int((lb_out != ref).sum()), ref.numel())  # out= == new
    del ref, lb_out

    # timed rounds, interleaved and in rotating order
    slots = []
    for im in live:
        for mode in ("new", "out"):
            fn = im.new if mode == "new" else im.out
            if fn is None:
                continue
            warm = im.first_s.get(mode + "_warm", 0.0)
            reps = args.reps if im.kind != "peer" else max(1, min(args.reps, max(3, int(args.budget / max(warm, 1e-9)))))
            slots.append((im, mode, fn, reps))
    for r in range(args.reps):
        order = slots[r % len(slots):] + slots[:r % len(slots)]
        round_t = {}
        for im, mode, fn, reps in order:
            if r >= reps:
                continue
            # a burst: one untimed call absorbs the previous implementation's deferred work (dirty cache
            # lines still to be written back, freed memory); then the mean of back-to-back calls
            warm = im.first_s.get(mode + "_warm", 0.0)
            burst = args.burst if warm < 0.05 else 1
            if burst > 1:
                del_res = fn()
                sync()
                del del_res
            t0 = time.perf_counter()
            for _ in range(burst):
                res = fn()
                sync()
                del res
            dt = (time.perf_counter() - t0) / burst
            im.times[mode].append(dt)
            round_t[(id(im), mode)] = dt
        t_clone, t_copy = round_t[(id(ref_clone), "new")], round_t[(id(ref_clone), "out")]
        for im, mode, fn, reps in slots:
            if (id(im), mode) in round_t:
                im.ratios[mode].append(round_t[(id(im), mode)] / (t_clone if mode == "new" else t_copy))
                if im.out is None:     # no out= API: buffer mode is the allocating call, against copy_
                    im.ratios["out"].append(round_t[(id(im), mode)] / t_copy)
    for im in live:
        im.reps = len(im.times["new"])
    return impls, skipped


_peer_state = {}


def peer_ok_reason(peer):
    return _peer_state.get(peer, "not requested")


def check_peers(args):
    """Which peers import here ({name: ok}); reasons for the others go to _peer_state."""
    ok = set()
    for peer in PEERS:
        if peer not in args.peer_set:
            _peer_state[peer] = "skipped (--peers)"
            continue
        try:
            if peer == "qtorch":       # importing qtorch.quant builds a C++ extension: done when first used
                import importlib.util
                if importlib.util.find_spec("qtorch") is None:
                    raise ImportError("No module named 'qtorch'")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _quiet_import(peer)
            ok.add(peer)
            _peer_state[peer] = "ok"
        except BaseException as e:  # noqa: BLE001 - SystemExit from a failed C++ build too
            _peer_state[peer] = "unavailable: " + _short(e)
    return ok


@contextlib.contextmanager
def _quiet_logs(on=True):
    """Silence logging (a peer's failed torch.compile logs its whole graph); the error is still footnoted."""
    if not on:
        yield
        return
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _quiet_import(mod):
    """Import ``mod`` with its chatter (extension builds, optional-library notices) kept off the table."""
    import importlib
    import io
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        importlib.import_module(mod)
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        logging.disable(logging.NOTSET)


# ---- report --------------------------------------------------------------------------------------------
def source_state(lowbit):
    """'git <commit>[ + uncommitted changes]' of the lowbit checkout, or '' outside a git checkout."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(lowbit.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "lowbit"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"git {head}" + (" + uncommitted changes in lowbit/" if dirty else "") if head else ""


def render(args, torch, results, notes_out):
    """Rows of cells for the table; collects footnotes."""
    nbytes = 2 * 4 * args.size * args.size      # read fp32 + write fp32
    lines = []
    foot = {}

    def footref(text):
        if text not in foot:
            foot[text] = len(foot) + 1
        return f"[{foot[text]}]"

    for row, (impls, skipped) in results.items():
        first = True
        for im in impls:
            cells = [row if first else "", im.name]
            first = False
            if im.error:
                cells += ["n/a"] * 8
                cells[-1] = footref(f"{im.name}: {im.error}")
                lines.append(cells)
                continue
            tn, to = _median(im.times["new"]), _median(im.times["out"])
            rn, ro = _median(im.ratios["new"]), _median(im.ratios["out"])
            native_out = im.out is not None
            t_buf = to if native_out else tn
            gbs = f"{nbytes / t_buf / 1e9:.1f}" if t_buf else "-"
            notes = []
            if im.kind in ("lowbit", "own"):
                c = im.first_s
                notes.append(f"first call {c.get('new', 0):.2f}s / {c.get('out', 0):.2f}s (out=)")
                if im.diff and im.diff[0] != 0:
                    notes.append(f"out= differs from new by {im.diff[0]:.3g}!")
            if im.kind == "peer":
                if not native_out:
                    notes.append("*")
                if im.reps < args.reps:
                    notes.append(f"{im.reps} rounds")
                if im.note:
                    notes.append(footref(im.note))
            diff, differ = "", ""
            if im.kind in ("peer", "own") and im.diff:
                m, nd, n = im.diff
                diff = "0" if m == 0 else f"{m:.3g}"
                differ = "0" if nd == 0 else (str(nd) if nd < 1000 else f"{100 * nd / n:.2g}%")
            cells += [_fmt_ms(tn), _fmt_ratio(rn), _fmt_ms(t_buf) + ("*" if not native_out and im.kind == "peer" else ""),
                      _fmt_ratio(ro), gbs, diff, differ, " ".join(notes)]
            lines.append(cells)
        for peer, why in skipped:
            if why.startswith("skipped"):
                continue
            lines.append(["", peer, "n/a", "", "", "", "", "", "", footref(f"{peer}: {why}")])
    notes_out.update(foot)
    return lines


def print_table(lines):
    widths = [max(len(str(r[i])) for r in [HEADER] + lines) for i in range(len(HEADER))]
    right = {2, 3, 4, 5, 6, 7, 8}

    def fmt(r):
        return "  ".join((str(c).rjust(w) if i in right else str(c).ljust(w)) for i, (c, w) in
                         enumerate(zip(r, widths))).rstrip()
    print(fmt(HEADER))
    print("  ".join("-" * w for w in widths))
    prev = None
    for r in lines:
        if r[0] and prev is not None:
            print()
        print(fmt(r))
        prev = r


def goals(args, results):
    """Summary lines, one per goal, PASS/MISS for both modes."""
    out = []
    for group in ("element", "block"):
        limit = GOAL_LIMITS[group]
        cells = []
        for mode, what in (("new", "new tensor"), ("out", "given buffer")):
            worst, over, n = None, [], 0
            for row, (impls, _) in results.items():
                if ROWS[ROW_NAMES.index(row)][3] != group:
                    continue
                lb = next(im for im in impls if im.kind == "lowbit")
                r = _median(lb.ratios[mode])
                if r is None:
                    continue
                n += 1
                if worst is None or r > worst[0]:
                    worst = (r, row)
                if r > limit:
                    over.append(row)
            if not n:
                cells.append(f"{what}: n/a")
                continue
            verdict = "PASS" if not over else "MISS"
            extra = f"; {len(over)}/{n} rows over" if over else ""
            cells.append(f"{what}: {verdict} (worst {worst[1]} {worst[0]:.2f}x{extra})")
        ref = "x.clone() / buf.copy_(x)"
        out.append(f"GOAL {GOAL_TEXT[group]} {ref}: " + " | ".join(cells))
    cells = []
    for mode, what in (("new", "new tensor"), ("out", "given buffer")):
        compared, losses = 0, []
        for row, (impls, _) in results.items():
            lb = next(im for im in impls if im.kind == "lowbit")
            t_lb = _median(lb.ratios[mode])
            for im in impls:
                if im.kind != "peer" or im.error:
                    continue
                t = _median(im.ratios[mode])
                if t is None or t_lb is None:
                    continue
                compared += 1
                if t <= t_lb:
                    losses.append(f"{row}: {im.name} {t_lb / t:.2f}x faster")
        if not compared:
            cells.append(f"{what}: n/a (no peer ran)")
        elif losses:
            cells.append(f"{what}: MISS ({len(losses)}/{compared} peer timings beat lowbit: " + "; ".join(losses) + ")")
        else:
            cells.append(f"{what}: PASS ({compared} peer timings)")
    out.append("GOAL faster than every peer (same format, same mode): " + " | ".join(cells))
    own = _auto_goal(results)
    if own:
        out.append(own)
    if args.device == "cuda":
        cells = []
        for mode, what in (("new", "new tensor"), ("out", "given buffer")):
            worst = None
            for row, (impls, _) in results.items():
                lb = next(im for im in impls if im.kind == "lowbit")
                r = _median(lb.ratios[mode])
                if r is not None and (worst is None or 1 / r < worst[0]):
                    worst = (1 / r, row)
            if worst is None:
                cells.append(f"{what}: n/a")
            else:
                cells.append(f"{what}: {'PASS' if worst[0] >= CUDA_BW_GOAL else 'MISS'} "
                             f"(lowest {worst[0] * 100:.0f}% of copy, {worst[1]})")
        out.append(f"GOAL cuda: >= {CUDA_BW_GOAL * 100:.0f}% of device-copy bandwidth: " + " | ".join(cells))
    return out


def _auto_goal(results):
    """backend='auto' within AUTO_SLACK of lowbit's fastest backend in every row and mode (None: not timed)."""
    cells = []
    for mode, what in (("new", "new tensor"), ("out", "given buffer")):
        worst, over, n = None, [], 0
        for row, (impls, _) in results.items():
            lb = next(im for im in impls if im.kind == "lowbit")
            for im in impls:
                if im.kind != "own" or im.error or not im.times[mode] or not lb.times[mode]:
                    continue
                r = _median([a / b for a, b in zip(lb.times[mode], im.times[mode])])   # per round
                n += 1
                if worst is None or r > worst[0]:
                    worst = (r, row)
                if r > 1 + AUTO_SLACK:
                    over.append(row)
        if n:
            cells.append(f"{what}: {'PASS' if not over else 'MISS'} (worst {worst[1]} {worst[0]:.2f}x"
                         + (f"; {len(over)}/{n} rows over" if over else "") + ")")
    if not cells:
        return None
    return (f"GOAL backend='auto' <= {1 + AUTO_SLACK:.2f}x lowbit's fastest other backend (compiled): "
            + " | ".join(cells))


# ---- main ----------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    level = None
    if args.device == "cpu":
        try:
            levels = isa_levels.resolve(args.isa)
        except ValueError as e:
            print(f"error: --isa: {e}", file=sys.stderr)
            return 2
        if len(levels) > 1:
            return isa_levels.run_each(os.path.abspath(__file__),
                                       isa_levels.strip_isa(sys.argv[1:] if argv is None else list(argv)), levels)
        level = levels[0]
        level_text = isa_levels.enter(level)
    if args.cold_cache:
        import tempfile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lowbit_bench_inductor_")
    warnings.filterwarnings("ignore", message=".*Failed to load.*")
    import torch
    import lowbit

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available here (torch "
              f"{torch.__version__}); run with --device cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.size, args.size, generator=g).to(dev)
    buf = torch.empty_like(x)

    t0 = time.perf_counter()
    peer_ok = check_peers(args)
    versions = peer_versions(args.peer_set)
    where = (torch.cuda.get_device_name(0) if args.device == "cuda"
             else f"{isa_levels.cpu_name()}, {torch.get_num_threads()} threads")
    src = source_state(lowbit)
    print(f"lowbit {lowbit.__version__}{' (' + src + ')' if src else ''} quantize-dequantize benchmark: "
          f"{args.size}x{args.size} fp32 on {args.device} ({where}); torch {torch.__version__}, "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    if level is not None:
        print(f"ISA level {level}: {level_text}")
    print(f"timing: median of {args.reps} interleaved rounds after 2 warm-up calls; ratios are medians of "
          f"per-round ratios to the reference timed in the same round")
    print("peers: " + ", ".join(
        f"{p} {versions[p]}" + ("" if _peer_state.get(p) in ("ok", None) or versions[p].startswith(("not", "skip"))
                                  else f" ({_peer_state[p]})") for p in PEERS)
          + ("" if not args.no_compiled_peers else "; compiled peers skipped"))
    print(f"(peer check took {time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    results = {}
    for row in ROWS:
        if row[0] not in args.rows:
            continue
        t1 = time.perf_counter()
        print(f"  running {row[0]} ...", file=sys.stderr, end="", flush=True)
        try:
            results[row[0]] = measure_row(args, torch, lowbit, row, x, buf, sync, peer_ok)
        except Exception:
            print(file=sys.stderr)
            traceback.print_exc()
            return 1
        print(f" {time.perf_counter() - t1:.1f}s", file=sys.stderr, flush=True)

    print()
    foot = {}
    print_table(render(args, torch, results, foot))
    print()
    print("new = allocating call (x.clone() is its floor); buf = writing into a given tensor (buf.copy_(x) is its "
          "floor); x clone / x copy_ = median per-round ratio; buf GB/s = 8 bytes per element / buf time.")
    print("max|diff| / differ: against lowbit's result on the same input (0 = bit-identical). "
          "* = no out= API: the buffer column times the allocating call (the peer is not charged for a copy).")
    for text, i in sorted(foot.items(), key=lambda kv: kv[1]):
        print(f"[{i}] {text}")
    print()
    for line in goals(args, results):
        print(line if level is None else line.replace("GOAL ", f"GOAL [{level}] ", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

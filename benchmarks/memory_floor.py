"""Where the given-buffer time of a quantize goes: the memory floor of one and two passes, and compute.

A dynamic per-tensor quantize must know amax(|x|) before it can round any element, so a tensor
larger than the last-level cache is read twice from memory: an amax pass, then a quantize pass
that writes into ``out``. This script measures, per x86-64 level (one child process each, as
benchmarks/qdq.py), on one ``--size`` x ``--size`` fp32 tensor with 2 threads:

* memory: a read-only pass (the faster, per round, of ``torch.amax(x)`` and ``numpy.max`` over each
  half of ``x`` in 2 threads; at v3/v4 ATen's amax runs at the memory's read speed; at v2 neither
  does: ATen's ``default`` capability is scalar and numpy's max handles NaNs, so the v2 floor is an
  upper bound, and the memory, the same at every level, is better read off the v3/v4 tables),
  ``buf.fill_(1)`` (a write-only pass), ``buf.copy_(x)`` (the copy floor of qdq.py's buffer mode),
  and the **two-pass floor** ``(read + copy_) / copy_``;
* lowbit into ``buf``: int8 and fp8_e4m3 with a given scale (one pass) and with the dynamic
  per-tensor scale (two passes), as ratios to ``copy_`` measured in the same round;
* compute: lowbit's time per element and thread on a 1 MiB tensor that stays in L2 (1 thread).

Every timing is the median over ``--rounds`` interleaved rounds; before each timed call another
64 MiB tensor is written, so the input does not start in the cache.

    python benchmarks/memory_floor.py            # every level this CPU runs (~1 minute)
    python benchmarks/memory_floor.py --isa v3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import isa_levels  # noqa: E402

if __name__ == "__main__":
    isa_levels.enter_from_argv(sys.argv[1:])   # a one-level run: that level's environment before torch starts

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lowbit  # noqa: E402

FORMATS = (("int8", {}, 127.0), ("fp8_e4m3", {"scaling": "tensor"}, 448.0))


def _timed(fn, evict: torch.Tensor) -> float:
    evict.add_(1.0)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def memory_table(size: int, rounds: int) -> list[str]:
    torch.set_num_threads(2)
    x = torch.randn(size, size)
    buf, evict = torch.empty_like(x), torch.empty(16 << 20)
    halves = (x.numpy()[: size // 2], x.numpy()[size // 2:])
    pool = ThreadPoolExecutor(2)
    calls = {"read: torch.amax(x)": lambda: torch.amax(x),
             "read: numpy.max, 2 threads": lambda: list(pool.map(np.max, halves)),
             "write: buf.fill_(1)": lambda: buf.fill_(1.0),
             "buf.copy_(x)": lambda: buf.copy_(x)}
    for fmt, kw, fmax in FORMATS:
        s = x.abs().amax() / fmax
        calls[f"lowbit {fmt}, given scale (1 pass)"] = lambda f=fmt, k=kw, s=s: lowbit.quantize(x, f, scale=s, out=buf, **k)
        calls[f"lowbit {fmt}, dynamic scale (2 passes)"] = lambda f=fmt, k=kw: lowbit.quantize(x, f, out=buf, **k)
    for fn in calls.values():
        fn(), fn()
    times = {k: [] for k in calls}
    for r in range(rounds):
        names = list(calls)[r % len(calls):] + list(calls)[:r % len(calls)]
        for name in names:
            times[name].append(_timed(calls[name], evict))
    copy = times["buf.copy_(x)"]
    lines = [f"{'call':44} {'ms':>7} {'x copy_':>8}"]
    for name, ts in times.items():
        ratio = statistics.median(t / c for t, c in zip(ts, copy))
        lines.append(f"{name:44} {1e3 * statistics.median(ts):7.2f} {ratio:7.2f}x")
    read = [min(a, b) for a, b in zip(times["read: torch.amax(x)"], times["read: numpy.max, 2 threads"])]
    floor = statistics.median((r + c) / c for r, c in zip(read, copy))
    lines.append(f"two-pass floor (faster read + copy_) / copy_: {floor:.2f}x "
                 f"(the 1.25x goal is {'below' if floor > 1.25 else 'above'} it at {size} x {size})")
    return lines


def compute_table() -> list[str]:
    torch.set_num_threads(1)
    n = 1 << 18
    x = torch.randn(n)
    buf = torch.empty_like(x)
    rows = []
    for fmt, kw, _ in FORMATS + (("mxfp4", {}, 0.0), ("nvfp4", {}, 0.0)):
        fn = lambda f=fmt, k=kw: lowbit.quantize(x, f, out=buf, **k)
        for _ in range(5):
            fn()
        best = min(_timed(fn, buf[:1]) for _ in range(200))
        rows.append(f"{fmt} {1e9 * best / n:.2f}")
    return ["in-L2 compute, ns per element per thread (dynamic scale, call overhead included): " + ", ".join(rows)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="N of the N x N fp32 tensor (default 4096: 64 MiB)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--isa", nargs="+", default=["all"], choices=isa_levels.CHOICES, metavar="LEVEL",
                    help="x86-64 ISA levels: all (default), native, v2, v3, v4")
    args = ap.parse_args(argv)
    if args.size < 32 or args.rounds < 1:
        ap.error(f"--size must be >= 32 and --rounds >= 1, got {args.size} and {args.rounds}")
    code, level = isa_levels.run_levels(__file__, argv, args.isa, ap.error)
    if code is not None:
        return code
    print(f"ISA level {level}: {isa_levels.describe_run(level)}; {isa_levels.cpu_name()}, "
          f"torch {torch.__version__}")
    print("\n".join(memory_table(args.size, args.rounds) + compute_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

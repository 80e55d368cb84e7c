#!/usr/bin/env python
"""Hand-written GCC vectors or a SIMD library? lowbit's per-tensor fp8_e4m3 kernel against the same
arithmetic in Highway (Debian ``libhwy-dev``), per x86-64 level this CPU runs.

simd_library.cpp includes lowbit/ops/qdq_native.cpp and times, on a 4096 x 4096 fp32 array and 2
OpenMP threads: a memcpy, ``lowbit_qdq_tensor`` (amax pass + quantize, non-temporal stores) and a
Highway version of the same two passes (statically dispatched: Highway's AVX2 and AVX-512 targets
also need AES and CLMUL, so those get ``-maes -mpclmul`` on top of the level's ``-march``). It checks
that both give the same bits. The Highway version is specialised to fp8_e4m3 (subnormals, saturation
as constants), so it does slightly less work per element than lowbit's general kernel.

    python benchmarks/simd_library.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import isa_levels  # noqa: E402

HERE = Path(__file__).resolve().parent
OPS = HERE.parent / "lowbit" / "ops"


def main() -> int:
    if not Path("/usr/include/hwy/highway.h").exists():
        print("Highway headers not found (/usr/include/hwy): apt-get install libhwy-dev", file=sys.stderr)
        return 2
    levels = list(isa_levels.NB.supported_levels())
    if not levels:
        print("not an x86-64 CPU with readable flags: no levels to compare", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            march = isa_levels.NB.X86_LEVELS[level][0]
            extra = [] if level == "v2" else ["-maes", "-mpclmul"]
            exe = Path(tmp) / f"simd_{level}"
            cmd = ["g++", "-O3", "-ffp-contract=off", "-std=c++17", "-fopenmp", f"-march={march}", *extra,
                   f"-I{OPS}", str(HERE / "simd_library.cpp"), "-o", str(exe)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode:
                print(f"{level}: build failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            print(f"== {isa_levels.NB.describe(level)}", flush=True)
            subprocess.run([str(exe)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

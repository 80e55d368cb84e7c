"""Building lowbit's native kernels (qdq_native.cpp + its headers) for one ISA level, cached on disk.

ISA levels (``LOWBIT_NATIVE_ISA``, default ``native``):

    ``native``  ``-march=native``: every extension of the building CPU (and its tuning);
    ``v2``      ``-march=x86-64-v2`` (SSE4.2): 4-lane vectors;
    ``v3``      ``-march=x86-64-v3`` (AVX2, FMA): 8-lane vectors;
    ``v4``      ``-march=x86-64-v4`` (AVX-512 F/BW/CD/DQ/VL): 16-lane vectors.

The vector width follows the level's registers (qdq_native_vec.h): GCC lowers comparisons and
selects on vectors wider than the registers to scalar code (16 lanes on AVX2 measured 13-23x a
copy). A level the CPU cannot run is refused (its code would die on an illegal instruction).
FMA contraction stays off at every level (``-ffp-contract=off``), so every level computes the same
IEEE operations as the eager reference, bit for bit.

``LOWBIT_NATIVE_LANES=4|8|16`` forces another width, for measurements only (16 lanes at v3 reproduce
the scalarised build).

The library goes to ``$LOWBIT_CACHE_DIR/native`` (default ``~/.cache/lowbit/native``), keyed by the
sources, the compiler and its version, the flags (the level's ``-march`` among them) and the CPU, and
is written atomically, so concurrent processes can build it at once.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "qdq_native.cpp"
HEADERS = [HERE / h for h in ("qdq_native_vec.h", "qdq_native_threads.h")]
FLAGS = ["-O3", "-ffp-contract=off", "-std=c++17", "-shared", "-fPIC", "-pthread"]

# level -> (-march, /proc/cpuinfo flags it needs, ATen's CPU capability of that level, description)
X86_LEVELS = {
    "v2": ("x86-64-v2", ("sse4_2", "ssse3", "popcnt", "cx16"), "default", "SSE4.2, 4 lanes"),
    "v3": ("x86-64-v3", ("avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"), "avx2", "AVX2+FMA, 8 lanes"),
    "v4": ("x86-64-v4", ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"), "avx512", "AVX-512, 16 lanes"),
}
ISA_CHOICES = ("native", *X86_LEVELS)
ENV = "LOWBIT_NATIVE_ISA"


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def supported_levels() -> tuple[str, ...]:
    """The x86-64 levels this CPU runs, lowest first (none elsewhere, or if the CPU cannot be read)."""
    if not is_x86():
        return ()
    flags, out = _cpu_flags(), []
    for level, (_, needs, _, _) in X86_LEVELS.items():
        if not set(needs) <= flags:
            break
        out.append(level)
    return tuple(out)


def selected_isa(isa: str | None = None) -> str:
    """``isa`` or ``$LOWBIT_NATIVE_ISA`` or ``native``, checked against this CPU."""
    where = "isa" if isa is not None else ENV
    isa = isa if isa is not None else os.environ.get(ENV, "native")
    if isa not in ISA_CHOICES:
        raise ValueError(f"{where}={isa!r} is not an ISA level; allowed: {', '.join(ISA_CHOICES)}")
    if isa != "native" and isa not in supported_levels():
        runs = ", ".join(supported_levels()) or "none of the x86-64 levels (not x86-64, or unknown flags)"
        raise ValueError(f"{where}={isa!r}: this CPU ({platform.machine()}) cannot run x86-64-{isa} code; "
                         f"it runs: native, {runs}")
    return isa


def aten_capability(isa: str) -> str | None:
    """ATen's ``ATEN_CPU_CAPABILITY`` of an x86-64 level (None for ``native``)."""
    return X86_LEVELS[isa][2] if isa in X86_LEVELS else None


def describe(isa: str) -> str:
    return f"x86-64-{isa} ({X86_LEVELS[isa][3]})" if isa in X86_LEVELS else "-march=native"


def compiler() -> str | None:
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    return None


def cache_dir() -> Path:
    root = os.environ.get("LOWBIT_CACHE_DIR")
    if root:
        return Path(root) / "native"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lowbit" / "native"


def _cpu_id() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("flags", "model name", "Features", "CPU part"))]
        return platform.machine() + "\n" + "\n".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


LANES_ENV = "LOWBIT_NATIVE_LANES"      # experiments only: force the vector width (4, 8 or 16 lanes)


def _lanes_flag() -> list[str]:
    lanes = os.environ.get(LANES_ENV)
    if not lanes:
        return []
    if lanes not in ("4", "8", "16"):
        raise ValueError(f"{LANES_ENV}={lanes!r} is not allowed; allowed: 4, 8, 16 (unset: the level's registers)")
    return [f"-DLOWBIT_W={lanes}"]


def variants(isa: str) -> list[list[str]]:
    """Flag sets to try in order: with OpenMP (torch's threads), then without (an own thread pool)."""
    march = ["-march=native"] if isa == "native" else ["-march=" + X86_LEVELS[isa][0]]
    march += _lanes_flag()
    if isa == "native":
        return [march + ["-fopenmp"], ["-fopenmp"], march, []]
    return [march + ["-fopenmp"], march]


def build(isa: str) -> Path:
    """The cached library for ``isa`` (built first if missing); RuntimeError if it cannot be built."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX, or install g++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    src = b"".join(f.read_bytes() for f in [SOURCE, *HEADERS])
    last_err = ""
    for variant in variants(isa):
        flags = FLAGS + variant
        ident = src + version.encode() + " ".join(flags).encode() + isa.encode() + _cpu_id().encode()
        lib = cache_dir() / f"qdq_native_{isa}_{hashlib.sha256(ident).hexdigest()[:20]}.so"
        if lib.exists():
            return lib
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        os.close(fd)
        try:
            r = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True, check=False)
            if r.returncode == 0:
                os.replace(tmp, lib)
                return lib
            last_err = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"{cxx} could not build {SOURCE.name} for {describe(isa)}: {last_err}")

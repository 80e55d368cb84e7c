"""The native kernels at every ISA level equal the eager reference bit for bit.

x86-64: every level this CPU runs (v2 SSE4.2 4 lanes, v3 AVX2 8 lanes, v4 AVX-512 16 lanes) is built
(``LOWBIT_NATIVE_ISA``) and held to eager on a representative subset of tests/test_native.py (the
full file runs at ``native``). aarch64 (NEON, 4 lanes): the kernels are cross-built with Debian's
g++-aarch64-linux-gnu into tests/native/driver.cpp and run under qemu-aarch64, through the real
``quantize`` path (native.run hands each kernel call to the driver); skipped when either tool is
missing. qemu says nothing about aarch64 speed.
"""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import test_native as tn
from conftest import assert_same, probe_points, rand_f32, t
from lowbit import get_format, quantize
from lowbit.ops import native, native_build

ROOT = Path(__file__).resolve().parents[1]
LEVELS = native_build.supported_levels()
DIRECT = ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "e3m4_ftz", "e4m3_b133_ftz", "fp16", "int4", "int8"]


def _direct_casts(names):
    for name in names:
        fmt = get_format(name)
        x = t(np.concatenate([probe_points(fmt), rand_f32(1 << 12)]))
        for rounding in (["nearest", "zero"] if fmt.kind == "int" else ["nearest"]):
            for saturate in (True, False):
                tn._same(x, name, scaling="none", rounding=rounding, saturate=saturate)


def _scaled_casts():
    x = tn._mixed(2 * 4096 + 5).reshape(-1, 1) * torch.ones(1, 3)
    for name in ("fp8_e4m3", "int8"):
        for kw in (dict(scaling="tensor"), dict(scaling="tensor", pow2_scale=True),
                   dict(scaling="channel", axis=0), dict(scaling="group", group_size=3)):
            tn._same(x, name, **kw)
        tn._same(torch.randn(64, 48) * 3, name, scaling="tensor", scale=torch.tensor(0.037))


def _masks():
    for name, kw in (("mxfp4", {}), ("int8", dict(scaling="group", group_size=24)), ("fp8_e4m3", dict(scaling="tensor"))):
        tn.test_clipped_ste_masks_match(name, kw)


@pytest.mark.skipif(not LEVELS, reason="not an x86-64 CPU (or its flags cannot be read): no x86-64 levels to build")
@pytest.mark.parametrize("isa", LEVELS)
def test_every_x86_level_is_bit_identical(isa, monkeypatch):
    monkeypatch.setenv(native_build.ENV, isa)
    assert native.available(), native.unavailable_reason()
    assert native.lanes() == {"v2": 4, "v3": 8, "v4": 16}[isa]
    _direct_casts(DIRECT)
    _scaled_casts()
    for name in tn.BLOCK_FORMATS:
        tn.test_block_formats(name)
    tn.test_nvfp4_block_scales_at_e4m3_ties()
    _masks()
    for name, kw in (("fp8_e4m3", dict(scaling="tensor")), ("nvfp4", {}), ("int8", dict(scaling="group", group_size=64))):
        tn.test_every_schedule_gives_the_same_bits(name, kw, monkeypatch)


def test_isa_level_is_checked(monkeypatch):
    monkeypatch.setenv(native_build.ENV, "avx9")
    with pytest.raises(ValueError, match=r"LOWBIT_NATIVE_ISA='avx9' is not an ISA level; allowed: native, v2, v3, v4"):
        quantize(torch.randn(8), "int8", backend="native")
    monkeypatch.setattr(native_build, "supported_levels", lambda: ("v2",))
    monkeypatch.setenv(native_build.ENV, "v4")
    with pytest.raises(ValueError, match=r"cannot run x86-64-v4 code; it runs: native, v2"):
        native.available()
    monkeypatch.setenv(native_build.LANES_ENV, "32")
    with pytest.raises(ValueError, match=r"LOWBIT_NATIVE_LANES='32' is not allowed; allowed: 4, 8, 16"):
        native_build.variants("v2")


@pytest.mark.skipif(len(LEVELS) < 2, reason="needs two x86-64 levels")
def test_each_level_has_its_own_cached_build(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setattr(native, "_broken", {})
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    for isa in LEVELS[:2]:
        assert native.available(isa), native.unavailable_reason(isa)
    built = sorted(p.name.split("_")[2] for p in (tmp_path / "native").glob("qdq_native_*.so"))
    assert built == sorted(LEVELS[:2])


# ---- aarch64 under qemu-user ---------------------------------------------------------------------
CROSS, QEMU, SYSROOT = "aarch64-linux-gnu-g++", "qemu-aarch64", "/usr/aarch64-linux-gnu"


class QemuKernels:
    """Stands in for the loaded library: each kernel call runs the aarch64 driver under qemu."""

    def __init__(self, driver: Path, work: Path):
        self.driver, self.work, self.calls = driver, work, 0

    def _run(self, head: bytes, elem, blk, xp: int, qp: int, mp, n: int):
        job, out = self.work / "job.bin", self.work / "out.bin"
        job.write_bytes(head + bytes(elem) + bytes(blk) + ctypes.string_at(xp, 4 * n))
        r = subprocess.run([QEMU, "-L", SYSROOT, str(self.driver), str(job), str(out)],
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0 and r.stdout.strip() == "lanes 4", r.stderr
        data = out.read_bytes()
        ctypes.memmove(qp, data[:4 * n], 4 * n)
        if mp:
            ctypes.memmove(mp, data[4 * n:], n)
        self.calls += 1

    def lowbit_qdq_tensor(self, xp, qp, mp, n, elem, mode, scale, fmt_max, pow2, nthreads, sched):
        head = struct.pack("<6i2f3q", 0, mode, pow2, nthreads, sched, int(bool(mp)), scale, fmt_max, n, 0, 0)
        self._run(head, elem, native._Blk(), xp, qp, mp, n)

    def lowbit_qdq_blocks(self, xp, qp, mp, nblocks, bs, elem, blk, nthreads, sched):
        head = struct.pack("<6i2f3q", 1, 0, 0, nthreads, sched, int(bool(mp)), 1.0, 0.0, nblocks * bs, nblocks, bs)
        self._run(head, elem, blk, xp, qp, mp, nblocks * bs)

    def lowbit_resident(self, p, nbytes):
        return 0

    def lowbit_advise_huge(self, p, nbytes):
        return 0


@pytest.fixture(scope="module")
def aarch64_driver(tmp_path_factory):
    missing = [tool for tool in (CROSS, QEMU) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: g++-aarch64-linux-gnu, qemu-user)")
    out = tmp_path_factory.mktemp("aarch64") / "driver"
    cmd = [CROSS, *native_build.FLAGS[:3], "-pthread", "-fopenmp", f"-I{ROOT / 'lowbit' / 'ops'}",
           str(ROOT / "tests" / "native" / "driver.cpp"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_aarch64_neon_is_bit_identical_under_qemu(aarch64_driver, monkeypatch, tmp_path):
    fake = QemuKernels(aarch64_driver, tmp_path)
    monkeypatch.delenv(native_build.ENV, raising=False)
    monkeypatch.setitem(native._libs, "native", fake)
    monkeypatch.setattr(native, "MIN_PER_THREAD", 1 << 10)       # the threaded schedule too
    _direct_casts(DIRECT)
    _scaled_casts()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 320, generator=g) * torch.exp(torch.randn(48, 1, generator=g) * 8)
    x[1, 3], x[2, 40], x[4] = float("nan"), float("inf"), torch.randn(320, generator=g) * 1e-41
    for name in tn.BLOCK_FORMATS:
        tn._same(x, name)
        tn._same(tn._mixed(32 * 256).reshape(-1, 64), name)
    tn.test_nvfp4_block_scales_at_e4m3_ties()
    _masks()
    big = torch.randn(256, 256)
    assert_same(quantize(big, "mxfp4", backend="native"), quantize(big, "mxfp4", backend="eager"), big, "threads")
    assert fake.calls >= 40                                     # every case above ran on the driver

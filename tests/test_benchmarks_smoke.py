"""Smoke test: benchmarks/qdq.py runs end to end on a tiny tensor and prints its table."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.ops import native_build

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "qdq.py"
TIMEOUT_S = 60


def _run(*args, script=SCRIPT):
    cmd = [sys.executable, str(script), *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"benchmark smoke run took over {TIMEOUT_S}s here (cold compile caches or a busy machine)")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_qdq_benchmark_quick_runs():
    out = _run("--quick", "--formats", "fp8_e4m3", "mxfp4", "--reps", "1", "--size", "256", "--isa", "native")
    header = next((line for line in out.splitlines() if line.startswith("format")), None)
    assert header is not None, out
    for col in ("implementation", "new ms", "x clone", "buf ms", "x copy_", "max|diff|"):
        assert col in header, header
    for row in ("fp8_e4m3", "mxfp4"):
        assert any(line.startswith(row) for line in out.splitlines()), out
    assert "lowbit" in out and "x.clone()" in out
    assert sum(line.startswith("GOAL") for line in out.splitlines()) >= 3, out
    assert any(line.startswith("GOAL [native] backend='auto'") for line in out.splitlines()), out   # vs lowbit [compiled]
    assert "lowbit [compiled]" in out


def test_qdq_benchmark_prints_one_table_per_isa_level():
    levels = native_build.supported_levels()
    if len(levels) < 2:
        pytest.skip(f"this CPU runs {len(levels)} x86-64 level(s); the per-level run needs two")
    out = _run("--quick", "--formats", "fp8_e4m3", "nvfp4", "--reps", "1", "--size", "256", "--peers", "none",
               "--backend", "native", "--isa", *levels[:2])
    lines = out.splitlines()
    for level in levels[:2]:
        assert any(line.startswith(f"========== ISA level {level}: x86-64-{level}") for line in lines), out
        assert any(line.startswith(f"ISA level {level}: x86-64-{level}") and f"-march=x86-64-{level}" in line
                   for line in lines), out
        assert sum(line.startswith(f"GOAL [{level}]") for line in lines) == 2 * 3, out   # per table + summary
    assert sum(line.startswith("format") for line in lines) == 2, out
    assert any(line.startswith("========== goals per ISA level") for line in lines), out


def test_qat_step_quick_prints_its_level_and_goal_lines():
    levels = native_build.supported_levels()
    level = levels[0] if levels else "native"
    out = _run("--quick", "--isa", level, script=ROOT / "benchmarks" / "qat_step.py")
    lines = out.splitlines()
    assert any(line.startswith(f"ISA level {level}:") for line in lines), out
    assert any(line.startswith("fp32") for line in lines) and any(line.startswith("lowbit mxfp4") for line in lines), out
    goals = [line for line in lines if line.startswith(f"GOAL [{level}]")]
    assert len(goals) == 2 and all("not judged (--quick)" in g for g in goals), out


def test_memory_floor_prints_the_floor_and_compute_per_level():
    levels = native_build.supported_levels()
    level = levels[-1] if levels else "native"
    out = _run("--size", "256", "--rounds", "2", "--isa", level, script=ROOT / "benchmarks" / "memory_floor.py")
    lines = out.splitlines()
    assert any(line.startswith(f"ISA level {level}:") for line in lines), out
    for call in ("read: torch.amax(x)", "buf.copy_(x)", "lowbit int8, given scale (1 pass)",
                 "lowbit fp8_e4m3, dynamic scale (2 passes)"):
        assert any(line.startswith(call) and line.rstrip().endswith("x") for line in lines), (call, out)
    assert any(line.startswith("two-pass floor (faster read + copy_) / copy_: ") for line in lines), out
    assert any(line.startswith("in-L2 compute, ns per element per thread") and "nvfp4" in line for line in lines), out

"""Smoke test: benchmarks/qdq.py runs end to end on a tiny tensor and prints its table."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "qdq.py"
TIMEOUT_S = 60


def test_qdq_benchmark_quick_runs():
    cmd = [sys.executable, str(SCRIPT), "--quick", "--formats", "fp8_e4m3", "mxfp4", "--reps", "1", "--size", "256"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f"benchmark smoke run took over {TIMEOUT_S}s here (cold compile caches or a busy machine)")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    out = proc.stdout
    header = next((line for line in out.splitlines() if line.startswith("format")), None)
    assert header is not None, out
    for col in ("implementation", "new ms", "x clone", "buf ms", "x copy_", "max|diff|"):
        assert col in header, header
    for row in ("fp8_e4m3", "mxfp4"):
        assert any(line.startswith(row) for line in out.splitlines()), out
    assert "lowbit" in out and "x.clone()" in out
    assert sum(line.startswith("GOAL") for line in out.splitlines()) >= 3, out

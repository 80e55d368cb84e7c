"""One benchmark run per x86-64 ISA level the CPU supports (used by qdq.py and qat_step.py).

A level's run is a child process whose whole stack is built for that level, as on a CPU that has
nothing more: lowbit's native kernels (``LOWBIT_NATIVE_ISA``), ATen's kernels (``ATEN_CPU_CAPABILITY``:
``default`` for v2, ``avx2`` for v3, ``avx512`` for v4) and Inductor's generated C++
(``TORCHINDUCTOR_CPP_MARCH=x86-64-vN``, its vector ISA following ATEN_CPU_CAPABILITY). numpy (the
ml_dtypes peer) keeps its own runtime dispatch. This module imports neither torch nor lowbit, so a
child can set the environment before torch starts.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

_BUILD = Path(__file__).resolve().parents[1] / "lowbit" / "ops" / "native_build.py"


def _native_build():
    spec = importlib.util.spec_from_file_location("_lowbit_native_build", _BUILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NB = _native_build()
CHOICES = ("all", *NB.ISA_CHOICES)


def resolve(requested: list[str]) -> list[str]:
    """``--isa`` values -> the levels to run ('all': every x86-64 level of this CPU, else native)."""
    out = []
    for r in requested:
        if r == "all":
            out += list(NB.supported_levels()) or ["native"]
        else:
            NB.selected_isa(r)                       # ValueError for a level this CPU cannot run
            out.append(r)
    return list(dict.fromkeys(out))


def child_env(level: str) -> dict:
    """The environment variables of a run at ``level``."""
    env = {NB.ENV: level}
    cap = NB.aten_capability(level)
    if cap is not None:
        env.update(ATEN_CPU_CAPABILITY=cap, TORCHINDUCTOR_CPP_MARCH=NB.X86_LEVELS[level][0])
    return env


def inside(level: str) -> bool:
    """This process runs with ``level``'s environment already (a child of :func:`run_each`)."""
    return all(os.environ.get(k) == v for k, v in child_env(level).items())


def enter(level: str) -> str:
    """Set this process's environment for ``level`` (before torch is imported); returns its description."""
    os.environ.update(child_env(level))
    return describe_run(level)


def describe_run(level: str) -> str:
    cap = NB.aten_capability(level)
    if cap is None:
        return "native (-march=native; ATen and Inductor pick this CPU's best ISA)"
    march = NB.X86_LEVELS[level][0]
    return f"{NB.describe(level)}: lowbit's kernels -march={march}, ATen ATEN_CPU_CAPABILITY={cap}, Inductor -march={march}"


def enter_from_argv(argv: list[str]) -> None:
    """A direct run at one level (``--isa vN``, not a child of :func:`run_each`) takes that level's
    environment; call it before torch is imported."""
    want = [a for a in argv[argv.index("--isa") + 1:] if not a.startswith("-")][:1] if "--isa" in argv else []
    if len(want) == 1 and want[0] in CHOICES[1:] and not inside(want[0]):
        enter(want[0])


def run_levels(script: str, argv: list[str] | None, requested: list[str], error) -> tuple[int | None, str]:
    """``--isa`` handling of a benchmark's main(): -> (exit code, None) when the levels ran as children
    (:func:`run_each`), else (None, the one level this process runs). ``error(msg)`` reports a bad
    ``--isa`` (argparse's ``error``)."""
    try:
        levels = resolve(requested)
    except ValueError as e:
        error(f"--isa: {e}")
    if len(levels) > 1 or not inside(levels[0]):
        return run_each(os.path.abspath(script), strip_isa(sys.argv[1:] if argv is None else list(argv)), levels), None
    return None, levels[0]


def run_each(script: str, argv: list[str], levels: list[str]) -> int:
    """Run ``script argv --isa LEVEL`` once per level, streaming its output; then every GOAL line again."""
    goals, rc = [], 0
    for level in levels:
        print(f"\n========== ISA level {level}: {NB.describe(level)} ==========", flush=True)
        cmd = [sys.executable, script, *argv, "--isa", level]
        env = dict(os.environ, **child_env(level))
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1, env=env) as p:
            for line in p.stdout:
                sys.stdout.write(line)
                if line.startswith("GOAL"):
                    goals.append(line.rstrip("\n"))
            p.wait()
        if p.returncode:
            print(f"(the {level} run exited with code {p.returncode})", flush=True)
            rc = rc or p.returncode
    print("\n========== goals per ISA level ==========")
    for g in goals:
        print(g)
    return rc


def strip_isa(argv: list[str]) -> list[str]:
    """``argv`` without its ``--isa`` option and values."""
    out, skip = [], False
    for a in argv:
        if a == "--isa" or a.startswith("--isa="):
            skip = a == "--isa"
            continue
        if skip and not a.startswith("-"):
            continue
        skip = False
        out.append(a)
    return out


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

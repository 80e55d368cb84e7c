"""Build and run an exported C model: host ``cc``, and RV32IMC under qemu-system-riscv32 (semihosting).

Commands are argument lists (never a shell string). RISC-V needs Debian's gcc-riscv64-unknown-elf,
picolibc-riscv64-unknown-elf and qemu-system-misc; :func:`riscv_available` says whether they are here.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

RV_CC = "riscv64-unknown-elf-gcc"
RV_SIZE = "riscv64-unknown-elf-size"
QEMU = "qemu-system-riscv32"
# picolibc's default linker script, placed in the RAM of QEMU's "virt" machine (0x80000000)
RV_LAYOUT = ["-Wl,--defsym=__flash=0x80000000", "-Wl,--defsym=__flash_size=0x200000",
             "-Wl,--defsym=__ram=0x80200000", "-Wl,--defsym=__ram_size=0x200000"]


@dataclass
class RunResult:
    """Outcome of running main.c: mismatch count, exit code, output, per-layer instruction counts."""
    returncode: int
    mismatches: int
    stdout: str
    layer_instret: dict[str, int] = field(default_factory=dict)
    total_instret: int | None = None
    size: dict[str, int] = field(default_factory=dict)


def _parse(proc: subprocess.CompletedProcess) -> RunResult:
    out = proc.stdout
    m = re.search(r"mismatches (\d+)", out)
    layers = {a: int(b) for a, b in re.findall(r"instret layer \d+ (\S+) (\d+)", out)}
    t = re.search(r"instret total (\d+)", out)
    return RunResult(proc.returncode, int(m.group(1)) if m else -1, out, layers, int(t.group(1)) if t else None)


def _run(cmd: list[str], timeout: float, cwd=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return proc


def host_cc() -> str | None:
    """The host C compiler (``cc``, else gcc/clang), or None."""
    return next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def build_host(src_dir, cc: str | None = None) -> Path:
    """Compile main.c + model.c with strict C99 warnings as errors; returns the executable."""
    cc = cc or host_cc()
    if cc is None:
        raise RuntimeError("no host C compiler (cc, gcc or clang) on PATH")
    d = Path(src_dir)
    exe = d / "model_test"
    cmd = [cc, "-std=c99", "-pedantic", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
           str(d / "main.c"), str(d / "model.c")]
    proc = _run(cmd, 120)
    if proc.returncode != 0:
        raise RuntimeError(f"C build failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return exe


def run_host(src_dir, cc: str | None = None) -> RunResult:
    """Build with the host compiler and run the golden diff."""
    exe = build_host(src_dir, cc)
    return _parse(_run([str(exe)], 120))


def riscv_available() -> str | None:
    """None when the RISC-V toolchain and QEMU are usable, else what is missing."""
    missing = [t for t in (RV_CC, RV_SIZE, QEMU) if shutil.which(t) is None]
    if missing:
        return ("missing " + ", ".join(missing) + " (apt-get install gcc-riscv64-unknown-elf "
                "picolibc-riscv64-unknown-elf qemu-system-misc)")
    return None


def build_riscv(src_dir, opt: str = "-O2") -> Path:
    """Cross-compile for RV32IMC (ilp32) with picolibc's semihosting crt0; returns prog.elf."""
    d = Path(src_dir)
    elf = d / "prog.elf"
    cmd = [RV_CC, "-march=rv32imc", "-mabi=ilp32", "-std=c99", opt, "-Wall", "-Werror",
           "-DMODEL_PROFILE", "-DLOWBIT_QEMU_VIRT_EXIT",
           "--specs=picolibc.specs", "--oslib=semihost", *RV_LAYOUT, "-o", str(elf),
           str(d / "main.c"), str(d / "model.c")]
    proc = _run(cmd, 180)
    if proc.returncode != 0:
        raise RuntimeError(f"RISC-V build failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return elf


def elf_size(elf) -> dict[str, int]:
    """text/data/bss bytes from riscv64-unknown-elf-size."""
    out = _run([RV_SIZE, str(elf)], 30).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def run_riscv(src_dir, timeout: float = 300) -> RunResult:
    """Build for RV32IMC and run under qemu-system-riscv32 -icount shift=0 (deterministic instret).

    QEMU 7.2 does not stop on picolibc's semihosting exit on rv32, so main.c (built with
    LOWBIT_QEMU_VIRT_EXIT) powers the "virt" machine off through its test device with exit code 0 or 1.
    """
    elf = build_riscv(src_dir)
    cmd = [QEMU, "-machine", "virt", "-bios", "none", "-nographic", "-icount", "shift=0",
           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    log = Path(src_dir) / "qemu_stdout.txt"   # QEMU's semihosting console writes reliably to a file, not a pipe
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    res = _parse(subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(), ""))
    res.size = {"prog_" + k: v for k, v in elf_size(elf).items()}
    obj = Path(src_dir) / "model.o"      # the model alone: kernels (.text) + weights/tables (.rodata, in text)
    cmd = [RV_CC, "-march=rv32imc", "-mabi=ilp32", "-std=c99", "-O2", "--specs=picolibc.specs",
           "-c", "-o", str(obj), str(Path(src_dir) / "model.c")]
    if _run(cmd, 120).returncode == 0:
        res.size.update({"model_" + k: v for k, v in elf_size(obj).items()})
    return res

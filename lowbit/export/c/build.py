"""Build and run an exported C model: host ``cc``; RV32IMC under qemu-system-riscv32 (semihosting); the
plain and the Xlbmac programs under unicorn (:mod:`lowbit.export.c.emulator`), with counts.

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
# picolibc's default linker script, placed in the RAM of QEMU's "virt" machine (0x80000000): flash
# first, RAM right after it, both sized from the model (build_riscv)
FLASH_BASE = 0x80000000


@dataclass
class RunResult:
    """Outcome of running main.c: mismatch count, exit code, output, per-layer instruction counts."""
    returncode: int
    mismatches: int
    stdout: str
    layer_instret: dict[str, int] = field(default_factory=dict)
    total_instret: int | None = None
    size: dict[str, int] = field(default_factory=dict)
    layer_counts: dict = field(default_factory=dict)   # emulator: layer -> instructions, cycles, classes
    ext_executed: int = 0


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


def riscv_available(qemu: bool = True) -> str | None:
    """None when the RISC-V toolchain (and, with ``qemu``, QEMU) are usable, else what is missing."""
    missing = [t for t in (RV_CC, RV_SIZE) + ((QEMU,) if qemu else ()) if shutil.which(t) is None]
    if missing:
        return ("missing " + ", ".join(missing) + " (apt-get install gcc-riscv64-unknown-elf "
                "picolibc-riscv64-unknown-elf qemu-system-misc)")
    return None


def parse_memory(text: str | None) -> dict | None:
    """'flash=16M,ram=4M' -> {"flash": bytes, "ram": bytes} (suffix K or M; one or both keys)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        m = re.fullmatch(r"(\d+)([KkMm]?)", val.strip())
        if key.strip() not in ("flash", "ram") or not m or int(m.group(1)) == 0:
            raise ValueError(f"--memory {text!r} is not allowed; allowed: flash=SIZE,ram=SIZE with SIZE such as "
                             f"512K or 16M")
        out[key.strip()] = int(m.group(1)) << {"": 0, "k": 10, "m": 20}[m.group(2).lower()]
    return out


def _objects(src_dir, opt: str, defines: list[str]) -> list[Path]:
    d = Path(src_dir)
    objs = []
    for name in ("main", "model"):
        obj = d / f"{name}.rv.o"
        cmd = [RV_CC, "-march=rv32imc", "-mabi=ilp32", "-std=c99", opt, "-Wall", "-Werror", *defines,
               "--specs=picolibc.specs", "-c", "-o", str(obj), str(d / f"{name}.c")]
        proc = _run(cmd, 600)
        if proc.returncode != 0:
            raise RuntimeError(f"RISC-V build failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
        objs.append(obj)
    return objs


def _link(objs, elf: Path, flash: int, ram: int) -> subprocess.CompletedProcess:
    layout = [f"-Wl,--defsym=__flash={FLASH_BASE:#x}", f"-Wl,--defsym=__flash_size={flash:#x}",
              f"-Wl,--defsym=__ram={FLASH_BASE + flash:#x}", f"-Wl,--defsym=__ram_size={ram:#x}"]
    cmd = [RV_CC, "-march=rv32imc", "-mabi=ilp32", "--specs=picolibc.specs", "--oslib=semihost", *layout,
           "-o", str(elf), *map(str, objs)]
    return _run(cmd, 300)


def _align(n: int, a: int = 1 << 16) -> int:
    return -(-n // a) * a


def build_riscv(src_dir, opt: str = "-O2", emu: bool = False, memory: dict | None = None) -> tuple[Path, dict]:
    """Cross-compile for RV32IMC (ilp32) with picolibc's semihosting crt0; returns (elf, layout).

    The memory layout is sized from the model: linked once with room to spare, then again with flash
    = the linked text + rodata + data and RAM = data + bss + stack (64 KiB margins), unless ``memory``
    ({"flash", "ram"} bytes) fixes it. ``emu``: the unicorn build (layer markers, exit device)."""
    d = Path(src_dir)
    defines = ["-DLOWBIT_EMU"] if emu else ["-DMODEL_PROFILE", "-DLOWBIT_QEMU_VIRT_EXIT"]
    objs = _objects(d, opt, defines)
    elf = d / ("prog_emu.elf" if emu else "prog.elf")
    sizes = [elf_size(o) for o in objs]
    flash = _align(sum(z["text"] + z["data"] for z in sizes) + (256 << 10))
    ram = _align(sum(z["data"] + z["bss"] for z in sizes) + (128 << 10))
    memory = memory or {}
    flash, ram = memory.get("flash", flash), memory.get("ram", ram)
    proc = _link(objs, elf, flash, ram)
    if proc.returncode != 0:
        err = " ".join(proc.stderr.split())[-300:]
        raise RuntimeError(f"RISC-V link failed with flash={flash >> 10}K, ram={ram >> 10}K ({err}); "
                           f"allowed: a --memory large enough for the model")
    return elf, {"flash": (FLASH_BASE, flash), "ram": (FLASH_BASE + flash, ram)}


def elf_size(elf) -> dict[str, int]:
    """text/data/bss bytes from riscv64-unknown-elf-size."""
    out = _run([RV_SIZE, str(elf)], 30).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def run_riscv(src_dir, timeout: float = 300, memory: dict | None = None) -> RunResult:
    """Build for RV32IMC and run under qemu-system-riscv32 -icount shift=0 (deterministic instret).

    QEMU 7.2 does not stop on picolibc's semihosting exit on rv32, so main.c (built with
    LOWBIT_QEMU_VIRT_EXIT) powers the "virt" machine off through its test device with exit code 0 or 1.
    """
    elf, layout = build_riscv(src_dir, memory=memory)
    mem_mib = -(-(layout["flash"][1] + layout["ram"][1]) // (1 << 20)) + 1
    cmd = [QEMU, "-machine", "virt", "-m", f"{max(mem_mib, 128)}M", "-bios", "none", "-nographic",
           "-icount", "shift=0", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    log = Path(src_dir) / "qemu_stdout.txt"   # QEMU's semihosting console writes reliably to a file, not a pipe
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    res = _parse(subprocess.CompletedProcess(cmd, proc.returncode, log.read_text(), ""))
    res.size = {"prog_" + k: v for k, v in elf_size(elf).items()}
    res.size.update({"model_" + k: v for k, v in elf_size(Path(src_dir) / "model.rv.o").items()})
    res.size.update(flash_bytes=layout["flash"][1], ram_bytes=layout["ram"][1])
    return res


def run_emulated(src_dir, count: bool = True, memory: dict | None = None, timeout: float = 600) -> RunResult:
    """Build the unicorn program (``src_dir``: the plain or the Xlbmac sources) and run it.

    Two runs: every golden input without counting (mismatches), then, with ``count``, the first
    inference with every translation block counted: ``layer_counts`` = per layer {"instructions",
    "cycles", "classes"} (lowbit.export.c.cycles), ``total_instret`` = instructions of that inference."""
    from .cycles import tally
    from .emulator import run_elf
    elf, layout = build_riscv(src_dir, emu=True, memory=memory)
    r = run_elf(elf, layout, timeout_s=timeout)
    res = _parse(subprocess.CompletedProcess([], r.exit_code if r.exit_code is not None else -1, r.stdout, ""))
    res.size = {"prog_" + k: v for k, v in elf_size(elf).items()}
    res.size.update(flash_bytes=layout["flash"][1], ram_bytes=layout["ram"][1])
    res.ext_executed = r.ext_executed
    if count and res.returncode == 0:
        c = run_elf(elf, layout, count=True, timeout_s=timeout)
        names = re.findall(r'"((?:[^"\\]|\\.)*)"', _layer_names(Path(src_dir) / "model.h"))
        res.layer_counts = tally(c.blocks, c.fallthrough, c.code, names)
        res.layer_counts.pop("(other)", None)
        res.layer_instret = {k: v["instructions"] for k, v in res.layer_counts.items()}
        res.total_instret = sum(res.layer_instret.values())
    return res


def _layer_names(model_h: Path) -> str:
    text = model_h.read_text()
    i = text.index("model_layer_names[MODEL_N_LAYERS] = {")
    return text[i:text.index("};", i)]

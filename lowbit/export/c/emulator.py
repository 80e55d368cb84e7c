"""Run an RV32IMC(+Xlbmac) ELF in unicorn (QEMU's TCG as a library), counting instructions and cycles.

* The custom opcodes of Xlbmac are illegal to QEMU; a UC_HOOK_CODE hook at each of their addresses
  executes them with :class:`lowbit.export.c.xlbmac.MacUnit` and writes rd, and the word itself is
  replaced by a nop in the emulated memory, so QEMU steps over it (the counts classify the real word).
* picolibc's semihosting (``slli x0,x0,0x1f; ebreak; srai x0,x0,7``, a0 = call, a1 = argument) is
  served by a code hook on the ebreak: console output, exit; open/close/istty/flen trivially, others -1.
* The program signals layer boundaries and exit through stores to a device page at 0x100000
  (main.c / model.c built with ``-DLOWBIT_EMU``): 0x100000 exit code, 0x100004 layer index,
  0x100008 end of an inference.
* Counting (``count=True``) hooks every translation block: per (layer, block) executions and how
  often a block ending in a conditional branch fell through; :mod:`lowbit.export.c.cycles` turns
  that into instructions per class and cycles. Counting stops after the first inference.

Needs ``pip install unicorn==2.1.4``.
"""
from __future__ import annotations

import bisect
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .xlbmac import OPCODE_MAC, OPCODE_RQ, IllegalInstruction, MacUnit, writes_rd

DEVICE = 0x100000
NOP = struct.pack("<I", 0x00000013)   # addi x0, x0, 0
SCRATCH = 0x0                          # a page the replaced lb.rq / lb.accr words load from
EBREAK, SEMI_PRE = struct.pack("<I", 0x00100073), struct.pack("<I", 0x01F01013)   # ebreak; slli x0, x0, 0x1f
SYS_SIMPLE = {0x01: 1, 0x02: 0, 0x09: 1, 0x0C: 0}   # open -> fd 1, close, istty, flen
SYS_WRITEC, SYS_WRITE0, SYS_WRITE, SYS_EXIT, SYS_EXIT_EXTENDED = 0x03, 0x04, 0x05, 0x18, 0x20


def unicorn_available() -> str | None:
    try:
        import unicorn  # noqa: F401
    except ImportError:
        return "missing the unicorn package (pip install unicorn==2.1.4)"
    return None


def load_segments(elf: Path) -> tuple[int, list[tuple[int, bytes, int]]]:
    """(entry, [(load address, file bytes, memory size)]) of a 32-bit little-endian ELF's PT_LOAD segments."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise ValueError(f"{elf} is not a 32-bit little-endian ELF file")
    entry, phoff = struct.unpack_from("<II", data, 24)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    segs = []
    for i in range(phnum):
        p_type, off, _, paddr, filesz, memsz, _, _ = struct.unpack_from("<8I", data, phoff + i * phentsize)
        if p_type == 1 and filesz:   # at the load address: crt0 copies .data from flash to RAM itself
            segs.append((paddr, data[off:off + filesz], memsz))
    return entry, segs


def _sections(data: bytes) -> dict:
    shoff, = struct.unpack_from("<I", data, 32)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 46)
    sec = [struct.unpack_from("<10I", data, shoff + i * shentsize) for i in range(shnum)]
    names = sec[shstrndx][4]
    return {data[names + s[0]:data.index(b"\0", names + s[0])].decode(): s for s in sec}


def ext_addresses(elf: Path) -> list[int]:
    """Addresses of the Xlbmac instructions, from the .debug_lbx_sites section the kernels' LB_SITE writes
    (a sweep of .text for the opcodes would also hit constants: picolibc links .rodata into .text)."""
    data = Path(elf).read_bytes()
    sec = _sections(data).get(".debug_lbx_sites")
    if sec is None:
        return []
    off, size = sec[4], sec[5]
    return sorted(set(struct.unpack_from(f"<{size // 4}I", data, off)))


@dataclass
class EmuResult:
    exit_code: int | None
    stdout: str
    blocks: Counter = field(default_factory=Counter)      # (layer, addr, size) -> executions
    fallthrough: Counter = field(default_factory=Counter)  # (layer, addr, size) -> fell through
    code: dict = field(default_factory=dict)               # addr -> bytes of each counted block
    ext_executed: int = 0


class _Machine:
    def __init__(self, uc, mem_regions):
        self.uc, self.unit, self.out = uc, MacUnit(), []
        self.exit_code, self.layer, self.counting, self.done_inference = None, -1, False, False
        self.blocks, self.fall, self.prev, self.prev_end, self.code = Counter(), Counter(), None, -1, {}
        self.ext_executed, self.stop_after_count, self.compiled = 0, False, {}
        self.regions = mem_regions


def _reg(n: int) -> int:
    from unicorn.riscv_const import UC_RISCV_REG_X0
    return UC_RISCV_REG_X0 + n


def _ext_hook(uc, addr, size, m: _Machine):
    """Execute the Xlbmac instruction at ``addr``. Its word in emulated memory was replaced by a legal
    one (:func:`_replacement`), so QEMU runs on without a trap or a pc change (which would end the
    translation block at every custom instruction and cost a restart of the emulation loop)."""
    insn, r1, r2 = m.ext_regs[addr]
    rs1 = uc.reg_read(r1) & 0xFFFFFFFF if r1 is not None else 0
    rs2 = uc.reg_read(r2) & 0xFFFFFFFF if r2 is not None else 0
    try:
        fn = m.compiled.get(addr)
        if fn is None:
            fn = m.compiled[addr] = m.unit.compile(insn)
        rd_val = fn(rs1, rs2)
    except IllegalInstruction as exc:
        m.out.append(f"\n[emulator] illegal instruction at {addr:#x}: {exc}\n")
        m.exit_code = -4
        uc.emu_stop()
        return
    if rd_val is not None:
        uc.mem_write(SCRATCH, struct.pack("<I", rd_val))   # the lw that replaced the word reads it
    m.ext_executed += 1


def _replacement(insn: int) -> bytes:
    """What runs in place of an Xlbmac word: ``lw rd, 0(x0)`` (rd = the scratch word the hook wrote)
    for lb.accr / lb.rq, else a nop. Writing rd from the hook directly is not reliable: QEMU may hold
    the guest register in a host register across the hook's helper call."""
    rd = (insn >> 7) & 31
    return struct.pack("<I", (rd << 7) | (2 << 12) | 0x03) if writes_rd(insn) and rd else NOP


def _cstr(uc, addr: int) -> bytes:
    out = bytearray()
    while len(out) < 1 << 16:
        chunk = bytes(uc.mem_read(addr + len(out), 64))
        k = chunk.find(b"\0")
        if k >= 0:
            return bytes(out + chunk[:k])
        out += chunk
    return bytes(out)


def _semihost(uc, pc, size, m: _Machine):
    """Code hook on the ebreak of picolibc's semihosting sequence (unicorn reports a bare ebreak as an
    invalid instruction, so the call is served before it executes)."""
    from unicorn.riscv_const import UC_RISCV_REG_A0, UC_RISCV_REG_A1, UC_RISCV_REG_PC
    op, arg = uc.reg_read(UC_RISCV_REG_A0), uc.reg_read(UC_RISCV_REG_A1)
    ret = 0
    if op == SYS_WRITEC:
        m.out.append(bytes(uc.mem_read(arg, 1)).decode("latin-1"))
    elif op == SYS_WRITE0:
        m.out.append(_cstr(uc, arg).decode("latin-1"))
    elif op == SYS_WRITE:
        fd, buf, n = struct.unpack("<III", bytes(uc.mem_read(arg, 12)))
        m.out.append(bytes(uc.mem_read(buf, n)).decode("latin-1"))
    elif op in (SYS_EXIT, SYS_EXIT_EXTENDED):
        if m.exit_code is None:
            m.exit_code = 0 if arg == 0x20026 else 1
        uc.emu_stop()
        return
    elif op in SYS_SIMPLE:
        ret = SYS_SIMPLE[op]
    else:
        ret = 0xFFFFFFFF
    uc.reg_write(UC_RISCV_REG_A0, ret)
    uc.reg_write(UC_RISCV_REG_PC, pc + 4)


def _device(uc, access, addr, size, value, m: _Machine):
    if addr == DEVICE:
        m.exit_code = 0 if value == 0x5555 else (value >> 16)
        uc.emu_stop()
    elif addr == DEVICE + 4:
        m.layer = value
    elif addr == DEVICE + 8:
        m.layer = -1
        if m.counting:
            m.counting = False
            m.done_inference = True
            if m.stop_after_count:
                uc.emu_stop()


def _block(uc, addr, size, m: _Machine):
    if not m.counting:
        return
    if m.prev is not None and addr == m.prev_end:
        m.fall[m.prev] += 1
    key = (m.layer, addr, size)
    m.blocks[key] += 1
    m.prev, m.prev_end = key, addr + size
    if addr not in m.code or len(m.code[addr]) < size:
        code = bytearray(uc.mem_read(addr, size))
        for a in m.ext_sorted[bisect.bisect_left(m.ext_sorted, addr):bisect.bisect_left(m.ext_sorted, addr + size)]:
            code[a - addr:a - addr + 4] = struct.pack("<I", m.ext[a])   # classify the real instruction
        m.code[addr] = bytes(code)


def semihost_sites(segs) -> list[int]:
    """Addresses of the ebreaks of picolibc's semihosting sequence (hooks only fire if executed)."""
    out = []
    for vaddr, data, _ in segs:
        i = data.find(SEMI_PRE + EBREAK)
        while i >= 0:
            out.append(vaddr + i + 4)
            i = data.find(SEMI_PRE + EBREAK, i + 4)
    return out


def run_elf(elf, layout: dict, count: bool = False, max_instructions: int = 0,
            timeout_s: float = 600) -> EmuResult:
    """Run ``elf`` with RAM regions from ``layout`` ({"flash": (base, size), "ram": (base, size)})."""
    from unicorn import UC_ARCH_RISCV, UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_MEM_WRITE, UC_MODE_RISCV32, Uc
    uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32)
    for base, size in layout.values():
        uc.mem_map(base, size)
    uc.mem_map(DEVICE, 0x1000)
    uc.mem_map(SCRATCH, 0x1000)
    entry, segs = load_segments(elf)
    for vaddr, data, _ in segs:
        uc.mem_write(vaddr, data)
    m = _Machine(uc, layout)
    m.counting = m.stop_after_count = count
    ext, semi = ext_addresses(elf), semihost_sites(segs)
    m.ext = {a: struct.unpack("<I", bytes(uc.mem_read(a, 4)))[0] for a in ext}
    m.ext_sorted = sorted(m.ext)
    # unicorn register ids of rs1/rs2 (None: x0, or a field the instruction does not read)
    m.ext_regs = {a: (w, _reg((w >> 15) & 31) if (w >> 15) & 31 else None, _reg((w >> 20) & 31) if (w >> 20) & 31
                      else None) for a, w in m.ext.items()}
    for a in ext:
        uc.mem_write(a, _replacement(m.ext[a]))
        uc.hook_add(UC_HOOK_CODE, _ext_hook, m, a, a)
    for a in semi:
        uc.hook_add(UC_HOOK_CODE, _semihost, m, a, a)
    uc.hook_add(UC_HOOK_MEM_WRITE, _device, m, DEVICE, DEVICE + 0xFFF)
    if count:
        uc.hook_add(UC_HOOK_BLOCK, _block, m)
    uc.emu_start(entry, 0xFFFFFFFF, timeout=int(timeout_s * 1e6), count=max_instructions)
    return EmuResult(m.exit_code, "".join(m.out), m.blocks, m.fall, m.code, m.ext_executed)

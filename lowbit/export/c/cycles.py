"""Instruction classes of RV32IMC + Xlbmac and the stated cycle table (an Ibex-like 2-stage core).

:func:`classify` names the class of one instruction from its opcode bits (no execution: the emulator
executes). :func:`tally` turns the emulator's per-block execution counts into instructions and cycles
per layer. The cycle table (``CYCLES``) models lowRISC Ibex's "small" configuration (2-stage
in-order pipeline, fast multi-cycle multiplier, no branch target ALU) with single-cycle, zero
wait-state memories, after the stall cycles in Ibex's documentation ("Pipeline Details"):

    class          cycles   Ibex
    alu            1        integer computational, 0 stalls (also lui/auipc, compressed forms)
    csr            1        CSR access / system
    load, store    2        at least 1 stall to await the data-side response
    mul            3        MUL, fast multiplier: 2 stalls
    mulh           4        MULH/MULHSU/MULHU: 3 stalls
    div            37       DIV/DIVU/REM/REMU, long division: 37 cycles
    branch_nt      1        conditional branch not taken
    branch_t       3        conditional branch taken (2 stalls without a branch target ALU)
    jump           2        JAL/JALR and compressed jumps (1 stall)
    ext_mac        1        lb.mac8/4/2: 4/8/16 parallel 8 x b-bit multipliers + adder tree
    ext_move       1        lb.accw, lb.accr, lb.rqcfg
    ext_rq         4        lb.rq: a 32 x 32 -> 64-bit product and shift, as MULH
"""
from __future__ import annotations

from collections import Counter, defaultdict

from .xlbmac import F3_RQ, OPCODE_MAC, OPCODE_RQ

CYCLES = {"alu": 1, "csr": 1, "load": 2, "store": 2, "mul": 3, "mulh": 4, "div": 37, "branch_nt": 1,
          "branch_t": 3, "jump": 2, "ext_mac": 1, "ext_move": 1, "ext_rq": 4}
CORE = "Ibex-like 2-stage in-order RV32IMC, fast multiplier, zero wait-state memory (lowbit.export.c.cycles)"


def _c16(h: int) -> str:
    quad, f3 = h & 3, h >> 13
    if quad == 0:
        return {2: "load", 6: "store"}.get(f3, "alu")
    if quad == 1:
        return {1: "jump", 5: "jump", 6: "branch", 7: "branch"}.get(f3, "alu")
    if f3 == 2:
        return "load"
    if f3 == 6:
        return "store"
    if f3 == 4:
        rs1, rs2 = (h >> 7) & 31, (h >> 2) & 31
        if rs2 == 0:
            return "csr" if (h >> 12) & 1 and rs1 == 0 else "jump"   # c.ebreak / c.jr, c.jalr
    return "alu"


def _c32(w: int) -> str:
    op, f3, f7 = w & 0x7F, (w >> 12) & 7, w >> 25
    if op == 0x03:
        return "load"
    if op == 0x23:
        return "store"
    if op == 0x63:
        return "branch"
    if op in (0x6F, 0x67):
        return "jump"
    if op == 0x33 and f7 == 1:
        return "mul" if f3 == 0 else ("mulh" if f3 < 4 else "div")
    if op == 0x73:
        return "csr"
    if op == OPCODE_MAC:
        return "ext_mac" if f3 < 3 else "ext_move"
    if op == OPCODE_RQ:
        return "ext_rq" if f3 == F3_RQ else "ext_move"
    return "alu"


def classify_block(code: bytes) -> list[str]:
    """Classes of the instructions in ``code`` (a straight-line block), in order."""
    out, i = [], 0
    while i + 2 <= len(code):
        h = code[i] | (code[i + 1] << 8)
        if h & 3 != 3:
            out.append(_c16(h))
            i += 2
        else:
            out.append(_c32(int.from_bytes(code[i:i + 4], "little")))
            i += 4
    return out


def tally(blocks: Counter, fallthrough: Counter, code: dict, names: list[str]) -> dict:
    """{layer name or "(other)": {"instructions", "cycles", "classes": {class: count}}}.

    A block that ends in a conditional branch counts it as taken except the times its successor
    was the next address (fall through)."""
    classes_of: dict = {}
    per: dict = defaultdict(Counter)
    for (layer, addr, size), n in blocks.items():
        key = (addr, size)
        if key not in classes_of:
            classes_of[key] = classify_block(code[addr][:size])
        cl = classes_of[key]
        name = names[layer] if 0 <= layer < len(names) else "(other)"
        c = per[name]
        for k in cl[:-1]:
            c["branch_nt" if k == "branch" else k] += n   # a branch inside a block fell through
        if cl:
            last = cl[-1]
            if last == "branch":
                nt = fallthrough.get((layer, addr, size), 0)
                c["branch_nt"] += nt
                c["branch_t"] += n - nt
            else:
                c[last] += n
    return {name: {"instructions": int(sum(c.values())), "cycles": int(sum(CYCLES[k] * v for k, v in c.items())),
                   "classes": dict(c)} for name, c in per.items()}

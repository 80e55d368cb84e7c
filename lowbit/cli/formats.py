"""``lowbit formats [NAME ...] [--values] [--kind KIND] [--json]``: the number formats and their properties."""
from __future__ import annotations

import json
import math
import sys

KINDS = ("float", "int", "codebook", "scale", "block")


def add_parser(sub):
    from lowbit.cli.common import add_command
    f = add_command(sub, "formats", run, "list number formats and their properties",
                    "List number formats. Example: lowbit formats fp6_e2m3 --values")
    f.add_argument("names", nargs="*", help="format names (default: all registered)")
    f.add_argument("--values", action="store_true", help="list every representable finite value")
    f.add_argument("--kind", choices=KINDS, help="only formats of this kind")
    f.add_argument("--json", action="store_true", help="machine-readable output")
    return f


def _fmt_num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        e = math.log2(abs(v))
        if e == int(e) and abs(e) > 6:
            return f"2^{int(e)}"
        return f"{v:.6g}"
    return str(v)


def _row(fmt) -> dict:
    d = fmt.describe()
    specials = d.get("specials") or (f"{d['scale']} / {d['block_size']}" if "block_size" in d else "-")
    return {"name": fmt.name, "kind": fmt.kind, "bits": d["bits"], "bits/elem": f"{d['bits_per_element']:g}",
            "max": _fmt_num(d["max"]), "min normal": _fmt_num(d["min_normal"]),
            "min subnormal": _fmt_num(d["min_subnormal"]), "codes": d["n_codes"], "specials": specials}


def print_table(rows: list[dict], out=sys.stdout) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    out.write("  ".join(c.ljust(widths[c]) for c in cols).rstrip() + "\n")
    out.write("  ".join("-" * widths[c] for c in cols) + "\n")
    for r in rows:
        out.write("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip() + "\n")


def run(args) -> int:
    from lowbit.formats import SHORTHANDS, get_format, list_formats

    names = args.names or list_formats(args.kind)
    fmts = [get_format(n) for n in names]
    if args.values:
        for f in fmts:
            vals = f.element.values()
            if args.json:
                print(json.dumps({"name": f.name, "values": [float(v) for v in vals]}))
            else:
                label = f" (element {f.element.name})" if f.element is not f else ""
                print(f"{f.name}{label}: {len(vals)} distinct finite values")
                print(" ".join(f"{v:g}" for v in vals))
        return 0
    if args.json:
        print(json.dumps([f.describe() for f in fmts], indent=1))
        return 0
    print_table([_row(f) for f in fmts])
    if not args.names:
        print("\nshorthands: " + ", ".join(f"{k} -> {v}" for k, v in SHORTHANDS.items()))
        print("generic:    eXmY[ieee|fn|fnuz|finite][_bBIAS][_ftz] with 1<=X<=8, 0<=Y<=10 (default: all codes "
              "finite, saturating; X=8: ieee),\n            intN[_narrow], uintN, codebook:v1,v2,...  "
              "Note: e4m3 (max 480) is not fp8_e4m3 (OCP 'fn', max 448).")
    return 0


def main(argv=None) -> int:
    from lowbit.cli import main as lowbit
    return lowbit(["formats", *(sys.argv[1:] if argv is None else argv)])

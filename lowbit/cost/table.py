"""Text rendering of a :class:`lowbit.cost.CostReport` (per-layer rows, total, footnotes)."""
from __future__ import annotations


def _g(v, digits: int = 4) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _cells(r: dict, scale: float, mark: bool) -> list:
    star = "*" if mark and r["energy_is_model"] else ""
    return [r["name"], r.get("type", "-"), r.get("weight", "-"), r.get("act", "-"), _g(int(r["macs"])),
            _g(int(r["params"])), _g(r["weight_bytes"] / 1024), _g(r["compression"], 3), _g(r["bitops"] / 1e6),
            _g(r["act_bytes"] / 1024), _g(r["energy_mac_pj"] / scale) + star, _g(r["energy_mem_pj"] / scale),
            _g(r["energy_pj"] / scale) + star, _g(r["instructions"])]


def render(report, per_layer: bool = True) -> str:
    e = report.energy
    unit, scale = ("nJ", 1000.0) if e.kind == "horowitz" else ("rel", 1.0)
    head = ["layer", "type", "W", "A", "MACs", "params", "W KiB", "ratio", "MBitOps", "act KiB",
            f"E_mac[{unit}]", f"E_mem[{unit}]", f"E[{unit}]", "instr"]
    body = [_cells(r, scale, True) for r in report.rows] if per_layer else []
    t = dict(report.total, type="", weight="", act="")
    body.append(_cells(t, scale, True))
    body[-1][9] = _g(report.total["peak_act_bytes"] / 1024) + " peak"
    widths = [max(len(head[i]), *(len(row[i]) for row in body)) for i in range(len(head))]
    left = {0, 1, 2, 3}
    line = lambda row: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in body[:-1]]
    if per_layer:
        out.append(line(["-" * w for w in widths]))
    out.append(line(body[-1]))
    out.extend(footnotes(report))
    return "\n".join(out)


def footnotes(report) -> list[str]:
    e, t = report.energy, report.total
    if e.kind == "relative":
        notes = [f"energy: RELATIVE, UNITLESS ({e.source}); the energy-aware seed's model, for comparison only"]
    else:
        notes = [f"energy: {e.name} ({e.source}); weights read once from {t.get('mem_level_w', '-')}, "
                 f"activations from {t.get('mem_level_a', '-')}"]
        if t.get("energy_is_model"):
            notes.append("* MODELLED, not measured: sub-byte/BF16 float MACs = FP16 mult x ((M+1)^2 + E) / 126 "
                         "+ accumulator add (no published constants exist)")
    notes.append("act KiB: input read + output written per sample (total: peak live input+output); "
                 "instr: MACs / SIMD lanes per 32-bit word (16 for 2-bit, 8 for 4-bit, 4 for 8-bit weights)")
    return notes

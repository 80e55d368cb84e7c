"""Plans and the cost of a model under a plan: :func:`model_cost` -> :class:`CostReport`.

A *plan* maps layer name -> :class:`LayerPlan` (weight format, activation format; None = fp32).
Formats given by name are resolved with lowbit.nn's defaults, exactly as ``quantize_model`` would
(per-channel integer weights, per-tensor minifloat/codebook weights, MX/NVFP4 blocks along the
reduction axis); a :class:`lowbit.QuantSpec` is used verbatim. The activation format is that of
the layer's input (what its matmul consumes).

Per layer (``CostReport.rows``), per sample:

    weight_bits      element bits + scale bits (lowbit.nn.packing.weight_storage: fp32 per-tensor /
                     channel / group scales, MX 8 bits per 32-element block, NVFP4 8 bits per 16
                     plus 32 per tensor, zero points of unsigned formats) + the fp32 bias
    compression      fp32_bytes / weight_bytes
    bitops           macs * w_bits * a_bits (element bits; fp32 = 32)
    act_bytes        input read + output written, both at the layer's activation width (bits per
                     element, block scales included; the output is requantized for the next layer)
    peak_act_bytes   the input and output live at once (a sequential-execution estimate)
    energy_mac_pj    macs * EnergyModel.mac(weight, act)
    energy_wmem_pj   weight_bits read once per inference from the memory level that holds ALL the
                     model's weights (SRAM 8 KB / 32 KB / 1 MB, else DRAM)
    energy_amem_pj   input read + output written at the level that holds the peak activations
    energy_is_model  True where the MAC energy is modelled, not measured (sub-byte floats, BF16)
    instructions     macs / SIMD lanes: a 32-bit word holds 32 / b' weights, b' = the weight width
                     rounded up to a power of two (16 for 2-bit, 8 for 4-bit, 4 for 8-bit, 1 for
                     fp32), the RISC-V seed's cost proxy for small cores with packed-SIMD MACs
    cycles           only with a measured InstructionTable (lowbit export c --measure-instructions):
                     the layer's cycles on the stated core model (lowbit.export.c.cycles), else 0

``total`` sums the rows plus ``(other parameters)`` (norms etc., fp32; their memory energy is counted),
with ``peak_act_bytes`` the maximum. In the relative energy model the ``energy_*_pj`` fields hold
unitless relative values (``energy_unit`` says which).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from lowbit.nn.defaults import resolve
from lowbit.nn.packing import weight_storage as _weight_bits
from lowbit.nn.specs import slot
from lowbit.ops import QuantSpec

from .energy import EnergyModel
from .profile import LayerInfo  # lowbit.nn.walker's record

SUMMED = ("macs", "params", "weight_bits", "weight_bytes", "fp32_bytes", "bitops", "act_bytes",
          "energy_mac_pj", "energy_wmem_pj", "energy_amem_pj", "energy_mem_pj", "energy_pj", "instructions", "cycles")


def _spec(value, role: str, hint: int = -1) -> QuantSpec | None:
    if value is None or isinstance(value, QuantSpec):
        return value
    return resolve(slot(value), role, hint)


@dataclass(frozen=True)
class LayerPlan:
    """Weight and activation (layer input) precision of one layer: a format name, format object,
    QuantSpec or None (fp32). Names are validated at once."""

    weight: object = None
    act: object = None

    def __post_init__(self):
        _spec(self.weight, "weight")
        _spec(self.act, "act")

    def resolved(self, layer: LayerInfo) -> tuple[QuantSpec | None, QuantSpec | None]:
        return _spec(self.weight, "weight"), _spec(self.act, "act", 1 if layer.is_conv else -1)


def uniform_plan(layers, weight=None, act=None) -> dict:
    """The same LayerPlan for every layer of ``layers``."""
    p = LayerPlan(weight, act)
    return {li.name: p for li in layers}


def plan_from_assignment(assignment) -> dict:
    """The plan a :class:`lowbit.nn.Assignment` means: each weight layer's weight and input specs."""
    return {r.name: LayerPlan(r.specs.get("weight"), r.specs.get("input")) for r in assignment.rows
            if r.kind == "weight"}


def _elem_bits(spec: QuantSpec | None) -> int:
    return 32 if spec is None else spec.format.storage_bits


def simd_lanes(bits: int) -> int:
    """Weights per 32-bit word: 32 / (bits rounded up to a power of two), at least 1."""
    return max(1, 32 // (1 << max(0, math.ceil(math.log2(bits)))))


def _name(spec) -> str:
    return "fp32" if spec is None else spec.format.name


@dataclass
class CostReport:
    rows: list
    total: dict
    energy: EnergyModel

    def to_dict(self) -> dict:
        return {"energy_model": self.energy.to_dict(), "rows": self.rows, "total": self.total}

    def table(self, per_layer: bool = True) -> str:
        from .table import render
        return render(self, per_layer)

    def __str__(self):
        return self.table()


def _layer_row(li: LayerInfo, plan: LayerPlan, energy: EnergyModel, instructions=None) -> dict:
    ws, as_ = plan.resolved(li)
    if ws is not None and li.weight_shape:
        eb, sb = _weight_bits(li.weight_shape, ws)
    else:
        eb, sb = 32 * li.weight_numel, 0
    bb = 32 * li.bias_numel
    wbits, abits = _elem_bits(ws), _elem_bits(as_)
    a_pe = float(as_.format.bits_per_element) if as_ is not None else 32.0
    mac_e, is_model = energy.mac(ws.format if ws else None, as_.format if as_ else None)
    if li.macs == 0:
        is_model = False
    act_in, act_out = li.in_numel * a_pe, li.out_numel * a_pe
    lanes = simd_lanes(wbits)
    instr, cycles = li.macs / lanes, 0.0
    if instructions is not None and li.macs:
        instr = instructions.lookup(li.name, ws.format if ws is not None else None)
        cycles = instructions.lookup_cycles(li.name, ws.format if ws is not None else None)
    return {"name": li.name, "type": li.type, "weight": _name(ws), "act": _name(as_),
            "weight_scaling": ws.scaling if ws else "none", "w_bits": wbits, "a_bits": abits,
            "macs": li.macs, "params": li.params, "element_bits": eb, "scale_bits": sb, "bias_bits": bb,
            "weight_bits": eb + sb + bb, "weight_bytes": (eb + sb + bb) / 8, "fp32_bytes": 4 * li.params,
            "compression": (32 * li.params) / (eb + sb + bb) if eb + sb + bb else 1.0,
            "bitops": li.macs * wbits * abits, "act_in_bits": act_in, "act_out_bits": act_out,
            "act_bytes": (act_in + act_out) / 8, "peak_act_bytes": (act_in + act_out) / 8,
            "mac_energy_pj": mac_e, "energy_mac_pj": li.macs * mac_e, "energy_is_model": bool(is_model),
            "simd_lanes": lanes, "instructions": instr, "cycles": cycles, "energy_unit": energy.unit}


def model_cost(layers, plan: dict | None = None, energy=None, *, other_params: int | None = None,
               instructions=None) -> CostReport:
    """Per-layer and total cost of ``layers`` (from :func:`profile_layers`) under ``plan``.

    Layers missing from ``plan`` are fp32; a plan entry naming no layer is an error. Entries are
    LayerPlans (a (weight, act) pair or a {"weight", "act"} dict is converted). ``energy``:
    an :class:`EnergyModel`, ``"horowitz"`` (default), ``"relative"`` or a constants file.
    ``other_params`` defaults to ``layers.other_params`` (0 for a plain list). ``instructions``: an
    :class:`lowbit.cost.measured.InstructionTable` of measured counts replacing the MACs / lanes proxy
    (its ``fixed`` part, the non-weight operations, is added to the total).
    """
    energy = EnergyModel.get(energy)
    plan = dict(plan or {})
    names = {li.name for li in layers}
    unknown = [k for k in plan if k not in names]
    if unknown:
        raise ValueError(f"plan names unknown layer {unknown[0]!r}; allowed: {', '.join(sorted(names))}")
    for k, v in plan.items():
        if isinstance(v, dict) and set(v) <= {"weight", "act"}:
            plan[k] = LayerPlan(**v)
        elif isinstance(v, tuple) and len(v) == 2:
            plan[k] = LayerPlan(*v)
        elif not isinstance(v, LayerPlan):
            raise ValueError(f"plan[{k!r}] = {v!r} is not allowed; allowed: a LayerPlan(weight=..., act=...), "
                             f"a (weight, act) pair or a dict with keys weight, act")
    rows = [_layer_row(li, plan.get(li.name, LayerPlan()), energy, instructions) for li in layers]
    n_other = getattr(layers, "other_params", 0) if other_params is None else other_params
    if n_other:
        rows.append({"name": "(other parameters)", "type": "-", "weight": "fp32", "act": "-", "weight_scaling": "none",
                     "w_bits": 32, "a_bits": 0, "macs": 0, "params": n_other, "element_bits": 32 * n_other,
                     "scale_bits": 0, "bias_bits": 0, "weight_bits": 32 * n_other, "weight_bytes": 4 * n_other,
                     "fp32_bytes": 4 * n_other, "compression": 1.0, "bitops": 0, "act_in_bits": 0.0,
                     "act_out_bits": 0.0, "act_bytes": 0.0, "peak_act_bytes": 0.0, "mac_energy_pj": 0.0,
                     "energy_mac_pj": 0.0, "energy_is_model": False, "simd_lanes": 1, "instructions": 0.0,
                     "cycles": 0.0, "energy_unit": energy.unit})
    w_total = sum(r["weight_bytes"] for r in rows)
    a_peak = max((r["peak_act_bytes"] for r in rows), default=0.0)
    w_level, a_level = energy.level(w_total)[0], energy.level(a_peak)[0]
    for r in rows:
        r["energy_wmem_pj"] = energy.move(r["weight_bits"], w_total)
        r["energy_amem_pj"] = (energy.move(r["act_in_bits"], a_peak) +
                               energy.move(r["act_out_bits"], a_peak, write=True))
        r["energy_mem_pj"] = r["energy_wmem_pj"] + r["energy_amem_pj"]
        r["energy_pj"] = r["energy_mac_pj"] + r["energy_mem_pj"]
        r["mem_level_w"], r["mem_level_a"] = (w_level, a_level) if energy.kind == "horowitz" else ("-", "-")
    total = {k: sum(r[k] for r in rows) for k in SUMMED}
    if instructions is not None:
        total["instructions"] += instructions.fixed
        total["cycles"] += instructions.fixed_cycles
    total["instructions_source"] = "measured" if instructions is not None else "proxy"
    wb = total["weight_bytes"]
    total.update(name="total", compression=total["fp32_bytes"] / wb if wb else 1.0,
                 peak_act_bytes=a_peak, energy_is_model=any(r["energy_is_model"] for r in rows),
                 energy_unit=energy.unit, energy_model=energy.name, mem_level_w=rows[0]["mem_level_w"] if rows else "-",
                 mem_level_a=rows[0]["mem_level_a"] if rows else "-")
    return CostReport(rows, total, energy)

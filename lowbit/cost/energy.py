"""Energy per operation and per bit moved: :class:`EnergyModel`.

``EnergyModel.horowitz()`` (the default) holds the constants of M. Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014 (45 nm, 0.9 V), in pJ:

    int add 8 / 32 bit    0.03 / 0.1        int mult 8 / 32 bit   0.2 / 3.1
    FP16 add / mult       0.4 / 1.1         FP32 add / mult       0.9 / 3.7
    SRAM read, 64 bits    10 (8 KB), 20 (32 KB), 100 (1 MB)
    DRAM read, 64 bits    1.3 to 2.6 nJ: 1950 pJ (the middle of the range) by default

A MAC is one multiply plus one accumulate:

* both operands integer (int, uint, MXINT8 elements): multiply of b_w x b_a bits plus an add at the
  accumulator width (``int_acc_bits``, 32: int32 accumulators). Other widths than the two measured
  ones follow a power law through both points: mult(b) = mult8 * (b^2/64)^p with p = 1.98 for
  Horowitz (about b^2; b^2 is b_w * b_a), add(b) = add8 * (b/8)^q with q = 0.87 (about b). Both
  are exact at 8 and 32 bits.
* otherwise the MAC runs in floating point: integer or codebook operands are dequantized to the
  float operand's format (weight-only quantization computes in the activation format; a codebook
  such as NF4 is a table of FP16 values). FP32 when an operand is FP32 (or unquantized), FP16 when
  both are FP16: measured constants. Any other float pair (FP8, FP6, FP4, MX elements, BF16) is a
  MODEL, flagged ``is_model``: mult = fp16_mult * ((M_w+1)(M_a+1) + max(E_w, E_a)) / ((10+1)^2 + 5),
  the mantissa multiplier's area ~ (M+1)^2 plus an exponent adder ~ E, scaled from the FP16 point
  (FP8 E4M3 0.175 pJ, E5M2 0.122 pJ, FP4 0.052 pJ). Accumulation in ``float_acc`` (FP32 default,
  as FP8/FP16 tensor cores do). MX block scales (one exponent add per 32 MACs) are neglected.

Memory: ``read_pj(bits, capacity)`` = bits / 64 * the 64-bit read energy of the smallest SRAM
level that holds ``capacity`` bytes, or DRAM beyond the largest; writes cost ``write_factor``
(1.0) times a read (Horowitz gives reads only).

``EnergyModel.relative()`` is the energy-aware seed's unitless model, kept for comparison and
labelled as such everywhere: MAC = (b_w * b_a) / 64 units ((b/8)^2 at equal widths), and moving
one b-bit element costs 200 * (b / 8) units (DRAM = 200 x an 8-bit MAC). It is not grounded in
measurements. ``EnergyModel.from_file(path)`` reads constants from YAML or JSON (validated): any
subset of the fields below overrides the Horowitz values.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass

from lowbit.formats.registry import get_format
from lowbit.formats.spec import Format

KINDS = ("horowitz", "relative")
FLOAT_ACC = ("fp32", "fp16")
_FP16 = (5, 10)
_NUMERIC = ("int8_add_pj", "int32_add_pj", "int8_mult_pj", "int32_mult_pj", "fp16_add_pj", "fp16_mult_pj",
            "fp32_add_pj", "fp32_mult_pj", "dram_64b_pj", "write_factor")
FILE_KEYS = ("name", "source") + _NUMERIC + ("sram_64b_pj", "int_acc_bits", "float_acc")


@dataclass(frozen=True)
class EnergyModel:
    """Energy constants (pJ) and the rules of the module docstring. ``kind``: horowitz or relative."""

    name: str = "horowitz"
    kind: str = "horowitz"
    source: str = "Horowitz, ISSCC 2014, 45 nm 0.9 V"
    int8_add_pj: float = 0.03
    int32_add_pj: float = 0.1
    int8_mult_pj: float = 0.2
    int32_mult_pj: float = 3.1
    fp16_add_pj: float = 0.4
    fp16_mult_pj: float = 1.1
    fp32_add_pj: float = 0.9
    fp32_mult_pj: float = 3.7
    sram_64b_pj: tuple = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
    dram_64b_pj: float = 1950.0
    write_factor: float = 1.0
    int_acc_bits: int = 32
    float_acc: str = "fp32"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"energy model kind={self.kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        for k in _NUMERIC:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"energy constant {k}={v!r} is not allowed; allowed: a positive number")
        if isinstance(self.int_acc_bits, bool) or not isinstance(self.int_acc_bits, int) \
                or not 2 <= self.int_acc_bits <= 64:
            raise ValueError(f"int_acc_bits={self.int_acc_bits!r} is not allowed; allowed: an integer 2..64")
        if self.float_acc not in FLOAT_ACC:
            raise ValueError(f"float_acc={self.float_acc!r} is not allowed; allowed: {', '.join(FLOAT_ACC)}")
        levels = tuple(sorted((int(c), float(e)) for c, e in self.sram_64b_pj))
        if not levels or any(c <= 0 or not math.isfinite(e) or e <= 0 for c, e in levels):
            raise ValueError(f"sram_64b_pj={self.sram_64b_pj!r} is not allowed; allowed: a non-empty map of "
                             f"capacity (bytes, or '8KB', '1MB') to a positive pJ per 64-bit read")
        object.__setattr__(self, "sram_64b_pj", levels)

    # ---- constructors ----------------------------------------------------------------------------
    @classmethod
    def horowitz(cls) -> "EnergyModel":
        return cls()

    @classmethod
    def relative(cls) -> "EnergyModel":
        return cls(name="relative", kind="relative",
                   source="energy-aware seed: MAC ~ (b/8)^2, DRAM = 200 x MAC; relative, unitless, not grounded")

    @classmethod
    def from_file(cls, path) -> "EnergyModel":
        """Constants from a YAML or JSON mapping (keys: :data:`FILE_KEYS`), over the Horowitz ones."""
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ValueError(f"energy file {str(path)!r} cannot be read ({exc.strerror or exc})") from None
        try:
            if str(path).lower().endswith(".json"):
                data = json.loads(text)
            else:
                import yaml
                data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear message
            why = " ".join(str(exc).split())[:200]
            raise ValueError(f"energy file {str(path)!r} is not valid YAML/JSON: {why}") from None
        if not isinstance(data, dict):
            raise ValueError(f"energy file {str(path)!r} must hold a mapping of constants; allowed keys: "
                             f"{', '.join(FILE_KEYS)}")
        bad = [k for k in data if k not in FILE_KEYS]
        if bad:
            raise ValueError(f"energy file {str(path)!r}: unknown key {bad[0]!r}; allowed: {', '.join(FILE_KEYS)}")
        kw = dict(data)
        if "sram_64b_pj" in kw:
            kw["sram_64b_pj"] = _levels(kw["sram_64b_pj"], path)
        kw.setdefault("name", f"file:{path}")
        kw.setdefault("source", f"user constants from {path}")
        try:
            return cls(**kw)
        except ValueError as exc:
            raise ValueError(f"energy file {str(path)!r}: {exc}") from None

    @classmethod
    def get(cls, spec) -> "EnergyModel":
        """``horowitz``, ``relative``, a path to a constants file, or an EnergyModel."""
        if isinstance(spec, EnergyModel):
            return spec
        if spec is None or spec == "horowitz":
            return cls.horowitz()
        if spec == "relative":
            return cls.relative()
        return cls.from_file(spec)

    @property
    def unit(self) -> str:
        return "pJ" if self.kind == "horowitz" else "rel"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sram_64b_pj"] = {int(c): e for c, e in self.sram_64b_pj}
        return d

    # ---- arithmetic ------------------------------------------------------------------------------
    def int_add(self, bits: float) -> float:
        q = math.log(self.int32_add_pj / self.int8_add_pj) / math.log(4)
        return self.int8_add_pj * (bits / 8) ** q

    def int_mult(self, bw: float, ba: float) -> float:
        p = math.log(self.int32_mult_pj / self.int8_mult_pj) / math.log(16)
        return self.int8_mult_pj * (bw * ba / 64) ** p

    def float_mult(self, fw, fa) -> tuple[float, bool]:
        """(pJ, is_model) of a float multiply of formats ``fw`` x ``fa`` (FloatFormat objects)."""
        if max(fw.bits, fa.bits) >= 32:
            return self.fp32_mult_pj, False
        if (fw.exp_bits, fw.man_bits) == _FP16 == (fa.exp_bits, fa.man_bits):
            return self.fp16_mult_pj, False
        units = (fw.man_bits + 1) * (fa.man_bits + 1) + max(fw.exp_bits, fa.exp_bits)
        return self.fp16_mult_pj * units / ((_FP16[1] + 1) ** 2 + _FP16[0]), True

    def mac(self, w_fmt, a_fmt) -> tuple[float, bool]:
        """(energy of one MAC, is_model) for element formats ``w_fmt`` x ``a_fmt`` (None: fp32)."""
        w, a = _operand(w_fmt), _operand(a_fmt)
        if self.kind == "relative":
            return _bits(w) * _bits(a) / 64, False
        if w.arithmetic == "int" and a.arithmetic == "int":
            return self.int_mult(w.bits, a.bits) + self.int_add(self.int_acc_bits), False
        fw = a if w.arithmetic != "float" else w
        fa = w if a.arithmetic != "float" else a
        mult, is_model = self.float_mult(fw, fa)
        add = self.fp32_add_pj if self.float_acc == "fp32" else self.fp16_add_pj
        return mult + add, is_model

    # ---- memory ----------------------------------------------------------------------------------
    def level(self, capacity_bytes: float) -> tuple[str, float]:
        """(name, pJ per 64-bit read) of the smallest memory holding ``capacity_bytes``."""
        for cap, e in self.sram_64b_pj:
            if capacity_bytes <= cap:
                return f"SRAM{_size(cap)}", e
        return "DRAM", self.dram_64b_pj

    def move(self, bits: float, capacity_bytes: float, elem_bits: float = 8.0, write: bool = False) -> float:
        """Energy to read (or write) ``bits`` from the memory level that ``capacity_bytes`` needs.

        The relative model charges 200 * (b/8) units per b-bit element, i.e. 25 units per bit.
        """
        if self.kind == "relative":
            return 200.0 * bits / 8
        e = self.level(capacity_bytes)[1] * bits / 64
        return e * self.write_factor if write else e


def _operand(fmt):
    """The format a MAC operand is computed in: block -> element, codebook -> fp16, None -> fp32."""
    if fmt is None:
        return get_format("fp32")
    if not isinstance(fmt, (str, Format)):
        fmt = fmt.format                        # a QuantSpec
    return get_format(fmt).mac_operand


def _bits(fmt) -> int:
    return fmt.bits


def _size(cap: int) -> str:
    for unit, n in (("MB", 2 ** 20), ("KB", 2 ** 10)):
        if cap >= n and cap % n == 0:
            return f"{cap // n}{unit}"
    return f"{cap}B"


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_MULT = {None: 1, "b": 1, "kb": 2 ** 10, "kib": 2 ** 10, "mb": 2 ** 20, "mib": 2 ** 20, "gb": 2 ** 30, "gib": 2 ** 30}


def _levels(value, path) -> tuple:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"energy file {str(path)!r}: sram_64b_pj must be a mapping of capacity to pJ per "
                         f"64-bit read, e.g. {{8KB: 10, 32KB: 20, 1MB: 100}} (got {value!r})")
    out = []
    for cap, e in value.items():
        m = _SIZE_RE.match(str(cap))
        if not m:
            raise ValueError(f"energy file {str(path)!r}: SRAM capacity {cap!r} is not allowed; allowed: "
                             f"bytes or a size such as 8KB, 32KiB, 1MB")
        if isinstance(e, bool) or not isinstance(e, (int, float)):
            raise ValueError(f"energy file {str(path)!r}: SRAM energy {e!r} for {cap!r} is not allowed; "
                             f"allowed: a positive number (pJ per 64-bit read)")
        unit = m.group(2).lower() if m.group(2) else None
        out.append((int(float(m.group(1)) * _MULT[unit]), float(e)))
    return tuple(out)

"""The format interface: every registered format answers it consistently, and a new family is one
class plus one registration (no branch elsewhere in lowbit needs to know it)."""
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import lowbit
from lowbit.formats import ElementFormat, Format, families, get_format, list_formats
from lowbit.formats.base import _FAMILIES
from lowbit.formats.cast import codebook_cast
from lowbit.formats.codec import code_dtype
from lowbit.formats.reference import nearest
from lowbit.formats.tables import code_values, values


@pytest.mark.parametrize("name", list_formats())
def test_every_format_answers_the_interface(name):
    f = get_format(name)
    assert isinstance(f, Format) and f.kind in {c.kind for c in families()} | {"scale", "block"}
    assert f.storage_bits == f.element.bits and f.element.element is f.element
    assert f.holds_tensors == bool(f.scalings)
    if not f.holds_tensors:
        return
    assert f.default_scaling in f.scalings or f.default_scaling == "none"
    for role in ("weight", "act", "grad"):
        assert f.role_scaling(role) in f.scalings
    assert f.scale_storage_bits(0) == (32 if getattr(f, "tensor_scale", False) else 0)
    if f.element.bits > 16:
        return
    lo, hi = f.value_range
    vals = values(f.element)
    assert lo <= vals.min() + 1e-12 and hi >= vals.max() - 1e-12
    if f.element.bits <= 8:   # the fast cast equals the family's reference on every value and midpoint
        el = f.element
        x = np.concatenate([vals, (vals[1:] + vals[:-1]) / 2, [vals[0] * 1.5, vals[-1] * 1.5]]).astype(np.float32)
        got = el.cast(torch.from_numpy(x), "nearest", True, None).numpy()
        np.testing.assert_array_equal(got, el.reference(x.astype(np.float64), True).astype(np.float32))
        assert len(code_values(el)) == el.n_codes


# ---- a new family, defined here: signed powers of two (a logarithmic format) -------------------------
_LOG = re.compile(r"^log(\d+)$")


@dataclass(frozen=True)
class Log2Format(ElementFormat):
    """0 and +-2^k for k in [-(2^(bits-2)) + 1, 2^(bits-2) - 1]: 2^bits - 1 codes."""

    bits: int
    name: str = field(default="", compare=False)
    kind = "log2"
    label = "logarithmic"
    grammar = "logN"

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", f"log{self.bits}")

    @property
    def _vals(self):
        ks = range(-(2 ** (self.bits - 2)) + 1, 2 ** (self.bits - 2))
        pos = [2.0 ** k for k in ks]
        return tuple(sorted([-v for v in pos] + [0.0] + pos))

    n_codes = property(lambda self: len(self._vals))
    max = property(lambda self: self._vals[-1])
    min_normal = property(lambda self: self._vals[len(self._vals) // 2 + 1])
    min_subnormal = min_normal
    bits_per_element = property(lambda self: float(self.bits))

    @classmethod
    def parse(cls, key, original, registered):
        m = _LOG.match(key)
        return cls(int(m.group(1))) if m else None

    def describe(self):
        return {"name": self.name, "kind": self.kind, "bits": self.bits}

    def cast_values(self, device=None):
        return torch.tensor(self._vals, dtype=torch.float32, device=device)

    def cast(self, y, rounding, saturate, noise, values=None):
        return codebook_cast(y, self.cast_values(y.device), rounding, noise)[0]

    def cast_bounds(self, values=None):
        return self._vals[0], self._vals[-1]

    def codes(self, xf, rounding, saturate):
        return codebook_cast(xf, self.cast_values(xf.device), rounding, None)[1].to(code_dtype(self))

    def code_table(self):
        return np.asarray(self._vals, dtype=np.float64)

    def reference(self, x, saturate):
        v = np.asarray(self._vals)
        return np.where(np.isnan(x), np.nan, np.where(x >= v[-1], v[-1], nearest(x, v, ties_by_index=True)))


@pytest.fixture
def log_family():
    _FAMILIES.append(Log2Format)
    yield Log2Format
    _FAMILIES.remove(Log2Format)


def test_a_new_family_is_one_class_plus_registration(log_family):
    from lowbit.nn import footprint, make_recipe, quantize_model

    f = get_format("log4")
    assert isinstance(f, Log2Format) and f.n_codes == 15 and f.max == 8.0
    x = torch.tensor([0.3, -0.7, 3.1, 100.0, 0.0])
    q = lowbit.quantize(x, "log4", scaling="none")
    assert q.tolist() == [0.25, -0.5, 4.0, 8.0, 0.0]
    scaled = lowbit.quantize(x, "log4")                          # per-tensor scale by default
    assert scaled.abs().max().item() == pytest.approx(100.0)
    enc = lowbit.encode(x, "log4", scaling="none")
    assert torch.equal(lowbit.decode(enc), q)
    with pytest.raises(ValueError, match="unknown format 'log'; allowed: .*logN"):
        get_format("log")
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    asg = quantize_model(model, make_recipe(weights="log4", inputs="log4"))
    qm = model
    y = qm(torch.randn(3, 8))
    assert torch.isfinite(y).all()
    w = qm[0].weight_quantizer(qm[0].weight)
    s = qm[0].weight.abs().max() / f.max
    assert set(torch.unique((w / s).abs()).tolist()) <= {abs(v) for v in f._vals}
    fp = footprint(qm, asg)
    assert fp.rows[0]["element_bits"] == 32 * 4 and fp.rows[0]["format"] == "log4"

"""``convert(model, assignment)``: fake-quantized layers become packed integer layers run by CPU kernels.

    asg = quantize_model(model, make_recipe(weights="int8", inputs="int8"))
    report = convert(model, asg)      # in place; the fp32 weights of converted layers are released
    print(report.table())

Which layer gets which kernel (:mod:`lowbit.nn.kernels_cpu` has the kernels and their numerics):

* Linear / Conv1d / Conv2d / HF Conv1D with signed int2..int8 weights (per-tensor or per-output-
  channel scale) and a signed or unsigned int2..int8 per-tensor input (dynamic or calibrated scale,
  deterministic rounding): ``onednn-int8``, integer weights and integer activations.
* Linear whose input is fp32 or not an integer format: ``int4-weight`` for int2..int4 weights
  (per-tensor, per-channel, or groups of 32/64/128/256 along the input), else ``int8-weight``; the
  input quantizer, if any, keeps fake-quantizing the input in front of the kernel.
* Everything else stays as it is, with the reason in the report (and a :class:`ConvertWarning`;
  ``strict=True`` raises :class:`ConvertError` before anything changes): non-integer formats, learnable
  weight quantizers, stochastic weight rounding, Embedding, convolutions without an integer input, ...

The converted model is for inference: converted layers hold no trainable weight and drop their
gradient quantizer; :func:`lowbit.nn.dequantize_model` refuses a converted model (its fp32 weights
are gone). Activation/softmax hooks and output quantizers keep working as before.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .assignment import Assignment
from .kernels_cpu import INT4_GROUPS, Int4WeightLinear, Int8Conv, Int8Linear, Int8WeightLinear, int4_layout
from .modules import QuantLayer
from .packing import encode_weight
from .quantizers import FakeQuantizer, WeightQuantizer, describe
from .surgery import _references

KERNELS = ("onednn-int8", "int8-weight", "int4-weight")


class ConvertError(ValueError):
    """A quantized layer cannot be converted and ``strict=True`` was asked for."""


class ConvertWarning(UserWarning):
    """Some quantized layers were left as they are (see the report)."""


@dataclass
class ConvertRow:
    name: str
    type: str
    weight: str          # the weight spec ('-': fp32)
    input: str           # the input spec ('-': fp32)
    kernel: str | None   # None: left as it was
    note: str = ""       # why not converted, or what stays fake-quantized

    def to_dict(self) -> dict:
        return dict(name=self.name, type=self.type, weight=self.weight, input=self.input, kernel=self.kernel,
                    note=self.note)


class ConvertReport:
    """One row per weight layer of the assignment: the kernel it now runs, or why it was not converted."""

    def __init__(self, rows: list[ConvertRow]):
        self.rows = rows

    @property
    def converted(self) -> list[ConvertRow]:
        return [r for r in self.rows if r.kernel]

    @property
    def kept(self) -> list[ConvertRow]:
        return [r for r in self.rows if not r.kernel]

    def to_rows(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]

    def table(self) -> str:
        head = ("name", "type", "weight", "input", "kernel", "note")
        cells = [(r.name, r.type, r.weight, r.input, r.kernel or "(kept)", r.note) for r in self.rows]
        w = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
        line = lambda c: "  ".join(v.ljust(n) for v, n in zip(c, w)).rstrip()  # noqa: E731
        out = [line(head), line(["-" * n for n in w])] + [line(c) for c in cells]
        out.append(f"{len(self.converted)} of {len(self.rows)} weight layers converted")
        return "\n".join(out)

    def __str__(self):
        return self.table()


# ---- planning: which kernel, or why not ------------------------------------------------------------
def _axes(m) -> tuple[int, int]:
    """(output-channel axis, reduction axis) of the layer's weight (HF's Conv1D stores (in, out))."""
    return (1, 0) if m.float_type.__name__ == "Conv1D" else (0, 1)


def _is_int(fmt, max_bits: int) -> bool:
    return fmt.kind == "int" and fmt.frac_bits == 0 and fmt.bits <= max_bits


def _weight_reason(m) -> str | None:
    q = m.weight_quantizer
    if q is None:
        return "weight is fp32 (nothing to pack)"
    if type(q) is not WeightQuantizer and not hasattr(q, "fixed_scale"):
        return f"learnable weight quantizer {type(q).__name__} (no fixed integer grid)"
    spec, fmt = q.spec, q.spec.format
    if not _is_int(fmt, 8):
        return f"weight format {fmt.name} has no CPU integer kernel (allowed: int2..int8)"
    if not fmt.signed:
        return f"weight format {fmt.name} is unsigned (zero points); the CPU kernels take signed weights"
    if spec.rounding == "stochastic":
        return "stochastic weight rounding gives new integers on every call"
    out_axis, red_axis = _axes(m)
    if spec.scaling == "channel" and spec.axis % m.weight.dim() != out_axis:
        return f"weight scales per input channel (axis {spec.axis}) cannot leave the integer sum"
    if spec.scaling == "group" and spec.axis % m.weight.dim() != red_axis:
        return f"weight groups along axis {spec.axis}; the int4 kernel groups along the input (axis {red_axis})"
    if isinstance(q.fixed_scale() if hasattr(q, "fixed_scale") else None, tuple):
        return "weight has a calibrated zero point; the CPU kernels take symmetric weights"
    return None


def _input_reason(m) -> str | None:
    """None if the input quantizer can feed an integer kernel, else why not."""
    q = m.input_quantizer
    if q is None:
        return "input is fp32"
    if type(q) is not FakeQuantizer and not hasattr(q, "fixed_scale"):
        return f"input quantizer {type(q).__name__} is learnable"
    spec, fmt = q.spec, q.spec.format
    if not _is_int(fmt, 8):
        return f"input format {fmt.name} is not an integer format of <= 8 bits"
    if spec.scaling != "tensor":
        return f"input scaling {spec.scaling!r} (the integer kernels take one input scale)"
    if spec.rounding == "stochastic":
        return "stochastic input rounding"
    fixed = q.fixed_scale() if hasattr(q, "fixed_scale") else None
    if fixed is not None and (fixed[0] if isinstance(fixed, tuple) else fixed).numel() != 1:
        return "calibrated input scale is not per tensor"
    return None


def plan(m: nn.Module) -> tuple[str | None, str]:
    """(kernel, note) for a quantized layer ``m``: the kernel name, or None and the reason."""
    if not isinstance(m, QuantLayer):
        return None, f"{type(m).__name__} is not a lowbit quantized layer"
    if m.weight.device.type != "cpu":
        return None, f"weight is on {m.weight.device}; the kernels run on the CPU"
    if m.float_type is nn.Embedding:
        return None, "no CPU integer kernel for Embedding lookups"
    why = _weight_reason(m)
    if why:
        return None, why
    wspec, in_why = m.weight_quantizer.spec, _input_reason(m)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None, f"padding={m.padding!r}, padding_mode={m.padding_mode!r} (allowed: integer zero padding)"
        if in_why or wspec.scaling == "group":
            return None, f"{in_why or 'group weight scales'}; the CPU integer convolution needs int8 inputs"
        return "onednn-int8", ""
    if in_why is None and wspec.scaling != "group":
        return "onednn-int8", ""
    note = "" if m.input_quantizer is None else f"input stays fake-quantized ({in_why})"
    if wspec.format.bits <= 4:
        if wspec.scaling == "group" and wspec.group_size not in INT4_GROUPS:
            return None, f"group_size={wspec.group_size}; the int4 kernel takes {', '.join(map(str, INT4_GROUPS))}"
        return "int4-weight", note
    if wspec.scaling == "group":
        return None, "int8 weights with group scales: no CPU kernel (int4 or fewer bits only)"
    return "int8-weight", note


# ---- building --------------------------------------------------------------------------------------
def _codes_scales(m):
    """(integer codes (out, ...), scales): per output channel (out,), or per group (out, n_groups)."""
    enc = encode_weight(m.weight, m.weight_quantizer)
    out_axis, _ = _axes(m)
    codes = enc.format.decode(enc.codes).movedim(out_axis, 0).contiguous()
    s = enc.scale
    if m.weight_quantizer.spec.scaling == "group":
        return codes, s.reshape(codes.shape[0], -1)
    s = torch.as_tensor(s).float().expand(m.weight.shape).movedim(out_axis, 0)
    return codes, s.reshape(codes.shape[0], -1)[:, 0].contiguous()


def build(m, kernel: str) -> nn.Module:
    codes, s = _codes_scales(m)
    bias = m.bias
    if kernel == "onednn-int8":
        return (Int8Conv if isinstance(m, (nn.Conv1d, nn.Conv2d)) else Int8Linear)(m, codes, s, bias)
    if kernel == "int8-weight":
        return Int8WeightLinear(m, codes, s, bias)
    spec = m.weight_quantizer.spec
    group, kpad = int4_layout(codes.shape[1], spec.group_size if spec.scaling == "group" else None)
    if spec.scaling != "group":
        s = s[:, None].expand(-1, kpad // group)
    return Int4WeightLinear(m, codes, s, bias, group)


def _spec_name(q) -> str:
    return "-" if q is None else describe(q.spec)


def convert(model: nn.Module, assignment: Assignment, strict: bool = False) -> ConvertReport:
    """Convert ``model``'s quantized weight layers (``assignment`` = what ``quantize_model(model, ...)``
    returned) in place to packed integer layers; returns the :class:`ConvertReport` (module docstring)."""
    _check_inputs(model, assignment)
    mods = dict(model.named_modules())
    rows, todo = [], []
    for r in assignment.rows:
        if r.kind != "weight":
            continue
        m = mods.get(r.name)
        kernel, note = plan(m) if r.is_quantized else (None, "not quantized (fp32)")
        q_w, q_in = getattr(m, "weight_quantizer", None), getattr(m, "input_quantizer", None)
        rows.append(ConvertRow(r.name, r.type, _spec_name(q_w), _spec_name(q_in), kernel, note))
        if kernel:
            todo.append((m, kernel))
    report = ConvertReport(rows)
    kept = [r for r in report.kept if r.note != "not quantized (fp32)"]
    if kept:
        msg = "; ".join(f"{r.name}: {r.note}" for r in kept)
        if strict:
            raise ConvertError(f"{len(kept)} quantized layer(s) cannot be converted: {msg}")
        warnings.warn(f"lowbit.nn.convert kept {len(kept)} quantized layer(s) as they are: {msg}", ConvertWarning,
                      stacklevel=2)
    _swap(model, assignment, [(m, build(m, k)) for m, k in todo])
    assignment.converted = report
    model.__dict__["_lowbit_converted"] = report
    return report


def _check_inputs(model, assignment):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(assignment, Assignment):
        raise TypeError(f"assignment must be the lowbit.nn.Assignment that quantize_model returned, "
                        f"got {type(assignment).__name__}")
    if model.__dict__.get("_lowbit_converted") is not None:
        raise ValueError("model is already converted by lowbit.nn.convert")
    if model.__dict__.get("_lowbit_assignment") is None:
        raise ValueError("model is not quantized; call lowbit.nn.quantize_model(model, recipe) first")
    if model.__dict__["_lowbit_assignment"] is not assignment or not assignment.active:
        raise ValueError("assignment does not belong to this model (pass what quantize_model(model, ...) returned)")


def _swap(model, assignment, pairs):
    """Put each converted layer wherever its quantized layer sits and release the fp32 weight (the
    original float module, kept by the assignment for undo, drops its weight Parameter)."""
    refs = _references(model)
    done = {id(q) for q, _ in pairs}
    for q, new in pairs:
        new.train(False)
        for parent, cname in refs.get(id(q), []):
            parent._modules[cname] = new
    for entry in [e for e in assignment._replaced if id(e[2]) in done]:
        entry[1]._parameters["weight"] = None
        assignment._replaced.remove(entry)


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``model.state_dict()`` (each storage counted once: tied weights are one tensor)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total

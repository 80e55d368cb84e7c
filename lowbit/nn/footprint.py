"""Memory footprint of a quantized model: weight storage and an activation-memory estimate.

Weight storage per quantized weight (n elements, element format of b bits), computed by the one size
formula :func:`lowbit.nn.packing.weight_storage` that cost, PTQ and the packed checkpoint share:

    n * b                                      the elements (codebooks: ceil(log2 K) bits)
    + 32                                       per-tensor fp32 scale   (scaling 'tensor')
    + 32 * channels                            per-channel scales       ('channel')
    + 32 * groups                              per-group scales         ('group')
    + 8 * blocks                               MX: one E8M0 per 32 elements (0.25 bit/element)
    + 8 * blocks + 32                          NVFP4 (E4M3 blocks): one E4M3 per 16 elements + one fp32 per tensor
    + 32 per scale again for unsigned ints     the (fp32) zero point of asymmetric formats
    + 32 * K                                   a learnable codebook's value table
    direct casts (scaling 'none') store no scale; LSQ stores its learned scale like a fixed one.

Every other parameter (biases, norms, embeddings left in float, positional embeddings) counts at its
dtype's bits. Buffers (BatchNorm running statistics) are not counted: deployment folds them.

Activation memory (when an input shape or example is given): one forward pass (eval mode, no grad,
global RNG untouched; on a copy when an LSQ scale or codebook unit would otherwise initialise from
the dummy batch) with hooks on every layer. Each tensor a layer outputs is counted once, at the fewest bits any
quantizer holds it in: its own output quantizer, or the input quantizer of a weight layer that
consumes it (block formats at their bits per element, scale included); unquantized tensors at their
dtype's bits. The network input counts too. It is an estimate of what flows between layers, not of
autograd's saved tensors.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .hooks import HookQuantizers
from .learnable import LearnableCodebook, LSQQuantizer
from .modules import QuantLayer
from .packing import weight_storage
from .quantizers import FakeQuantizer, GradQuantizer


def weight_bits(shape, spec, learn: str | None = None) -> tuple[int, int]:
    """(element bits, scale/metadata bits) of one weight tensor (module docstring): the one size
    computation, :func:`lowbit.nn.packing.weight_storage`."""
    return weight_storage(shape, spec, learn)


@dataclass
class Footprint:
    rows: list                      # per weight layer: name, format, params, bits, bytes, fp32_bytes
    weight_bits: int                # whole model: quantized weights + every other parameter
    fp32_bytes: int                 # all parameters at 32 bits
    activation_bits: float | None = None
    input_shape: tuple | None = None
    activation_rows: list = field(default_factory=list)

    @property
    def weight_bytes(self) -> float:
        return self.weight_bits / 8

    @property
    def compression(self) -> float:
        return self.fp32_bytes / self.weight_bytes if self.weight_bits else float("inf")

    @property
    def activation_bytes(self) -> float | None:
        return None if self.activation_bits is None else self.activation_bits / 8

    def to_dict(self) -> dict:
        return {"weight_bits": self.weight_bits, "weight_bytes": self.weight_bytes,
                "fp32_bytes": self.fp32_bytes, "compression": self.compression,
                "activation_bytes": self.activation_bytes,
                "input_shape": list(self.input_shape) if self.input_shape else None, "rows": self.rows}


def _weight_rows(model: nn.Module, assignment) -> tuple[list, int]:
    rows, counted = [], set()
    modules = dict(model.named_modules())
    for r in assignment.rows:
        mod = modules.get(r.name)
        w = getattr(mod, "weight", None) if r.kind == "weight" else None
        if w is None:
            continue
        spec = r.specs.get("weight")
        eb, sb = weight_bits(tuple(w.shape), spec, r.learn.get("weight")) if spec else (w.numel() * 32, 0)
        bias = getattr(mod, "bias", None)
        bb = bias.numel() * bias.element_size() * 8 if isinstance(bias, torch.Tensor) else 0
        counted |= {id(w), id(bias)}
        total = eb + sb + bb
        rows.append({"name": r.name, "format": spec.format.name if spec else "fp32", "params": r.params,
                     "element_bits": eb, "scale_bits": sb, "bias_bits": bb, "bits": total, "bytes": total / 8,
                     "fp32_bytes": 4 * r.params})
    counted |= _quantizer_param_ids(model)
    other = [p for p in model.parameters() if id(p) not in counted]
    other_bits = sum(p.numel() * p.element_size() * 8 for p in other)
    if other:
        n = sum(p.numel() for p in other)
        rows.append({"name": "(other parameters)", "format": "fp32", "params": n, "element_bits": other_bits,
                     "scale_bits": 0, "bias_bits": 0, "bits": other_bits, "bytes": other_bits / 8, "fp32_bytes": 4 * n})
    return rows, sum(r["bits"] for r in rows)


def _quantizer_param_ids(model) -> set:
    """Parameters of learnable quantizers: counted in their layer's scale bits, not as weights."""
    return {id(q) for m in model.modules() if isinstance(m, (LSQQuantizer, LearnableCodebook))
            for q in m.parameters()}


def footprint(model: nn.Module, assignment, input_shape=None, example_input=None) -> Footprint:
    """Weight storage of ``model`` under ``assignment``; activation memory when ``input_shape``
    (full shape, batch included, e.g. (1, 3, 32, 32)) or ``example_input`` is given."""
    _check_args(model, assignment, input_shape, example_input)
    rows, wbits = _weight_rows(model, assignment)
    qids = _quantizer_param_ids(model)
    fp32 = 4 * sum(p.numel() for p in model.parameters() if id(p) not in qids)
    fp = Footprint(rows, wbits, fp32)
    if input_shape is not None or example_input is not None:
        fp.activation_bits, fp.activation_rows = _activation_bits(model, input_shape, example_input)
        fp.input_shape = tuple(example_input.shape if example_input is not None else input_shape)
    return fp


def _check_args(model, assignment, input_shape, example_input):
    from .assignment import Assignment

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(assignment, Assignment):
        raise TypeError(f"assignment must be the lowbit.nn.Assignment that quantize_model returns, "
                        f"got {type(assignment).__name__}")
    if input_shape is not None:
        ok = isinstance(input_shape, (tuple, list)) and len(input_shape) > 0 and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape)
        if not ok:
            raise ValueError(f"input_shape={input_shape!r} is not allowed; allowed: a tuple of positive ints, "
                             f"batch first, e.g. (1, 3, 32, 32)")
    if example_input is not None and not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")


def _bits_of(spec) -> float:
    return float(spec.format.bits_per_element)


def _activation_bits(model, input_shape, example_input):
    needs_copy = any(isinstance(m, (LSQQuantizer, LearnableCodebook)) and not bool(m.initialized)
                     for m in model.modules())
    run = copy.deepcopy(model) if needs_copy else model
    held: dict = {}   # data_ptr -> [numel, bits, name, tensor (kept alive so no address is reused)]

    def record(t, bits, name):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            k = t.data_ptr()
            cur = held.get(k)
            held[k] = [t.numel(), bits, name, t] if cur is None else [cur[0], min(cur[1], bits), cur[2], cur[3]]

    def pre(mod, args, name):
        q = getattr(mod, "input_quantizer", None)
        if isinstance(mod, QuantLayer) and q is not None and args:
            record(args[0], _bits_of(q.spec), name + ":input")

    def post(mod, args, out, name):
        q = getattr(mod, "output_quantizer", None)
        hq = mod._modules.get("lowbit_q")
        if q is None and isinstance(hq, HookQuantizers) and hq.kind in ("activation", "other"):
            q = hq.output
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                record(t, _bits_of(q.spec) if q is not None else t.element_size() * 8, name)

    handles = []
    for name, m in run.named_modules():
        if _is_layer(m):
            handles.append(m.register_forward_pre_hook(lambda mod, a, n=name: pre(mod, a, n)))
            handles.append(m.register_forward_hook(lambda mod, a, o, n=name: post(mod, a, o, n)))
    was_training = run.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            x = example_input
            if x is None:
                p = next(run.parameters(), None)
                x = torch.randn(tuple(input_shape), device=p.device if p is not None else "cpu")
            record(x, x.element_size() * 8, "(input)")
            run.eval()
            try:
                run(x)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise ValueError(f"the model cannot run an input of shape {list(x.shape)}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                                 f"allowed: the shape the model takes, batch first") from None
    finally:
        run.train(was_training)
        for h in handles:
            h.remove()
    rows = [{"name": v[2], "numel": v[0], "bits": v[1]} for v in held.values()]
    return sum(v[0] * v[1] for v in held.values()), rows


_QUANTIZERS = (FakeQuantizer, GradQuantizer, LSQQuantizer, LearnableCodebook, HookQuantizers)


def _is_layer(m: nn.Module) -> bool:
    """A module whose outputs are counted: quantized layers and leaf modules (quantizers excluded)."""
    if isinstance(m, _QUANTIZERS):
        return False
    if isinstance(m, QuantLayer):
        return True
    return not any(not isinstance(c, _QUANTIZERS) for c in m.children())

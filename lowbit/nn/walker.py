"""The one model walker and the one per-layer record: :func:`walk` yields a :class:`LayerInfo` for every
layer of any nn.Module; surgery (:func:`discover`), cost (``lowbit.cost.profile_layers``, which adds
the work of a forward pass), search, footprint and export all read these records.

Kinds (``LayerInfo.kind``), the layers quantization acts on:

    ``weight``      nn.Linear, nn.Conv1d, nn.Conv2d (incl. depthwise), nn.Embedding (exact types;
                    subclasses may override forward, so they are left alone), and Hugging Face's
                    Conv1D (GPT-2; a Linear with its weight stored as (in, out))
    ``activation``  torch.nn activation modules (ReLU, GELU, SiLU, PReLU, Hardswish, ...)
    ``softmax``     nn.Softmax
    ``attention``   nn.MultiheadAttention, or a module whose own ``forward`` calls
                    F.scaled_dot_product_attention, or at least two matmuls (torch.matmul / bmm /
                    ``@``) and a softmax (functional or a child nn.Softmax)
    ``functional``  a module whose own ``forward`` calls a functional softmax or activation
                    (F.softmax, F.gelu, torch.tanh, x.relu(), ...)
    ``other``       any other leaf module (norms, pooling, dropout, flatten, ...)

Weight modules (``is_weight``: nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, their subclasses and
lowbit's quantized versions) are walked too: cost counts every one of them. Those that quantization
leaves alone (subclasses, layers inside nn.MultiheadAttention) have ``kind=None``.
Containers that call none of those are not layers. ``forward`` is read statically: the names its
bytecode loads (``torch.matmul`` loads ``matmul``) and its ``@`` operators, also inside the methods
and module-level Python functions it names, two levels deep (Hugging Face's
``eager_attention_forward``), plus functions held as instance attributes (``self.act = F.gelu``); a
name bound to a child module (``self.softmax = nn.Softmax()``) is a module call, not a functional
one. A parameter-free leaf that only computes activations (HF's ``GELUActivation``) is an
``activation``. Torch's own modules are not scanned (only their function attributes, e.g.
TransformerEncoderLayer's ``activation``). nn.MultiheadAttention is an ``attention`` layer that
also owns its projection weights (``ops={"mha": 1}``): it reads them directly, so its children
(``out_proj``) have ``kind=None`` and the MultiheadAttention quantizes them itself.
"""
from __future__ import annotations

import dis
import math
import types
from dataclasses import dataclass, field

import torch.nn.modules.activation as _act
from torch import nn

from .modules import QuantLayer, quantized_class

WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)

_SOFTMAX_FAMILY = {"Softmax", "Softmin", "LogSoftmax", "Softmax2d", "MultiheadAttention"}
ACTIVATION_TYPES = tuple(getattr(_act, n) for n in _act.__all__ if n not in _SOFTMAX_FAMILY)

ACT_NAMES = ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "selu", "celu", "leaky_relu",
             "softplus", "mish", "hardswish", "hardsigmoid", "hardtanh", "logsigmoid", "softsign",
             "tanhshrink", "prelu", "rrelu")
OP_NAMES = {"softmax": "softmax", "matmul": "matmul", "bmm": "matmul", "__matmul__": "matmul",
            "scaled_dot_product_attention": "sdpa", **{n: "act" for n in ACT_NAMES}}


@dataclass(frozen=True)
class LayerInfo:
    """One layer: what it is (``kind``, ``tags``, forward ``ops``), its parameters and shapes, and,
    once profiled (``lowbit.cost.profile_layers``), the work it does per sample.

    ``type`` is the float layer's class name (``Linear`` also for lowbit's quantized QLinear).
    """

    name: str
    module: nn.Module = field(compare=False, repr=False)
    kind: str | None
    tags: frozenset = frozenset()
    ops: dict = field(default_factory=dict, compare=False)   # functional op counts: softmax, matmul, sdpa, act
    softmax_child: bool = False               # has a child nn.Softmax (attention scores)
    type: str = ""
    params: int = 0                           # parameters of the module itself (weight + bias)
    weight_shape: tuple | None = None
    groups: int = 1
    depthwise: bool = False
    is_weight: bool = False                   # a Linear / Conv1d / Conv2d / Embedding (cost counts it)
    macs: int = 0                             # per sample, from profile_layers
    in_numel: int = 0
    out_numel: int = 0

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape) if self.weight_shape else 0

    @property
    def bias_numel(self) -> int:
        return self.params - self.weight_numel

    @property
    def is_conv(self) -> bool:
        return self.type in ("Conv1d", "Conv2d")


def _codes(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def _helper_code(owner, name: str, fn_globals: dict):
    """The code of a helper that ``name`` refers to: a method of ``type(owner)`` or a module-level
    Python function in the forward's globals (HF's ``eager_attention_forward``), else None."""
    target = getattr(type(owner), name, None)
    if not isinstance(target, types.FunctionType):
        target = fn_globals.get(name)
    if isinstance(target, types.FunctionType) and not target.__module__.startswith("torch"):
        return target.__code__, target.__globals__
    return None


def _scan(module: nn.Module, code, fn_globals: dict, counts: dict, seen: set, depth: int):
    for c in _codes(code):
        for ins in dis.get_instructions(c):
            op = None
            if ins.opname.startswith("LOAD_") and isinstance(ins.argval, str):
                op = OP_NAMES.get(ins.argval)
                if op and isinstance(getattr(module, ins.argval, None), nn.Module):
                    op = None
                helper = _helper_code(module, ins.argval, fn_globals) if depth > 0 and not op else None
                if helper is not None and helper[0] not in seen:
                    seen.add(helper[0])
                    _scan(module, helper[0], helper[1], counts, seen, depth - 1)
            elif ins.opname in ("BINARY_OP", "BINARY_MATRIX_MULTIPLY") and "@" in (ins.argrepr or "@"):
                op = "matmul"
            if op:
                counts[op] = counts.get(op, 0) + 1


def _attribute_ops(module: nn.Module) -> dict:
    """Functional ops held as instance attributes (``self.act = F.gelu``, TransformerEncoderLayer's
    ``activation``), which the forward calls through ``self``."""
    from .functional import FUNCS  # the function tables (functional imports this module)
    by_func = {f: ("act" if cat == "act" else cat) for cat, fs in FUNCS.items() for f in fs}
    counts: dict = {}
    for v in vars(module).values():
        cat = by_func.get(v) if callable(v) and not isinstance(v, nn.Module) else None
        if cat:
            counts[cat] = counts.get(cat, 0) + 1
    return counts


def forward_ops(module: nn.Module, depth: int = 2) -> dict:
    """Counts of functional softmax / matmul / sdpa / activation calls in ``type(module).forward``,
    in the methods and module-level helper functions it names (``depth`` levels deep), and through
    function-valued instance attributes."""
    fwd = type(module).forward
    code = getattr(fwd, "__code__", None)
    counts = _attribute_ops(module)
    if code is None:
        return counts
    _scan(module, code, getattr(fwd, "__globals__", {}), counts, {code}, depth)
    return counts


def _is_torch_module(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torch.")


def classify(m: nn.Module) -> tuple[str | None, dict, bool]:
    """(kind or None, forward ops, has a child nn.Softmax) of one module."""
    if quantized_class(m) is not None:
        return "weight", {}, False
    if isinstance(m, nn.Softmax):
        return "softmax", {}, False
    if isinstance(m, ACTIVATION_TYPES):
        return "activation", {}, False
    if isinstance(m, nn.MultiheadAttention):
        return "attention", {"mha": 1}, False
    ops = _attribute_ops(m) if _is_torch_module(m) else forward_ops(m)
    softmax_child = any(isinstance(c, nn.Softmax) for c in m.children())
    if ops.get("sdpa") or (ops.get("matmul", 0) >= 2 and (ops.get("softmax") or softmax_child)):
        return "attention", ops, softmax_child
    if _is_activation_module(m, ops):
        return "activation", ops, False
    if ops.get("softmax") or ops.get("act"):
        return "functional", ops, softmax_child
    if next(m.children(), None) is None:
        return "other", {}, False
    return None, ops, softmax_child


def _is_activation_module(m: nn.Module, ops: dict) -> bool:
    """A parameter-free leaf whose forward only computes activation functions (Hugging Face's
    GELUActivation, NewGELUActivation, QuickGELUActivation...): its output is the activation."""
    return (bool(ops.get("act")) and not any(ops.get(k) for k in ("softmax", "matmul", "sdpa"))
            and next(m.children(), None) is None and next(m.parameters(recurse=False), None) is None)


def tags_of(m: nn.Module, kind: str) -> frozenset:
    tags = {type(m).__name__, kind}
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        tags.add("conv")
        if m.groups > 1 and m.groups == m.in_channels:
            tags.add("depthwise")
    return frozenset(tags)


def is_hf_conv1d_type(m: nn.Module) -> bool:
    """HF's Conv1D or lowbit's quantized subclass of it."""
    return any(t.__name__ == "Conv1D" and t.__module__.startswith("transformers.") for t in type(m).__mro__)


def _float_type(m: nn.Module) -> str:
    for t in WEIGHT_TYPES:
        if isinstance(m, t):
            return t.__name__
    return "Conv1D" if is_hf_conv1d_type(m) else type(m).__name__


def _record(name: str, m: nn.Module, kind, ops, softmax_child) -> LayerInfo:
    w = getattr(m, "weight", None)
    is_weight = isinstance(m, WEIGHT_TYPES) or is_hf_conv1d_type(m)
    groups = int(getattr(m, "groups", 1)) if is_weight else 1
    depthwise = isinstance(m, (nn.Conv1d, nn.Conv2d)) and groups > 1 and groups == m.in_channels
    return LayerInfo(name, m, kind, tags_of(m, kind) if kind else frozenset(), ops, softmax_child,
                     type=_float_type(m), params=sum(p.numel() for p in m.parameters(recurse=False)),
                     weight_shape=tuple(w.shape) if is_weight and w is not None else None,
                     groups=groups, depthwise=bool(depthwise), is_weight=is_weight)


def walk(model: nn.Module) -> list[LayerInfo]:
    """Every layer and every weight module of ``model`` in module order (named_modules)."""
    out, skip = [], []
    for name, m in model.named_modules():
        inside_mha = any(name.startswith(p + ".") for p in skip)
        if isinstance(m, nn.MultiheadAttention):
            skip.append(name)
        if inside_mha:
            kind, ops, softmax_child = None, {}, False      # quantized by the MultiheadAttention (see above)
        elif isinstance(m, QuantLayer):
            kind, ops, softmax_child = "weight", {}, False  # an already quantized weight layer
        else:
            kind, ops, softmax_child = classify(m)
        if kind is not None or isinstance(m, WEIGHT_TYPES) or is_hf_conv1d_type(m):
            out.append(_record(name, m, kind, ops, softmax_child))
    return out


def discover(model: nn.Module) -> list[LayerInfo]:
    """The layers quantization acts on (``kind`` set), in module order, with kinds and type tags."""
    return [li for li in walk(model) if li.kind is not None]


def first_last_weight_layers(layers: list[LayerInfo]) -> set[str]:
    """Names of the first and last weight layer (in module registration order)."""
    names = [li.name for li in layers if li.kind == "weight"]
    return {names[0], names[-1]} if names else set()

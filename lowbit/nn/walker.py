"""The one model walker and the one per-layer record: :func:`walk` yields a :class:`LayerInfo` for every
layer of any nn.Module; surgery (:func:`discover`), cost (``lowbit.cost.profile_layers``, which adds
the work of a forward pass), search, footprint and export all read these records.

Kinds (``LayerInfo.kind``), the layers quantization acts on:

    ``weight``      nn.Linear, nn.Conv1d, nn.Conv2d (incl. depthwise), nn.Embedding (exact types;
                    subclasses may override forward, so they are left alone)
    ``activation``  torch.nn activation modules (ReLU, GELU, SiLU, PReLU, Hardswish, ...)
    ``softmax``     nn.Softmax
    ``attention``   a module whose own ``forward`` calls F.scaled_dot_product_attention, or at least
                    two matmuls (torch.matmul / bmm / ``@``) and a softmax (functional or a child
                    nn.Softmax)
    ``functional``  a module whose own ``forward`` calls a functional softmax or activation
                    (F.softmax, F.gelu, torch.tanh, x.relu(), ...)
    ``other``       any other leaf module (norms, pooling, dropout, flatten, ...)

Weight modules (``is_weight``: nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, their subclasses and
lowbit's quantized versions) are walked too: cost counts every one of them. Those that quantization
leaves alone (subclasses, layers inside nn.MultiheadAttention) have ``kind=None``.
Containers that call none of those are not layers. ``forward`` is read statically: the names its
bytecode loads (``torch.matmul`` loads ``matmul``) and its ``@`` operators; a name bound to a child
module (``self.softmax = nn.Softmax()``) is a module call, not a functional one. Calls hidden in
helper functions are not seen by this scan (their intercepted numerics still apply at run time
only for kinds found here). nn.MultiheadAttention runs one fused functional and reads its
projection weights directly, so it and its children are skipped (not supported).
"""
from __future__ import annotations

import dis
import math
import types
from dataclasses import dataclass, field

import torch.nn.modules.activation as _act
from torch import nn

from .modules import QUANTIZED, QuantLayer

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
        return self.type.startswith("Conv")


def _codes(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def forward_ops(module: nn.Module) -> dict:
    """Counts of functional softmax / matmul / sdpa / activation calls in ``type(module).forward``."""
    code = getattr(type(module).forward, "__code__", None)
    counts: dict = {}
    if code is None:
        return counts
    for c in _codes(code):
        for ins in dis.get_instructions(c):
            op = None
            if ins.opname.startswith("LOAD_") and isinstance(ins.argval, str):
                op = OP_NAMES.get(ins.argval)
                if op and isinstance(getattr(module, ins.argval, None), nn.Module):
                    op = None
            elif ins.opname in ("BINARY_OP", "BINARY_MATRIX_MULTIPLY") and "@" in (ins.argrepr or "@"):
                op = "matmul"
            if op:
                counts[op] = counts.get(op, 0) + 1
    return counts


def _is_torch_module(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torch.")


def classify(m: nn.Module) -> tuple[str | None, dict, bool]:
    """(kind or None, forward ops, has a child nn.Softmax) of one module."""
    if type(m) in QUANTIZED:
        return "weight", {}, False
    if isinstance(m, nn.Softmax):
        return "softmax", {}, False
    if isinstance(m, ACTIVATION_TYPES):
        return "activation", {}, False
    ops = {} if _is_torch_module(m) else forward_ops(m)
    softmax_child = any(isinstance(c, nn.Softmax) for c in m.children())
    if ops.get("sdpa") or (ops.get("matmul", 0) >= 2 and (ops.get("softmax") or softmax_child)):
        return "attention", ops, softmax_child
    if ops.get("softmax") or ops.get("act"):
        return "functional", ops, softmax_child
    if next(m.children(), None) is None:
        return "other", {}, False
    return None, ops, softmax_child


def tags_of(m: nn.Module, kind: str) -> frozenset:
    tags = {type(m).__name__, kind}
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        tags.add("conv")
        if m.groups > 1 and m.groups == m.in_channels:
            tags.add("depthwise")
    return frozenset(tags)


def _float_type(m: nn.Module) -> str:
    for t in WEIGHT_TYPES:
        if isinstance(m, t):
            return t.__name__
    return type(m).__name__


def _record(name: str, m: nn.Module, kind, ops, softmax_child) -> LayerInfo:
    w = getattr(m, "weight", None)
    is_weight = isinstance(m, WEIGHT_TYPES)
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
        if inside_mha or isinstance(m, nn.MultiheadAttention):
            kind, ops, softmax_child = None, {}, False      # not supported by quantization (see above)
        elif isinstance(m, QuantLayer):
            kind, ops, softmax_child = "weight", {}, False  # an already quantized weight layer
        else:
            kind, ops, softmax_child = classify(m)
        if kind is not None or isinstance(m, WEIGHT_TYPES):
            out.append(_record(name, m, kind, ops, softmax_child))
    return out


def discover(model: nn.Module) -> list[LayerInfo]:
    """The layers quantization acts on (``kind`` set), in module order, with kinds and type tags."""
    return [li for li in walk(model) if li.kind is not None]


def first_last_weight_layers(layers: list[LayerInfo]) -> set[str]:
    """Names of the first and last weight layer (in module registration order)."""
    names = [li.name for li in layers if li.kind == "weight"]
    return {names[0], names[-1]} if names else set()

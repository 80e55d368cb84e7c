"""Finding the layers of any nn.Module and classifying them into kinds.

Kinds (``LayerInfo.kind``):

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

Containers that call none of those are not layers. ``forward`` is read statically: the names its
bytecode loads (``torch.matmul`` loads ``matmul``) and its ``@`` operators; a name bound to a child
module (``self.softmax = nn.Softmax()``) is a module call, not a functional one. Calls hidden in
helper functions are not seen by this scan (their intercepted numerics still apply at run time
only for kinds found here). nn.MultiheadAttention runs one fused functional and reads its
projection weights directly, so it and its children are skipped (not supported).
"""
from __future__ import annotations

import dis
import types
from dataclasses import dataclass, field

import torch.nn.modules.activation as _act
from torch import nn

from .modules import QUANTIZED

_SOFTMAX_FAMILY = {"Softmax", "Softmin", "LogSoftmax", "Softmax2d", "MultiheadAttention"}
ACTIVATION_TYPES = tuple(getattr(_act, n) for n in _act.__all__ if n not in _SOFTMAX_FAMILY)

ACT_NAMES = ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "selu", "celu", "leaky_relu",
             "softplus", "mish", "hardswish", "hardsigmoid", "hardtanh", "logsigmoid", "softsign",
             "tanhshrink", "prelu", "rrelu")
OP_NAMES = {"softmax": "softmax", "matmul": "matmul", "bmm": "matmul", "__matmul__": "matmul",
            "scaled_dot_product_attention": "sdpa", **{n: "act" for n in ACT_NAMES}}


@dataclass
class LayerInfo:
    name: str
    module: nn.Module
    kind: str
    tags: frozenset
    ops: dict = field(default_factory=dict)   # functional op counts: softmax, matmul, sdpa, act
    softmax_child: bool = False               # has a child nn.Softmax (attention scores)


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


def discover(model: nn.Module) -> list[LayerInfo]:
    """Every layer of ``model`` in module order (named_modules), with its kind and type tags."""
    out, skip = [], []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in skip):
            continue
        if isinstance(m, nn.MultiheadAttention):
            skip.append(name)
            continue
        kind, ops, softmax_child = classify(m)
        if kind is not None:
            out.append(LayerInfo(name, m, kind, tags_of(m, kind), ops, softmax_child))
    return out


def first_last_weight_layers(layers: list[LayerInfo]) -> set[str]:
    """Names of the first and last weight layer (in module registration order)."""
    names = [li.name for li in layers if li.kind == "weight"]
    return {names[0], names[-1]} if names else set()

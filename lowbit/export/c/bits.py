"""Per-layer weight widths for the C export, from a uniform width, a {layer: bits} map, a
:class:`lowbit.nn.Recipe` or a :class:`lowbit.nn.Assignment`.

Layers are named by their module path (``features.0.0``, as lowbit.nn, cost and search name them)
or by the torch.fx node name of the printed layer table (``features_0_0``). A name, or a recipe rule
pattern, that matches no weight layer is an error, never a silent 8-bit; a weight layer that a recipe
leaves in fp32 (or gives a format other than int2/int4/int8) is an error too: the C export is
integer-only. Depthwise convolutions keep 8 bits under a uniform width or a default ('*').
"""
from __future__ import annotations

import fnmatch
import re

from .graph import Graph

ALLOWED = (2, 4, 8)


def _weight_ops(graph: Graph) -> list:
    return [op for op in graph.ops if op.kind == "conv"]


def _depthwise(op) -> bool:
    return op.groups > 1 and op.groups == op.weight.shape[0] and op.weight.shape[1] == 1


def _check(v, what: str) -> int:
    if v not in ALLOWED:
        raise ValueError(f"{what}: weight bits {v!r} are not allowed; allowed: 2, 4, 8")
    return int(v)


def _from_map(graph: Graph, spec: dict) -> dict:
    ops = _weight_ops(graph)
    default = spec.get("*")
    out, used = {}, set()
    for op in ops:
        module = op.extra.get("module", op.name)
        hit = [k for k in (op.name, module) if k in spec]
        if hit:
            out[op.name] = _check(spec[hit[0]], f"layer {hit[0]!r}")
            used.add(hit[0])
        else:
            out[op.name] = 8 if default is None or _depthwise(op) else _check(default, "default '*'")
    unknown = [k for k in spec if k != "*" and k not in used]
    if unknown:
        names = ", ".join(op.extra.get("module", op.name) for op in ops)
        raise ValueError(f"layer {unknown[0]!r} matches no weight layer of the model; allowed: {names}")
    return out


def _format_bits(name: str | None, layer: str) -> int:
    m = re.fullmatch(r"int(\d+)", name or "")
    if not m or int(m.group(1)) not in ALLOWED:
        raise ValueError(f"layer {layer!r} has weights {name or 'fp32'}; allowed for the integer C export: "
                         f"int2, int4, int8 on every weight layer")
    return int(m.group(1))


def _from_recipe(model, graph: Graph, recipe) -> dict:
    from lowbit.nn.walker import tags_of
    mods = dict(model.named_modules())
    ops = _weight_ops(graph)
    out = {}
    for i, op in enumerate(ops):
        module = op.extra.get("module", op.name)
        spec = None
        if not (recipe.keep_first_last and i in (0, len(ops) - 1)):
            spec = recipe.lookup(module, tags_of(mods[module], "weight") if module in mods else (), "weight")
        w = getattr(spec, "weight", None) if spec is not None else None
        fmt = getattr(w, "format", None)
        out[op.name] = _format_bits(getattr(fmt, "name", fmt) if w is not None else None, module)
    names = [op.extra.get("module", op.name) for op in ops]
    for r in recipe.rules:
        if r.pattern is not None and not any(fnmatch.fnmatchcase(n, r.pattern) for n in names):
            raise ValueError(f"recipe rule pattern {r.pattern!r} matches no weight layer of the model; "
                             f"allowed: {', '.join(names)}")
    return out


def _from_assignment(graph: Graph, asg) -> dict:
    rows = {r.name: r for r in asg.rows}
    out = {}
    for op in _weight_ops(graph):
        module = op.extra.get("module", op.name)
        if module not in rows:
            raise ValueError(f"layer {module!r} is not in the assignment; allowed: an Assignment of this model")
        out[op.name] = _format_bits(rows[module].format("weight"), module)
    return out


def resolve_bits(model, graph: Graph, bits) -> dict:
    """{fx op name: weight bits} for every conv/Linear op of ``graph``."""
    from lowbit.nn import Recipe
    from lowbit.nn.assignment import Assignment
    if isinstance(bits, Recipe):
        return _from_recipe(model, graph, bits)
    if isinstance(bits, Assignment):
        return _from_assignment(graph, bits)
    if isinstance(bits, dict):
        return _from_map(graph, bits)
    b = _check(bits, "uniform width")
    return {op.name: 8 if _depthwise(op) else b for op in _weight_ops(graph)}


def parse_bits(text: str):
    """'4' -> 4; 'conv1=2,fc=8,4' -> {'conv1': 2, 'fc': 8, '*': 4} (per-layer, '*' or a bare number = default)."""
    if "=" not in text:
        return _bits(text)
    out = {}
    for part in text.split(","):
        name, _, val = part.rpartition("=")
        out[name.strip() or "*"] = _bits(val)
    return out


def _bits(v: str) -> int:
    if v.strip() not in ("2", "4", "8"):
        raise ValueError(f"--weights-bits value {v!r} is not allowed; allowed: 2, 4, 8 (or NAME=BITS,...)")
    return int(v)

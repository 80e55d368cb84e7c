"""Trace a float model into the flat op list that the C export quantizes (lowbit.export.trace: torch.fx).

The graph IR is a list of :class:`Op` over named values (CHW tensors of one sample). Supported:
Linear, Conv2d (stride, padding, groups incl. depthwise/pointwise), BatchNorm folded into the
preceding Conv2d/Linear, ReLU/ReLU6 (fused into the producing op as a clamp, or standalone),
MaxPool2d (with padding and ceil_mode), AvgPool2d (no padding), AdaptiveAvgPool2d(1), flatten, residual add, Dropout/Identity
(removed). Anything else raises :class:`UnsupportedLayerError` naming the node.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..trace import record
from ..trace import trace as export_trace

SUPPORTED = ("Linear, Conv2d (stride/padding/groups), BatchNorm after Conv2d/Linear, ReLU, ReLU6, "
             "MaxPool2d (padding, ceil_mode), AvgPool2d (no padding), AdaptiveAvgPool2d(1), flatten, residual add, Dropout, Identity")


class UnsupportedLayerError(ValueError):
    """A layer the integer C export cannot express (the message names it and lists what is supported)."""


@dataclass
class Op:
    """One integer-exportable op. ``kind``: conv | pool_max | pool_avg | add | relu | flatten.

    conv covers Linear (a 1x1 conv on a 1x1 map of ``cin`` = in_features). ``act`` is None, "relu"
    or "relu6" (fused clamp). ``weight``/``bias`` are float (BN already folded).
    """
    kind: str
    name: str
    inputs: list[str]
    output: str
    weight: torch.Tensor | None = None   # (cout, cin/groups, kh, kw)
    bias: torch.Tensor | None = None     # (cout,)
    stride: int = 1
    padding: int = 0
    groups: int = 1
    kernel: int = 1                      # pools: kernel (square)
    act: str | None = None
    is_linear: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Graph:
    """Ops in execution order; ``shapes`` maps value name -> (C, H, W) (value names are fx node names)."""
    ops: list[Op]
    input: str
    output: str
    shapes: dict[str, tuple[int, int, int]]


def _pair1(v, what, name):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if v[0] != v[1]:
        raise UnsupportedLayerError(f"layer {name!r}: non-square {what} {v} is not supported; supported: {SUPPORTED}")
    return int(v[0])


def _unsupported(node: fx.Node, what: str) -> UnsupportedLayerError:
    name = node.target if node.op == "call_module" else node.name
    return UnsupportedLayerError(f"unsupported layer {name!r} ({what}) for the C export; supported: {SUPPORTED}")


def trace(model: nn.Module, input_shape: tuple[int, int, int]) -> Graph:
    """symbolic_trace ``model`` (eval mode) into a :class:`Graph`; shapes from one dummy forward."""
    gm = export_trace(model.eval(), UnsupportedLayerError)
    shapes_t = _run_shapes(gm, input_shape)
    mods = dict(gm.named_modules())
    ops: list[Op] = []
    alias: dict[str, str] = {}           # fx node -> value name
    producer: dict[str, Op] = {}
    users = {n.name: len(n.users) for n in gm.graph.nodes}
    inp = out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            inp = alias[node.name] = node.name
            continue
        if node.op == "output":
            out = alias[node.args[0].name]
            continue
        if node.op == "get_attr":
            raise _unsupported(node, "parameter access in forward")
        args = [alias[a.name] for a in node.args if isinstance(a, fx.Node)]
        kind, info = _classify(node, mods)
        src = args[0] if args else None
        prev = producer.get(src)
        fusible = prev is not None and users.get(prev.extra.get("fx", ""), 0) == 1 and prev.output == src
        if kind == "identity":
            alias[node.name] = src
        elif kind == "bn":
            if not (fusible and prev.kind == "conv" and prev.act is None):
                raise _unsupported(node, "BatchNorm not directly after a Conv2d/Linear")
            _fold_bn(prev, info)
            _rename(prev, node, alias, producer, users)
        elif kind in ("relu", "relu6"):
            if fusible and prev.kind in ("conv", "add") and prev.act is None:
                prev.act = kind
                _rename(prev, node, alias, producer, users)
            else:
                _emit(Op("relu", node.name, [src], node.name, act=kind, extra={"fx": node.name}), ops, alias, producer)
        elif kind == "flatten":
            _emit(Op("flatten", node.name, [src], node.name, extra={"fx": node.name}), ops, alias, producer)
        elif kind == "add":
            if len(args) != 2:
                raise _unsupported(node, "add of a tensor and a constant")
            _emit(Op("add", node.name, args, node.name, extra={"fx": node.name}), ops, alias, producer)
        else:  # conv / linear / pools
            op = info
            op.name, op.inputs, op.output = node.name, [src], node.name
            op.extra = {**op.extra, "fx": node.name}
            if node.op == "call_module":
                op.extra["module"] = node.target  # the module path, e.g. "features.0.0" (fx: features_0_0)
            _emit(op, ops, alias, producer)
    return Graph(ops, inp, out, shapes_t)


def _emit(op, ops, alias, producer):
    ops.append(op)
    alias[op.extra["fx"]] = op.output
    producer[op.output] = op


def _rename(op: Op, node: fx.Node, alias, producer, users):
    """Fuse ``node`` into ``op``: the op's output becomes the node's value."""
    del producer[op.output]
    op.output = node.name
    op.extra["fx"] = node.name
    producer[node.name] = op
    alias[node.name] = node.name


def _classify(node: fx.Node, mods: dict) -> tuple[str, object]:
    if node.op == "call_module":
        m = mods[node.target]
        if isinstance(m, (nn.Dropout, nn.Identity)):
            return "identity", None
        if isinstance(m, nn.ReLU):
            return "relu", None
        if isinstance(m, nn.ReLU6):
            return "relu6", None
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            return "bn", m
        if isinstance(m, nn.Flatten):
            return "flatten", None
        if isinstance(m, nn.Linear):
            w = m.weight.detach().float()[:, :, None, None]
            b = m.bias.detach().float() if m.bias is not None else torch.zeros(w.shape[0])
            return "conv", Op("conv", "", [], "", weight=w, bias=b, is_linear=True)
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise _unsupported(node, f"Conv2d padding={m.padding!r} padding_mode={m.padding_mode!r}")
            if _pair1(m.dilation, "dilation", node.name) != 1:
                raise _unsupported(node, "dilated Conv2d")
            w = m.weight.detach().float().clone()
            b = m.bias.detach().float().clone() if m.bias is not None else torch.zeros(w.shape[0])
            return "conv", Op("conv", "", [], "", weight=w, bias=b, stride=_pair1(m.stride, "stride", node.name),
                              padding=_pair1(m.padding, "padding", node.name), groups=m.groups)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            pad = _pair1(m.padding, "padding", node.name)
            if isinstance(m, nn.AvgPool2d) and (pad != 0 or m.ceil_mode):
                raise _unsupported(node, "AvgPool2d with padding or ceil_mode")
            if isinstance(m, nn.MaxPool2d) and _pair1(m.dilation, "dilation", node.name) != 1:
                raise _unsupported(node, "dilated MaxPool2d")
            if isinstance(m, nn.MaxPool2d) and getattr(m, "return_indices", False):
                raise _unsupported(node, "MaxPool2d with return_indices")
            k = _pair1(m.kernel_size, "kernel", node.name)
            s = _pair1(m.stride if m.stride is not None else k, "stride", node.name)
            kind = "pool_max" if isinstance(m, nn.MaxPool2d) else "pool_avg"
            return "pool", Op(kind, "", [], "", kernel=k, stride=s, padding=pad,
                              extra={"ceil_mode": bool(m.ceil_mode)})
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if _pair1(m.output_size, "output_size", node.name) != 1:
                raise _unsupported(node, f"AdaptiveAvgPool2d({m.output_size})")
            return "pool", Op("pool_avg", "", [], "", kernel=-1, stride=1)   # kernel -1: global
        raise _unsupported(node, type(m).__name__)
    if node.op == "call_function":
        t = node.target
        if t in (F.relu, torch.relu):
            return "relu", None
        if t is F.relu6:
            return "relu6", None
        if t in (torch.flatten,):
            return "flatten", None
        if t in (operator.add, torch.add):
            return "add", None
        raise _unsupported(node, f"function {getattr(t, '__name__', t)}")
    if node.op == "call_method":
        if node.target == "flatten":
            return "flatten", None
        if node.target == "relu":
            return "relu", None
        if node.target == "add":
            return "add", None
        raise _unsupported(node, f"method .{node.target}()")
    raise _unsupported(node, node.op)


def _fold_bn(op: Op, bn: nn.Module) -> None:
    """w' = w * g / sqrt(v + eps) per output channel; b' = (b - mean) * g / sqrt(v + eps) + beta."""
    g = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(bn.running_mean)
    beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    k = g / torch.sqrt(bn.running_var.float() + bn.eps)
    op.weight = op.weight * k[:, None, None, None]
    op.bias = (op.bias - bn.running_mean.float()) * k + beta


def _run_shapes(gm: fx.GraphModule, input_shape) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of every node's output for one dummy sample (vectors as (n, 1, 1))."""
    shapes = {}
    for k, r in record(gm, torch.zeros(1, *input_shape)).items():
        s = tuple(r.shape[1:])
        shapes[k] = (s + (1, 1, 1))[:3] if len(s) < 3 else s
    for k, s in shapes.items():
        if len(s) != 3:
            raise UnsupportedLayerError(f"node {k!r} produces a tensor of rank {len(s) + 1}; the C export "
                                        f"supports (N, C, H, W) and (N, F) tensors only")
    return shapes


def activations(model: nn.Module, graph: Graph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Float outputs of the original model at every value of ``graph`` (fx node names) for batch ``x``."""
    want = {op.output for op in graph.ops} | {graph.input}
    return record(export_trace(model.eval(), UnsupportedLayerError), x, want)

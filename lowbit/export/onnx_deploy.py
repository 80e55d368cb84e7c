"""Deployable ONNX layout: BatchNorm folding and the placement of Q/DQ that onnxruntime / TensorRT fuse.

onnxruntime turns ``DequantizeLinear -> Conv/Gemm/MatMul -> QuantizeLinear`` (weights a constant
DequantizeLinear of int8 codes, bias a DequantizeLinear of int32 codes with scale ``s_in * s_w``)
into QLinearConv / QGemm / QLinearMatMul; a layer whose output is not quantized becomes
ConvInteger / MatMulIntegerToFloat at best. lowbit quantizes activations at the INPUT of the next
quantized layer, often after ReLU / MaxPool / Flatten. Those ops commute with a monotone quantizer
whose grid contains 0 exactly (``Q(relu(x)) == relu(Q(x))``, ``Q(maxpool(x)) == maxpool(Q(x))``),
so the consumer's Q/DQ can be emitted right after the producing layer with the SAME scale and the
result is bit-identical to the fake-quantized model (:func:`plan`). For int8 / uint8 the consumer's
own Q/DQ is kept as well (onnxruntime needs ``DQ -> Conv``; quantizing values already on the grid
again is the identity). For other formats (fp8, int4, int16, ...) onnxruntime has no integer kernel
and its rewrites break the 'simulate' layout for them (measured on the digits cnn: fp8_e4m3 loses
3.9 accuracy points with the optimiser on, ReLUs before an fp8 QuantizeLinear being dropped; int4
fails to load, Q/DQ moved across MaxPool into an int4 MaxPool it cannot run), so only the
producer-side Q/DQ is written and the consumer-side copy, redundant there, is left out: both then
load and keep their accuracy (tests/test_export_onnx_deploy.py).

Integer bias (:func:`quantize_bias`): with integer input and weight formats the bias becomes
``round_half_even(b / (s_in * s_w))`` int32 codes; the exported PyTorch model gets the same rounded
bias (``codes * fp32(s_in * s_w)``), so the comparison model does the same arithmetic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ops through which a quantizer may be moved up to the producing layer (see the module docstring)
_COMMUTE_MODULES = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_COMMUTE_FUNCS = (F.relu, torch.relu, torch.flatten, "relu", "flatten")
FUSABLE = ("int8", "uint8")   # activation formats onnxruntime (CPU) has QLinearConv / QGemm kernels for


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with every BatchNorm that directly and solely follows a Conv2d /
    Linear folded into that layer's weight and bias (``torch.nn.utils.fusion``) and replaced by
    ``nn.Identity``. Fold BEFORE quantizing: the quantizers then see the folded weights, and the
    fake-quantized model and the deployed graph do the same arithmetic."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    from .onnx import UnsupportedOpError
    from .trace import trace
    model = copy.deepcopy(model).eval()
    graph = trace(model, UnsupportedOpError).graph
    mods = dict(model.named_modules())
    for n in graph.nodes:
        if n.op != "call_module" or not isinstance(mods.get(n.target), (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        prev = n.args[0]
        if not (hasattr(prev, "op") and prev.op == "call_module" and len(prev.users) == 1):
            continue
        layer, bn = mods[prev.target], mods[n.target]
        if bn.running_mean is None or type(layer) not in (nn.Conv2d, nn.Linear):
            continue
        fused = (fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval)(layer, bn)
        _set(model, prev.target, fused)
        _set(model, n.target, nn.Identity())
    return model


def _set(model, name, m):
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, m)


def _commutes(n, mods) -> bool:
    if n.op == "call_module":
        return isinstance(mods[n.target], _COMMUTE_MODULES)
    if n.op in ("call_function", "call_method"):
        return n.target in _COMMUTE_FUNCS
    return False


def plan(graph, mods) -> tuple[dict, set]:
    """``(post, skip)``: ``post`` maps the module name of a quantized Conv/Linear to the activation
    quantizer (a consumer's fixed-scale input quantizer) to emit right after it; ``skip`` holds the
    consumer module names whose own input Q/DQ is redundant and left out (formats not in FUSABLE)."""
    from lowbit.nn.modules import QuantLayer
    post, skip = {}, set()
    for n in graph.nodes:
        if n.op != "call_module" or not isinstance(mods[n.target], QuantLayer):
            continue
        if getattr(mods[n.target], "output_quantizer", None) is not None:
            continue
        cur = n
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            m = mods.get(nxt.target) if nxt.op == "call_module" else None
            if isinstance(m, QuantLayer) and isinstance(m, (nn.Conv2d, nn.Linear)):
                q = m.input_quantizer
                if q is not None and type(q).__name__ == "CalibratedQuantizer" and nxt.args[0] is cur:
                    post[n.target] = (q, nxt.target)
                    if cur is not n and q.spec.format.name not in FUSABLE:
                        skip.add(nxt.target)
                break
            if not _commutes(nxt, mods) or nxt.args[0] is not cur:
                break
            cur = nxt
    return post, skip


@torch.no_grad()
def quantize_bias(m: nn.Module):
    """(int32 codes, fp32 scale array, axis or None) of layer ``m``'s bias quantized with scale
    ``s_in * s_w``, or None when the bias stays fp32 (no bias, a non-integer input or weight format,
    no fixed input scale). Side effect: ``m.bias`` is set to the dequantized codes (see module doc)."""
    qi, qw = getattr(m, "input_quantizer", None), getattr(m, "weight_quantizer", None)
    if m.bias is None or qi is None or qw is None or type(qi).__name__ != "CalibratedQuantizer":
        return None
    if (qi.spec.format.name not in FUSABLE or not qw.spec.format.name.startswith(("int", "uint"))
            or qw.spec.scaling not in ("tensor", "channel")):
        return None
    fixed = qi.fixed_scale()
    if fixed is None:
        return None
    s_in = (fixed[0] if isinstance(fixed, tuple) else fixed).detach().float().reshape(())
    from lowbit.nn.packing import encode_weight
    enc = encode_weight(m.weight, qw)
    if enc.scale is None:
        return None
    s_w = (enc.scale[0] if isinstance(enc.scale, tuple) else enc.scale).detach().float().reshape(-1)
    scale = (s_in * s_w).float()
    if scale.numel() == 1:
        scale = scale.expand(m.bias.numel()).clone()
    codes = torch.round(m.bias.detach().float() / scale)
    lim = 2 ** 31 - 1
    if codes.abs().max() > lim:
        return None
    codes = codes.to(torch.int32)
    m.bias.copy_(codes.float() * scale)
    return codes.numpy(), scale.numpy(), 0


@torch.no_grad()
def input_ranks(model: nn.Module, graph, example: torch.Tensor) -> dict:
    """{module name: rank of its input} for every call_module node (one forward pass with hooks)."""
    ranks, handles = {}, []
    names = {n.target for n in graph.nodes if n.op == "call_module"}
    for name, m in model.named_modules():
        if name in names:
            handles.append(m.register_forward_pre_hook(lambda mod, a, k=name: ranks.update({k: a[0].dim()}) and None))
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    return ranks

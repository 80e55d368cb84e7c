"""Which layers a model runs and how much work each does: :func:`profile_layers`.

One forward pass of a dummy batch (eval mode, no grad, global RNG untouched) with hooks on every
weight layer: nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding and their lowbit quantized subclasses.
Per sample (the counts of the whole batch divided by its size):

    Linear     macs = out_numel * in_features            (every row of a (B, N, D) input counts)
    ConvNd     macs = out_numel * in_channels / groups * prod(kernel_size)
    Embedding  macs = 0                                   (a table lookup)

``in_numel`` / ``out_numel`` are the elements of the layer's input and output. A module called
several times in one forward (weight sharing) adds up over its calls. Weight layers that the
forward never calls are listed with zero work, so that every weight layer of the model has a row.
Functional matmuls (attention's Q @ K^T and P @ V) have no weights and are not listed.

The records are lowbit's one per-layer record (:class:`lowbit.nn.walker.LayerInfo`, from the one
model walker :func:`lowbit.nn.walker.walk`) with the work filled in. The returned list also carries
``other_params``: the parameters outside these layers (norms,
positional embeddings, ...), which :func:`lowbit.cost.model_cost` counts at fp32.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from lowbit.nn.walker import WEIGHT_TYPES, LayerInfo, is_hf_conv1d_type, walk

__all__ = ["WEIGHT_TYPES", "LayerInfo", "LayerProfile", "profile_layers"]


class LayerProfile(list):
    """A ``list[LayerInfo]`` with ``other_params``: parameters outside the listed layers."""

    other_params: int = 0


def _macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if is_hf_conv1d_type(m):  # a Linear with its weight stored as (in, out)
        return out.numel() * m.weight.shape[0]
    return 0


def _dummy(model: nn.Module, input_shape, example_input):
    if example_input is not None:
        return example_input
    if input_shape is None:
        raise ValueError("profile_layers needs input_shape (batch included, e.g. (1, 3, 32, 32)) or example_input")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape={list(shape)} is not allowed; allowed: a full shape with the batch "
                         f"dimension first and every size >= 1, e.g. (1, 3, 32, 32)")
    p = next(model.parameters(), None)
    return torch.randn(shape, device=p.device if p is not None else "cpu")


def _forward_stats(model, layers, input_shape, example_input):
    """{name: [macs, in_numel, out_numel]} of the whole batch, and the batch size."""
    stats = {li.name: [0, 0, 0] for li in layers}

    def hook(mod, args, out, name):
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if isinstance(out, torch.Tensor):
            s = stats[name]
            s[0] += _macs(mod, out)
            s[1] += x.numel() if x is not None else 0
            s[2] += out.numel()

    handles = [li.module.register_forward_hook(lambda mod, a, o, n=li.name: hook(mod, a, o, n)) for li in layers]
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            x = _dummy(model, input_shape, example_input)
            model.eval()
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return stats, (int(x.shape[0]) if x.dim() > 0 else 1)


def profile_layers(model: nn.Module, input_shape=None, *, example_input: torch.Tensor | None = None
                   ) -> LayerProfile:
    """Weight layers of ``model`` in module order, with MACs and activation sizes per sample.

    ``input_shape`` is the full input shape, batch first (e.g. ``(1, 1, 8, 8)``); or pass
    ``example_input`` (e.g. integer token ids for an embedding model). See the module docstring.
    """
    layers = [li for li in walk(model) if li.is_weight]
    stats, batch = _forward_stats(model, layers, input_shape, example_input)
    out = LayerProfile()
    counted = set()
    for li in layers:
        macs, i, o = (v // batch for v in stats[li.name])
        counted |= {id(p) for p in li.module.parameters(recurse=False)}
        out.append(dataclasses.replace(li, macs=int(macs), in_numel=int(i), out_numel=int(o)))
    quantizer_ids = {id(p) for m in model.modules() if type(m).__name__ in ("LSQQuantizer", "LearnableCodebook")
                     for p in m.parameters()}   # learned scales / codebooks: part of a layer's scale bits
    out.other_params = sum(p.numel() for p in model.parameters() if id(p) not in counted | quantizer_ids)
    return out

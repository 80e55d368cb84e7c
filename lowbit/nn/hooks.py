"""Quantization of modules that are not replaced: activations, softmax, attention and other layers.

:class:`HookQuantizers` is attached to such a module as the child ``lowbit_q`` (fixed quantizers own
no state, so state_dict keys do not change) and its bound methods are the module's hooks:

    pre-hook   quantize floating tensor inputs (``input``); reset the attention state; push the
               module's :class:`~lowbit.nn.functional.ScopedQuantMode` if it has functional slots
    post-hook  (``always_call``, so it also runs when forward raises) pop the mode; quantize the
               output (``output``, for activation and other leaf modules); attach the gradient
               quantizer (``grad``)
    child pre/post hooks on the module's direct children suspend and resume the mode, so that it
               only sees the module's own calls

Hooks are bound methods of the child module, so ``copy.deepcopy(model)`` gives an independent,
working copy.
"""
from __future__ import annotations

import torch
from torch import nn

from .functional import FUNCS, ScopedQuantMode
from .quantizers import quantize_grad, spec_for

_FUNC_CATEGORY = {f: c for c, fs in FUNCS.items() for f in fs}
HOOK_NAME = "lowbit_q"


def _is_float_tensor(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


class HookQuantizers(nn.Module):
    """The quantizers and hook methods of one hooked module (see the module docstring).

    ``categories``: functional calls to intercept ('softmax', 'matmul', 'sdpa', 'act').
    ``softmax_specs``: {input, exp, sum, output: QuantSpec or None}.
    ``attn_specs``: {'qk' | 'av': {lhs, rhs, out: QuantSpec or None}}.
    """

    def __init__(self, kind: str, input=None, output=None, grad=None, softmax_specs=None, attn_specs=None,
                 categories=(), uses_softmax: bool = False, grad_nchw: bool = False, weights=None,
                 guard: bool = False):
        super().__init__()
        self.kind = kind
        self.input, self.output = input, output
        self.weights = nn.ModuleDict(weights or {})   # nn.MultiheadAttention's projection weights
        self.owns_linears = "mha" in categories       # input quantizes its projections' inputs instead
        self.hits: dict = {}                          # slot -> times its quantizer ran (Assignment.live)
        self.grad_spec, self.grad_nchw = grad, grad_nchw
        self.softmax_specs = softmax_specs or {}
        self.attn_specs = attn_specs or {}
        self.categories = frozenset(categories)
        self.uses_softmax = uses_softmax
        # guard: a mode on the stack disables torch's fused fast paths (TransformerEncoderLayer,
        # MultiheadAttention check has_torch_function), which would bypass the quantized layers
        self.mode = ScopedQuantMode(self) if self.categories or guard else None
        self.softmax_seen, self.mm_count = False, 0

    def hit(self, slot: str):
        self.hits[slot] = self.hits.get(slot, 0) + 1

    def category(self, func) -> str | None:
        """The handler category of a torch function if this module intercepts it."""
        cat = _FUNC_CATEGORY.get(func)
        return cat if cat in self.categories else None

    def next_matmul(self) -> str:
        """'qk' or 'av' for the next attention matmul (see lowbit.nn.functional)."""
        if self.uses_softmax:
            which = "av" if self.softmax_seen else "qk"
            if which == "av":
                self.softmax_seen = False
            return which
        self.mm_count += 1
        return "qk" if self.mm_count % 2 == 1 else "av"

    # ---- hooks -----------------------------------------------------------------------------------
    def pre_hook(self, module, args):
        self.softmax_seen, self.mm_count = False, 0
        quantize_args = self.input is not None and not self.owns_linears
        if quantize_args:
            self.hit("input")
            args = tuple(self.input(a) if _is_float_tensor(a) else a for a in args)
        if self.mode is not None:
            self.mode.start()
        return args if quantize_args else None

    def post_hook(self, module, args, output):
        if self.mode is not None:
            self.mode.end()
        if output is None:  # forward raised: only the mode needed cleaning up
            return None
        if self.output is not None and self.kind in ("activation", "other") and _is_float_tensor(output):
            self.hit("output")
            output = self.output(output)
        if self.grad_spec is not None:
            first = output[0] if isinstance(output, tuple) and output else output  # MHA: (out, weights)
            if _is_float_tensor(first) and torch.is_grad_enabled() and first.requires_grad:
                self.hit("grad")  # counted when attached; it runs in the backward pass
                first = quantize_grad(first, spec_for(self.grad_spec, first, self.grad_nchw))
                output = (first,) + tuple(output[1:]) if isinstance(output, tuple) else first
        return output

    def child_pre_hook(self, child, args):
        if self.mode is not None:
            self.mode.suspend()

    def child_post_hook(self, child, args, output):
        if isinstance(child, nn.Softmax):
            self.softmax_seen = True
        if self.mode is not None:
            self.mode.unsuspend()

    def extra_repr(self) -> str:
        parts = [self.kind]
        if self.categories:
            parts.append("intercepts " + ",".join(sorted(self.categories)))
        return ", ".join(parts)


def attach(module: nn.Module, hq: HookQuantizers) -> list:
    """Register ``hq`` on ``module`` (child + hooks); returns the hook handles (children's too)."""
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise TypeError(f"cannot attach quantization hooks to a {type(module).__name__} container")
    module.add_module(HOOK_NAME, hq)
    handles = [module.register_forward_pre_hook(hq.pre_hook),
               module.register_forward_hook(hq.post_hook, always_call=True)]
    if hq.mode is not None or hq.uses_softmax:
        for child in _called_children(module, hq):
            handles.append(child.register_forward_pre_hook(hq.child_pre_hook, prepend=True))
            handles.append(child.register_forward_hook(hq.child_post_hook, always_call=True))
    return handles


def _called_children(module: nn.Module, hq: HookQuantizers):
    """The modules ``module``'s forward calls directly: its children, and the members of a child
    ModuleList / ModuleDict (which are indexed, not called; nn.TransformerEncoder's ``layers``)."""
    for child in module.children():
        if child is hq:
            continue
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _called_children(child, hq)
        else:
            yield child


def detach(module: nn.Module, handles: list):
    for h in handles:
        h.remove()
    if HOOK_NAME in module._modules:
        del module._modules[HOOK_NAME]

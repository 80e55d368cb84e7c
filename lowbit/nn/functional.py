"""Interception of functional calls (softmax, matmul, SDPA, activations) inside one module's forward.

:class:`ScopedQuantMode` is a ``torch.overrides.TorchFunctionMode`` that one module's hooks push when
its forward starts and pop when it ends (``always_call`` hook: also on exceptions). While one of the
module's direct children runs, its pre-/post-hooks pop the mode and push it back, so the mode sees
only the calls the module's OWN forward makes; children apply their own specs, and quantization
kernels (which may be ``torch.compile``d) never run under a foreign mode. Torch itself pops a mode
while its ``__torch_function__`` runs, so the handlers' own torch calls are not intercepted.

Matmuls of an attention module are told apart by order: a matmul after the module's softmax (a
functional softmax, an SDPA, or a child nn.Softmax module that has just run) is P @ V (``attn_av``);
any other is Q @ K^T (``attn_qk``). A module with no softmax at all alternates qk, av, qk, ...
SDPA is decomposed: Q_qk(q) @ Q_qk(k)^T * scale, causal/boolean/additive mask, quantized softmax,
dropout, Q_av(P) @ Q_av(v) (``enable_gqa`` repeats k/v heads).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lowbit.ops import quantize

from .walker import ACT_NAMES
from .softmax import quantized_softmax


def _funcs(names, owners):
    out = []
    for n in names:
        for owner in owners:
            f = getattr(owner, n, None)
            if f is not None and f not in out:
                out.append(f)
    return out


def _tables() -> dict:
    """Function objects per category (module attribute lookups, done once)."""
    T = torch.Tensor
    return {
        "softmax": _funcs(["softmax"], [F, torch, T, torch.special]),
        "matmul": [torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.bmm, T.bmm],
        "sdpa": [F.scaled_dot_product_attention],
        "mha": [F.multi_head_attention_forward],
        "act": _funcs(ACT_NAMES, [F, torch, T]),
    }


FUNCS = _tables()


def handled_funcs(categories) -> dict:
    """{function object: category} for the given categories."""
    return {f: c for c in categories for f in FUNCS[c]}


def _q(x, spec):
    return x if spec is None else quantize(x, spec)


def _softmax_args(func, args, kwargs):
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    dtype = kwargs.get("dtype")
    if len(args) > 3 and func is F.softmax:
        dtype = args[3]
    elif len(args) > 2 and func is not F.softmax:
        dtype = args[2]
    if dim is None:
        dim = 0 if x.dim() in (0, 1, 3) else 1  # torch's legacy implicit-dim rule
    return x, dim, dtype


def handle_softmax(owner, func, args, kwargs):
    owner.softmax_seen = True  # also tracked when only the matmuls are quantized: it orders them
    if not any(owner.softmax_specs.values()):
        return func(*args, **kwargs)
    owner.hit("softmax")
    x, dim, dtype = _softmax_args(func, args, kwargs)
    return quantized_softmax(x, dim, owner.softmax_specs, dtype)


def attn_matmul(owner, a, b, which=None):
    """a @ b with the attention specs of ``which`` ('qk', 'av'; None: from the module's state)."""
    which = which or owner.next_matmul()
    spec = owner.attn_specs.get(which) or {}
    if any(spec.values()):
        owner.hit("attn_" + which)
    y = torch.matmul(_q(a, spec.get("lhs")), _q(b, spec.get("rhs")))
    return _q(y, spec.get("out"))


def handle_matmul(owner, func, args, kwargs):
    a, b = (args[1], args[0]) if func is torch.Tensor.__rmatmul__ else (args[0], args[1])
    return attn_matmul(owner, a, b)


def handle_act(owner, func, args, kwargs):
    y = func(*args, **kwargs)
    if owner.output is None:
        return y
    owner.hit("output")
    return owner.output(y)


def _sdpa_args(args, kwargs):
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = (None, None, None, None, 0.0, False, None, False)
    vals = dict(zip(names, defaults))
    vals.update(zip(names, args))
    vals.update(kwargs)
    return vals


def handle_sdpa(owner, func, args, kwargs):
    a = _sdpa_args(args, kwargs)
    q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
    if a["enable_gqa"] and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, -3), v.repeat_interleave(rep, -3)
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = attn_matmul(owner, q, k.transpose(-2, -1), "qk") * scale
    L, S = q.shape[-2], k.shape[-2]
    if a["is_causal"]:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    if any(owner.softmax_specs.values()):
        owner.hit("softmax")
    p = quantized_softmax(s, -1, owner.softmax_specs)
    if a["dropout_p"] > 0:
        p = F.dropout(p, a["dropout_p"], training=True)
    return attn_matmul(owner, p, v, "av")


MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj_weight")


def handle_mha(owner, func, args, kwargs):
    from .mha import handle_mha as _handle  # mha imports this module
    return _handle(owner, func, args, kwargs)


HANDLERS = {"softmax": handle_softmax, "matmul": handle_matmul, "sdpa": handle_sdpa, "act": handle_act,
            "mha": handle_mha}


class ScopedQuantMode(TorchFunctionMode):
    """Routes the owner module's functional calls to the handlers; everything else passes through."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner
        self.pushed = False      # on the mode stack now
        self.suspended = 0       # children running while the mode could not be popped
        self._undo: list = []    # what each running child's suspend() did

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        cat = self.owner.category(func)
        if cat is None or self.suspended:
            return func(*args, **kwargs)
        return HANDLERS[cat](self.owner, func, args, kwargs)

    def _on_top(self) -> bool:
        n = torch._C._len_torch_function_stack()
        return n > 0 and torch._C._get_function_stack_at(n - 1) is self

    def start(self):
        """The owner's forward begins."""
        self.__enter__()
        self.pushed, self.suspended, self._undo = True, 0, []

    def end(self):
        """The owner's forward ended (normally or by an exception)."""
        if self.pushed and self._on_top():
            self.__exit__(None, None, None)
        self.pushed, self.suspended, self._undo = False, 0, []

    def suspend(self):
        """A direct child begins: pop the mode (or, if user code pushed another above it, bypass it)."""
        if self.pushed and self._on_top():
            self.__exit__(None, None, None)
            self.pushed = False
            self._undo.append("push")
        elif self.pushed:
            self.suspended += 1
            self._undo.append("flag")
        else:
            self._undo.append(None)

    def unsuspend(self):
        """The child ended: undo what :meth:`suspend` did."""
        act = self._undo.pop() if self._undo else None
        if act == "push":
            self.__enter__()
            self.pushed = True
        elif act == "flag":
            self.suspended -= 1

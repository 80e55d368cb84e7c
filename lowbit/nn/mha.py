"""nn.MultiheadAttention, quantized: ``F.multi_head_attention_forward`` decomposed.

Torch's functional runs its projections, score matmul, softmax and value matmul internally (and, in
eval mode, a fused kernel), where no TorchFunctionMode can reach them. While a MultiheadAttention
is quantized its call to the functional is intercepted (:mod:`lowbit.nn.functional`) and computed
here, step by step, as torch does:

    q, k, v = Q_in(query|key|value) @ Q_w(W_in)^T + b        packed or separate projections
    (bias_k / bias_v appended, add_zero_attn, masks canonicalised as torch does)
    S = (Q_qk(q) @ Q_qk(k)^T) * head_dim^-0.5 + mask           (``attn_qk``)
    P = quantized softmax(S)                                   (``softmax``; dropout in training)
    O = Q_av(P) @ Q_av(v)                                      (``attn_av``)
    out = Q_in(O) @ Q_w(W_out)^T + b_out

Weights are quantized as whole tensors (the packed q/k/v projection is one weight; per-channel
scales are per output row either way). ``static_k`` / ``static_v`` are refused.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

from .softmax import quantized_softmax


def _qin(owner, x):
    if owner.input is None:
        return x
    owner.hit("input")
    return owner.input(x)


def _project(owner, a, w):
    query, key, value = a["query"], a["key"], a["value"]
    qi = _qin(owner, query)
    ki = qi if key is query else _qin(owner, key)
    vi = ki if value is key else _qin(owner, value)
    if not a["use_separate_proj_weight"]:
        return F._in_projection_packed(qi, ki, vi, w["in_proj_weight"], a["in_proj_bias"])
    b = a["in_proj_bias"]
    bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
    return F._in_projection(qi, ki, vi, w["q_proj_weight"], w["k_proj_weight"], w["v_proj_weight"], bq, bk, bv)


def _masks(a, query):
    kpm = F._canonical_mask(mask=a["key_padding_mask"], mask_name="key_padding_mask",
                            other_type=F._none_or_dtype(a["attn_mask"]), other_name="attn_mask",
                            target_type=query.dtype)
    am = F._canonical_mask(mask=a["attn_mask"], mask_name="attn_mask", other_type=None, other_name="",
                           target_type=query.dtype, check_other=False)
    return kpm, am


def _append_kv(k, v, am, kpm, a, bsz):
    if a["bias_k"] is not None:
        k = torch.cat([k, a["bias_k"].repeat(1, bsz, 1)])
        v = torch.cat([v, a["bias_v"].repeat(1, bsz, 1)])
        am = None if am is None else F.pad(am, (0, 1))
        kpm = None if kpm is None else F.pad(kpm, (0, 1))
    return k, v, am, kpm


def mha_forward(owner, a: dict, weights: dict):
    """The result of ``F.multi_head_attention_forward(**a)`` with ``weights`` (already quantized)."""
    from .functional import attn_matmul
    if a["static_k"] is not None or a["static_v"] is not None:
        raise NotImplementedError("quantized nn.MultiheadAttention does not support static_k / static_v")
    query = a["query"]
    batched = query.dim() == 3
    if not batched:
        a = {**a, **{n: a[n].unsqueeze(1) for n in ("query", "key", "value")}}
        if a["key_padding_mask"] is not None:
            a["key_padding_mask"] = a["key_padding_mask"].unsqueeze(0)
        query = a["query"]
    L, bsz, E = query.shape
    H = a["num_heads"]
    hd = E // H
    kpm, am = _masks(a, query)
    causal = a["is_causal"] and am is None
    q, k, v = _project(owner, a, weights)
    k, v, am, kpm = _append_kv(k, v, am, kpm, a, bsz)
    if am is not None and am.dim() == 2:
        am = am.unsqueeze(0)
    q = q.reshape(L, bsz * H, hd).transpose(0, 1)
    k = k.reshape(k.shape[0], bsz * H, hd).transpose(0, 1)
    v = v.reshape(v.shape[0], bsz * H, hd).transpose(0, 1)
    if a["add_zero_attn"]:
        zeros = k.new_zeros(bsz * H, 1, hd)
        k, v = torch.cat([k, zeros], 1), torch.cat([v, zeros], 1)
        am = None if am is None else F.pad(am, (0, 1))
        kpm = None if kpm is None else F.pad(kpm, (0, 1))
    S = k.shape[1]
    if kpm is not None:
        kpm = kpm.view(bsz, 1, 1, S).expand(-1, H, -1, -1).reshape(bsz * H, 1, S)
        am = kpm if am is None else am + kpm
    s = attn_matmul(owner, q, k.transpose(-2, -1), "qk") * (1.0 / math.sqrt(hd))
    if causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    if am is not None:
        s = s + am
    if any(owner.softmax_specs.values()):
        owner.hit("softmax")
    p = quantized_softmax(s, -1, owner.softmax_specs)
    pd = F.dropout(p, a["dropout_p"]) if a["training"] and a["dropout_p"] > 0 else p
    o = attn_matmul(owner, pd, v, "av").transpose(0, 1).contiguous().view(L * bsz, E)
    o = F.linear(_qin(owner, o), weights["out_proj_weight"], a["out_proj_bias"]).view(L, bsz, E)
    w = None
    if a["need_weights"]:
        w = p.view(bsz, H, L, S)
        w = w.mean(dim=1) if a["average_attn_weights"] else w
        w = w if batched else w.squeeze(0)
    return (o if batched else o.squeeze(1)), w


def handle_mha(owner, func, args, kwargs):
    """The ScopedQuantMode handler of ``F.multi_head_attention_forward`` (module docstring)."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    weights = {}
    for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj_weight"):
        w = a.get(name)
        if w is not None and name in owner.weights:
            owner.hit("weight")
            w = owner.weights[name](w)
        weights[name] = w
    return mha_forward(owner, a, weights)

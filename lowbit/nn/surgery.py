"""Model surgery: :func:`quantize_model` applies a Recipe to any nn.Module; :func:`dequantize_model` undoes it.

Steps: find and classify the layers (:mod:`lowbit.nn.walker`); look up each layer's LayerSpec in the
recipe (first matching rule; ``keep_first_last`` forces the first/last weight layer to fp32);
resolve each slot the layer kind supports into a full QuantSpec (:mod:`lowbit.nn.defaults`); then

* weight layers are swapped for QLinear / QConv1d / QConv2d / QEmbedding sharing the original
  parameters (every reference to the module is swapped);
* every other quantized layer gets a :class:`~lowbit.nn.hooks.HookQuantizers` child and hooks,
  children before parents (so that a parent's suspend hooks wrap its children's own hooks).

Slots per kind (others are dropped, so the Assignment only lists what changes the numerics):
weight: weight, input (not Embedding), output, grad; activation / other: input, output, grad;
softmax: softmax, grad; attention: softmax (functional/SDPA), attn_qk, attn_av, output (functional
activations), grad, and for nn.MultiheadAttention also weight and input (its projections, see
:mod:`lowbit.nn.mha`); functional: softmax, output (functional activations), grad.

Torch's Transformer layers and MultiheadAttention get a pass-through mode during their forward,
which switches off their fused fast paths (:func:`_guard_fast_paths`). Recipe coverage (rules or
slots that take no effect) is checked before any surgery (:mod:`lowbit.nn.coverage`); each
quantized layer counts how often each slot's quantizer ran (``Assignment.live``).
"""
from __future__ import annotations

import copy

from torch import nn

from .assignment import Assignment, LayerRow
from .defaults import follows_rank, resolve
from .functional import MHA_WEIGHTS
from .hooks import HookQuantizers, attach
from .walker import LayerInfo, discover, first_last_weight_layers
from .learnable import LearnableCodebook, LSQQuantizer
from .modules import quantized_class
from .quantizers import FakeQuantizer, GradQuantizer, WeightQuantizer
from .coverage import check_coverage, spec_for_layer
from .recipe import Recipe
from .specs import LayerSpec


FAST_PATH_TYPES = (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                   nn.MultiheadAttention)


def _act_hint(li: LayerInfo) -> int:
    return 1 if "conv" in li.tags else -1


def _weight_spec(s, li: LayerInfo):
    """The resolved weight spec; HF's Conv1D stores its weight as (in, out), so its default axes swap
    (channel scales per output column, groups and blocks along the input rows)."""
    q = resolve(s, "weight")
    if q is not None and li.type == "Conv1D" and "axis" not in dict(s.fields) and q.scaling != "tensor":
        q = q.replace(axis=1 if q.scaling == "channel" else 0)
    return q


def resolve_layer(spec: LayerSpec | None, li: LayerInfo) -> dict:
    """{slot: resolved spec} for the slots ``li``'s kind supports (module docstring)."""
    if spec is None:
        return {}
    k, ops, hint = li.kind, li.ops, _act_hint(li)
    out = {"grad": resolve(spec.grad, "grad", hint)}
    if k == "weight":
        out["weight"] = _weight_spec(spec.weight, li)
        if not isinstance(li.module, nn.Embedding):
            out["input"] = resolve(spec.input, "act", hint)
        out["output"] = resolve(spec.output, "act", hint)
    elif k in ("activation", "other"):
        out["input"] = resolve(spec.input, "act", hint)
        out["output"] = resolve(spec.output, "act", hint)
        nchw = {s for s in ("input", "output", "grad") if follows_rank(getattr(spec, s))}
    elif k == "softmax" or (ops.get("softmax") or ops.get("sdpa") or ops.get("mha")):
        dim = getattr(li.module, "dim", None) if k == "softmax" else -1
        sm = spec.softmax.parts() if spec.softmax is not None else {}
        out["softmax"] = {p: resolve(sm.get(p), "act", -1 if dim is None else dim)
                          for p in ("input", "exp", "sum", "output")}
    if ops.get("mha"):  # nn.MultiheadAttention owns its projections
        out["weight"] = resolve(spec.weight, "weight")
        out["input"] = resolve(spec.input, "act", -1)
    if k == "attention":
        for slot in ("attn_qk", "attn_av"):
            mm = getattr(spec, slot)
            parts = mm.parts() if mm is not None else {}
            out[slot] = {"lhs": resolve(parts.get("lhs"), "act", -1), "rhs": resolve(parts.get("rhs"), "act", -2),
                         "out": resolve(parts.get("out"), "act", -1)}
    if k in ("attention", "functional") and ops.get("act"):
        out["output"] = resolve(spec.output, "act", -1)
    out = {s: v for s, v in out.items() if v is not None and (not isinstance(v, dict) or any(v.values()))}
    if k in ("activation", "other") and out:
        out["_nchw"] = frozenset(nchw & set(out))  # slots whose axis follows 4-D tensors to dim 1
    return out


def _weight_quantizer(spec, learn, weight):
    if spec is None:
        return None
    if learn == "lsq":
        shape = () if spec.scaling == "tensor" else tuple(weight.shape[d] if d == spec.axis % weight.dim() else 1
                                                           for d in range(weight.dim()))
        return LSQQuantizer(spec, shape)
    if learn == "codebook":
        return LearnableCodebook.from_spec(spec)
    return WeightQuantizer(spec)


def _act_quantizer(spec, learn, nchw=False):
    if spec is None:
        return None
    if learn == "codebook":
        return LearnableCodebook.from_spec(spec)
    return LSQQuantizer(spec) if learn == "lsq" else FakeQuantizer(spec, nchw)


def _quantized_layer(li: LayerInfo, r: dict, learn: dict) -> nn.Module:
    cls = quantized_class(li.module)
    return cls.from_float(
        li.module, weight=_weight_quantizer(r.get("weight"), learn.get("weight"), li.module.weight),
        input=_act_quantizer(r.get("input"), learn.get("act")), output=_act_quantizer(r.get("output"), learn.get("act")),
        grad=GradQuantizer(r["grad"]) if "grad" in r else None)


def _hook_quantizers(li: LayerInfo, r: dict, learn: dict, nchw: frozenset) -> HookQuantizers:
    cats = set()
    if "softmax" in r and li.kind != "softmax":
        cats |= {c for c in ("softmax", "sdpa") if li.ops.get(c)}
    if li.kind == "softmax" and "softmax" in r:
        cats.add("softmax")
    if li.kind == "attention" and ({"softmax", "attn_qk", "attn_av"} & set(r)):
        # all three: which one runs may depend on a run-time switch (HF's attn_implementation: eager
        # matmuls + softmax, or SDPA); the softmax orders the matmuls
        cats |= {"matmul", "sdpa", "softmax"}
    if li.kind in ("attention", "functional") and "output" in r:
        cats.add("act")
    if li.ops.get("mha"):
        cats = {"mha"}
    weights = {}
    if "weight" in r and li.ops.get("mha"):
        for n in MHA_WEIGHTS:
            w = _mha_weight(li.module, n)
            if w is not None:
                weights[n] = _weight_quantizer(r["weight"], learn.get("weight"), w)
    return HookQuantizers(
        li.kind, weights=weights, input=_act_quantizer(r.get("input"), learn.get("act"), "input" in nchw),
        output=_act_quantizer(r.get("output"), learn.get("act"), "output" in nchw), grad=r.get("grad"),
        grad_nchw="grad" in nchw,
        softmax_specs=r.get("softmax"), attn_specs={"qk": r.get("attn_qk"), "av": r.get("attn_av")},
        categories=cats, uses_softmax=bool(li.ops.get("softmax") or li.ops.get("sdpa") or li.softmax_child))


def _mha_weight(mha: nn.MultiheadAttention, name: str):
    """The tensor nn.MultiheadAttention passes as ``name`` to F.multi_head_attention_forward."""
    return mha.out_proj.weight if name == "out_proj_weight" else getattr(mha, name, None)


def _references(model: nn.Module) -> dict:
    """id(module) -> [(parent, child name)] for every place a module is registered."""
    refs: dict = {}
    for _, parent in model.named_modules(remove_duplicate=False):
        for cname, child in parent._modules.items():
            if child is not None:
                refs.setdefault(id(child), []).append((parent, cname))
    return refs


def quantize_model(model: nn.Module, recipe: Recipe, inplace: bool = True, strict: bool = False) -> Assignment:
    """Quantize ``model`` per ``recipe``; returns the resolved :class:`Assignment` (``.model`` is the
    quantized model: ``model`` itself, or a deep copy when ``inplace=False``). Raises ValueError if
    the model is already quantized (call :func:`dequantize_model` first).

    A rule that matches no layer, or a slot a rule sets that none of its layers has, gives a
    :class:`~lowbit.nn.coverage.RecipeWarning`; ``strict=True`` raises
    :class:`~lowbit.nn.coverage.RecipeCoverageError` instead, before the model is changed."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a lowbit.nn.Recipe, got {type(recipe).__name__} "
                        f"(build one with make_recipe or recipe_for_precision)")
    if model.__dict__.get("_lowbit_assignment") is not None:
        raise ValueError("model is already quantized; call lowbit.nn.dequantize_model(model) first")
    if not inplace:
        model = copy.deepcopy(model)
    layers = discover(model)
    keep = first_last_weight_layers(layers) if recipe.keep_first_last else set()
    asg = Assignment(model, [], recipe)
    plan, used, resolved = [], {}, {}
    for li in layers:
        spec = spec_for_layer(recipe, li, used)
        spec = None if li.name in keep else spec
        r = resolve_layer(spec, li)
        resolved[li.name] = r
        nchw = r.pop("_nchw", frozenset())
        learn = {"weight": spec.learn_weight, "act": spec.learn_act} if spec is not None else {}
        learn = {k: v for k, v in learn.items() if v and (k == "act" or "weight" in r)}
        if li.kind == "weight" or r:
            asg.rows.append(LayerRow(li, r, learn))
        if r:
            plan.append((li, r, learn, nchw))
    check_coverage(recipe, used, resolved, strict)
    _apply(model, plan, asg)
    model.__dict__["_lowbit_assignment"] = asg
    return asg


def _apply(model: nn.Module, plan: list, asg: Assignment):
    refs = _references(model)
    for li, r, learn, _ in plan:
        if li.kind == "weight":
            if not li.name:
                raise ValueError(f"the model itself is a {type(li.module).__name__}; wrap it in a container "
                                 f"(e.g. nn.Sequential) so that it can be replaced")
            q = _quantized_layer(li, r, learn)
            where = refs.get(id(li.module), [])
            for parent, cname in where:
                parent._modules[cname] = q
            asg._replaced.append((where, li.module, q))
            asg._counters[li.name] = q.hits
    order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
    todo = [(order[id(li.module)], li.module, li.name, (li, r, learn, nchw))
            for li, r, learn, nchw in plan if li.kind != "weight"]
    if plan:
        todo += _fast_path_guards(model, {id(t[1]) for t in todo}, order)
    # children before parents (a module's own hooks are registered before its parent's child hooks, so
    # the parent's mode is pushed back only after the child popped its own)
    for _, module, name, what in sorted(todo, key=lambda t: -t[0]):
        hq = _hook_quantizers(*what) if what is not None else HookQuantizers("other", guard=True)
        asg._hooked.append((module, attach(module, hq)))
        if what is not None:
            asg._counters[name] = hq.hits


def _fast_path_guards(model: nn.Module, hooked: set, order: dict) -> list:
    """Torch's Transformer layers and MultiheadAttention have fused eval-mode fast paths that read the
    float weights directly and skip the quantized layers; a pass-through mode active during their
    forward turns them off (they check ``has_torch_function``). Modules hooked anyway have a mode."""
    return [(order[id(m)], m, name, None) for name, m in model.named_modules()
            if isinstance(m, FAST_PATH_TYPES) and id(m) not in hooked]


def dequantize_model(model: nn.Module) -> nn.Module:
    """Undo :func:`quantize_model` on ``model`` (restores the original modules, removes all hooks)."""
    asg = model.__dict__.get("_lowbit_assignment")
    if asg is None:
        raise ValueError("model is not quantized by lowbit.nn.quantize_model")
    return asg.undo()

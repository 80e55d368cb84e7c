"""Shorthand recipes: :func:`make_recipe` and :func:`recipe_for_precision`.

Targets (each a format name, a QuantSpec, a dict of QuantSpec fields, or None = fp32):

    ``weights``      weights of Linear / Conv1d / Conv2d / Embedding layers
    ``inputs``       inputs of those weight layers (what an integer / FP8 matmul unit consumes)
    ``activations``  outputs of activation functions (modules such as nn.ReLU / nn.GELU, and
                     functional calls such as F.gelu inside a module's forward)
    ``softmax``      every stage of softmax (input, exp, sum, output): nn.Softmax, F.softmax, SDPA
    ``attention``    both operands of the two attention matmuls (Q, K^T, P, V)
    ``grads``        gradients flowing backward into weight-layer outputs

Scaling defaults are those of :mod:`lowbit.nn.defaults` (per-channel int weights, per-tensor
minifloat/codebook weights, dynamic per-tensor activations, MX/NVFP4 blocks along the reduction axis).
"""
from __future__ import annotations

from lowbit.formats.base import Format
from lowbit.formats.registry import get_format

from .recipe import Recipe, Rule
from .specs import SPEC_FIELDS, LayerSpec, SoftmaxSpec, MatmulSpec, slot

TARGETS = ("weights", "inputs", "activations", "softmax", "attention", "grads")


def _entry(value, spec_kwargs):
    """A target entry -> SlotSpec; ``spec_kwargs`` are added to entries given as names."""
    if isinstance(value, (str, Format)) and spec_kwargs:
        value = {"format": value, **spec_kwargs}
    elif isinstance(value, dict) and spec_kwargs:
        value = {**spec_kwargs, **value}
    return slot(value)


def make_recipe(weights=None, activations=None, softmax=None, inputs=None, attention=None, grads=None,
                keep_first_last: bool = False, learn_weight: str | None = None,
                learn_act: str | None = None, name: str = "", **spec_kwargs) -> Recipe:
    """A recipe quantizing the given targets (module docstring) everywhere in a model.

    ``spec_kwargs`` (e.g. ``rounding="stochastic"``, ``grad="clipped"``) apply to every target given
    as a format name or dict. ``learn_weight`` / ``learn_act``: see :class:`LayerSpec`. Emits one
    rule per layer kind, in the order weight, activation, softmax, attention, functional.
    """
    unknown = [k for k in spec_kwargs if k not in SPEC_FIELDS]
    if unknown:
        raise TypeError(f"make_recipe() got an unknown keyword {unknown[0]!r}; allowed: {', '.join(TARGETS)}, "
                        f"keep_first_last, learn_weight, learn_act, name, and the QuantSpec fields "
                        f"{', '.join(SPEC_FIELDS)}")
    w, i, a = (_entry(v, spec_kwargs) for v in (weights, inputs, activations))
    s, t, g = (_entry(v, spec_kwargs) for v in (softmax, attention, grads))
    sm = SoftmaxSpec.all(s) if s is not None else None
    mm = MatmulSpec(t, t, None) if t is not None else None
    specs = [
        ("weight", LayerSpec(weight=w, input=i, grad=g, learn_weight=learn_weight if w else None,
                             learn_act=learn_act if i else None)),
        ("activation", LayerSpec(output=a, learn_act=learn_act if a else None)),
        ("softmax", LayerSpec(softmax=sm)),
        ("attention", LayerSpec(softmax=sm, attn_qk=mm, attn_av=mm, output=a)),
        ("functional", LayerSpec(softmax=sm, output=a)),
    ]
    rules = tuple(Rule(types=(kind,), spec=spec) for kind, spec in specs if not spec.is_float)
    return Recipe(rules, keep_first_last=keep_first_last, name=name)


def recipe_for_precision(precision: str, targets=("weights", "activations"), softmax=None,
                         keep_first_last: bool = False, **kw) -> Recipe:
    """The recipe an experiment config's precision name means.

    ``precision``: ``"fp32"`` (no quantization), or any lowbit format name or shorthand (``fp8`` is
    fp8_e4m3, ``fp4`` fp4_e2m1, ``fp3`` e2m0, ``fp2`` e1m0, ``int8``, ``mxfp4``, ``nvfp4``, ``nf4``...),
    applied to each of ``targets`` (names from :data:`TARGETS`). ``softmax`` (a format, or None) sets
    the softmax precision independently of ``precision``, as the seed framework's precision-specific
    softmax. ``kw`` go to :func:`make_recipe`.
    """
    if isinstance(targets, str):
        targets = (targets,)
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"unknown target {t!r}; allowed: {', '.join(TARGETS)}")
    fmt = get_format(precision)                                  # parsed once: the objects travel on
    args = {t: (None if fmt.name == "fp32" else fmt) for t in targets}
    if softmax is not None:
        softmax = get_format(softmax)
        args["softmax"] = softmax
    label = f"{fmt.name}:{'+'.join(targets)}" + (f"+softmax={softmax.name}" if softmax else "")
    return make_recipe(**args, keep_first_last=keep_first_last, name=kw.pop("name", label), **kw)

"""Recipe coverage: every rule and every slot of a recipe either takes effect or is reported.

:func:`spec_for_layer` looks a layer up in the recipe and records which rule matched;
:func:`check_coverage` then reports each rule that matched no layer, and each slot a rule's
LayerSpec sets that no layer it matched has (a ``softmax`` on a rule that only matched Linear
layers, say): a :class:`RecipeWarning`, or with ``strict=True`` a :class:`RecipeCoverageError`
listing all of them. A rule given as a single spec (expanded per layer kind) only has to match.

nn.MultiheadAttention is both an attention layer and the owner of its projection weights: it takes
weight, input and grad from the rule matching it as a ``weight`` layer, and softmax, attention and
output from the rule matching it as an ``attention`` layer (so ``make_recipe(weights=...)`` reaches
its projections, and its hash-stable rules need no change).

Whether an assigned slot actually ran is measured at run time (:meth:`Assignment.live`).
"""
from __future__ import annotations

import warnings

from .recipe import TYPE_TAGS, Recipe
from .specs import SLOTS, LayerSpec, SlotSpec
from .walker import LayerInfo


class RecipeWarning(UserWarning):
    """A recipe rule or slot that matches nothing in the model."""


class RecipeCoverageError(ValueError):
    """``quantize_model(..., strict=True)``: a rule or slot of the recipe matches nothing."""


def _lookup(recipe: Recipe, li: LayerInfo, tags, kind: str, used: dict) -> LayerSpec | None:
    i = recipe.match(li.name, tags)
    if i is None:
        return None
    used.setdefault(i, []).append(li)
    return recipe.rules[i].spec_for(kind)


def spec_for_layer(recipe: Recipe, li: LayerInfo, used: dict) -> LayerSpec | None:
    """The LayerSpec of ``li`` (module docstring); ``used``: rule index -> matched layers."""
    if not li.ops.get("mha"):
        return _lookup(recipe, li, li.tags, li.kind, used)
    base = li.tags - {"attention"}
    w = _lookup(recipe, li, base | {"weight"}, "weight", used) or LayerSpec()
    a = _lookup(recipe, li, li.tags, "attention", used) or LayerSpec()
    spec = a.replace(weight=w.weight, input=w.input, grad=w.grad or a.grad, learn_weight=w.learn_weight,
                     learn_act=w.learn_act or a.learn_act)
    return None if spec.is_float and not spec.learn_weight else spec


def _targeted(rule) -> bool:
    """A rule naming layers (a pattern or a class name), not only kinds: the user meant some layer.
    Kind-only rules (what make_recipe emits, one per kind) may find no layer of their kind."""
    return rule.pattern is not None or any(t not in TYPE_TAGS for t in (rule.types or ()))


def _slots_set(rule) -> set:
    if rule.spec is None or isinstance(rule.spec, SlotSpec):
        return set()
    return {s for s in SLOTS if getattr(rule.spec, s) is not None}


def problems(recipe: Recipe, used: dict, resolved: dict) -> list[str]:
    """One line per targeted rule matching no layer, and per slot the recipe sets that no layer got.

    ``resolved``: layer name -> {slot: resolved spec} (what surgery applies)."""
    out = []
    for i, rule in enumerate(recipe.rules):
        if not used.get(i) and _targeted(rule):
            out.append(f"rule {i + 1} ({rule}) matches no layer")
    live = {s for r in resolved.values() for s in r}
    for slot in SLOTS:
        rules = [i for i, rule in enumerate(recipe.rules) if slot in _slots_set(rule)]
        if rules and slot not in live:
            kinds = sorted({li.kind for i in rules for li in used.get(i, [])})
            where = f"the layers they match ({', '.join(kinds)}) have none" if kinds else "they match no layer"
            out.append(f"{slot} is set by rule(s) {', '.join(str(i + 1) for i in rules)}, but no layer "
                       f"takes it: {where}")
    return out


def check_coverage(recipe: Recipe, used: dict, resolved: dict, strict: bool):
    """Warn (or raise, ``strict``) about the recipe's rules and slots that take no effect (layers
    kept in fp32 by ``keep_first_last`` count as matched but have no slots)."""
    lines = problems(recipe, used, resolved)
    if not lines:
        return
    msg = "recipe takes no effect in part: " + "; ".join(lines)
    if strict:
        raise RecipeCoverageError(msg)
    warnings.warn(msg, RecipeWarning, stacklevel=3)

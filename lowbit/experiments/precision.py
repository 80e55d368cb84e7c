"""Put a model in a run's precision through ``lowbit.nn`` and measure its footprint.

Every run goes through ``lowbit.nn.quantize_model(model, recipe_for_precision(precision,
targets=..., softmax=...))`` and ``lowbit.nn.footprint`` (fp32 is a recipe without quantizers), so
footprint columns mean the same for all precisions. Without ``lowbit.nn`` (an ImportError) an
fp32 run with a float softmax still works, with 4 bytes per parameter as its footprint; any
other run fails with the import error.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

FP32 = "fp32"
RECIPE = "recipe:"  # a precision "recipe:PATH" applies a recipe file (e.g. one written by lowbit search)


def load_recipe_precision(precision: str):
    """The Recipe of a ``recipe:PATH[@HASH]`` precision; with a hash, the file must still match it."""
    from lowbit.nn import Recipe

    ref = precision[len(RECIPE):]
    path, _, want = ref.rpartition("@") if "@" in ref else (ref, "", "")
    import yaml
    try:
        recipe = Recipe.from_yaml(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"recipe file {path!r} cannot be read ({err.strerror}); allowed: a YAML recipe "
                         f"such as lowbit search's recipe.yaml") from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError) as err:
        why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ValueError(f"recipe file {path!r} is not a valid recipe ({why}); allowed: a YAML recipe "
                         f"(plain YAML, no !!python tags) such as lowbit search's recipe.yaml") from None
    if want and recipe.hash()[:len(want)] != want:
        raise ValueError(f"recipe file {path!r} changed since the sweep was expanded (hash {want}); "
                         f"re-run the sweep command")
    return recipe


def resolve_precision(precision: str) -> str:
    """``recipe:PATH`` -> ``recipe:PATH@HASH`` (the recipe's content hash, so run ids follow edits)."""
    if not precision.startswith(RECIPE) or "@" in precision[len(RECIPE):]:
        return precision
    return f"{precision}@{load_recipe_precision(precision).hash()[:10]}"


def fp32_footprint(model: nn.Module) -> dict:
    """Footprint of an unquantized model: every parameter in 4 bytes."""
    n = sum(p.numel() for p in model.parameters())
    return {"weight_bytes": 4 * n, "fp32_bytes": 4 * n, "compression": 1.0}


def apply_precision(model: nn.Module, precision: str, quantize: tuple[str, ...],
                    softmax: str | None, input_shape: tuple[int, ...], keep_first_last: bool = False,
                    learn_weight: str | None = None, learn_act: str | None = None
                    ) -> tuple[list[dict], dict, dict]:
    """Quantize ``model`` in place (``keep_first_last``, ``learn_weight``, ``learn_act``: see
    :func:`lowbit.nn.make_recipe`; a ``recipe:`` precision ignores them).

    Returns (per-layer assignment rows, footprint columns, full footprint dict). The columns are
    the footprint's scalar entries prefixed with ``footprint_`` (so they never clash with config
    columns); the full dict keeps the per-layer rows for ``footprint.json``.
    """
    try:
        from lowbit.nn import footprint, quantize_model, recipe_for_precision
    except ImportError:
        if (precision == FP32 or not quantize) and softmax is None:
            fp = fp32_footprint(model)
            return [], {f"footprint_{k}": v for k, v in fp.items()}, fp
        raise

    prec = precision if quantize else FP32
    if prec.startswith(RECIPE):
        recipe = load_recipe_precision(prec)  # the recipe decides every layer; targets/softmax unused
    else:
        recipe = recipe_for_precision(prec, targets=tuple(quantize), softmax=softmax,
                                      keep_first_last=keep_first_last, learn_weight=learn_weight,
                                      learn_act=learn_act)
    assignment = quantize_model(model, recipe)
    fp = footprint(model, assignment, input_shape).to_dict()
    columns = {f"footprint_{k}": v for k, v in fp.items()
               if v is None or isinstance(v, (bool, int, float, str))}
    return list(assignment.to_rows()), columns, fp

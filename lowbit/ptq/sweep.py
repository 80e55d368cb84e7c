"""The W x A PTQ sweep: one flat result row per (weight format, activation format) pair.

Each row: the configuration, accuracy on the test split, drop vs the FP32 model (points), the
original size (every parameter in fp32), the compressed size MEASURED from the packed tensors
(:func:`lowbit.ptq.packed.packed_size`), their ratio, and the cost model's size for the same
assignment next to it as a cross-check (:func:`lowbit.cost.model_cost`; it computes bits from
formats, so it differs from the packed size only by the byte padding of each packed tensor), plus
BitOps and energy per sample. The first row is the FP32 reference. Sizes are bytes in the rows.
``meta`` (e.g. the model's name and provenance, as ``lowbit ptq`` passes) is copied into every row.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

import lowbit
from lowbit.cost import model_cost, plan_from_assignment, profile_layers
from lowbit.data import normalize
from lowbit.ops.backend import backend as use_backend
from lowbit.train import evaluate

from .calibrate import PTQConfig, quantize_ptq
from .packed import packed_size

MB = 2 ** 20


def calibration_inputs(splits, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` training samples (a seeded random subset), normalised as in training."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.train), generator=g)[:n]
    return normalize(splits.train.x[idx], splits.mean, splits.std)


def accuracy(model, splits, split: str = "test") -> float:
    s = getattr(splits, split)
    return evaluate(model, s.x, s.y, mean=splits.mean, std=splits.std)[1]


def _cost(model, input_shape, assignment=None) -> dict:
    layers = profile_layers(model, input_shape)
    rep = model_cost(layers, plan_from_assignment(assignment) if assignment is not None else {})
    t = rep.total
    return {"cost_bytes": t["weight_bytes"], "bitops": t["bitops"], "energy_pj": t["energy_pj"],
            "energy_is_model": t["energy_is_model"]}


def ptq_sweep(model, splits, weights, acts, config: PTQConfig | None = None, *, seed: int = 0,
              meta: dict | None = None, on_row=None) -> list[dict]:
    """Rows for FP32 and every (w, a) in ``weights`` x ``acts`` (format names; None/"none" = fp32),
    every model run with ``config.backend`` (None: the current ``lowbit.backend``)."""
    cfg = config or PTQConfig()
    with use_backend(cfg.backend):
        return _sweep_rows(model, splits, weights, acts, cfg, seed, meta, on_row)


def _sweep_rows(model, splits, weights, acts, cfg, seed, meta, on_row) -> list[dict]:
    shape = (1, splits.in_chans, splits.img_size, splits.img_size)
    calib = calibration_inputs(splits, cfg.calib_samples, seed)
    base = {**(meta or {}), "dataset": splits.name, "calib": cfg.calib, "weight_calib": cfg.weight_calib,
            "percentile": cfg.percentile if "percentile" in (cfg.calib, cfg.weight_calib) else None,
            "calib_samples": len(calib), "per_channel": cfg.per_channel, "bias_correction": cfg.bias_correction,
            "keep_first_last": cfg.keep_first_last, "fold_bn": cfg.fold_bn, "direct_cast": cfg.direct_cast,
            "seed": seed, "lowbit_version": lowbit.__version__, "torch_version": torch.__version__}
    fp32_acc = accuracy(model, splits)
    orig = 4 * sum(p.numel() for p in model.parameters())
    rows = [dict(base, weights="fp32", acts="fp32", acc=fp32_acc, fp32_acc=fp32_acc, drop=0.0, orig_bytes=orig,
                 packed_bytes=orig, ratio=1.0, **_cost(model, shape))]
    if on_row:
        on_row(rows[-1])
    for w in weights:
        for a in acts:
            w_, a_ = _none(w), _none(a)
            res = quantize_ptq(model, w_, a_, calib, cfg)
            acc = accuracy(res.model, splits)
            size = packed_size(res.model)
            rows.append(dict(base, weights=w_ or "fp32", acts=a_ or "fp32", acc=acc, fp32_acc=fp32_acc,
                             drop=fp32_acc - acc, orig_bytes=orig, packed_bytes=size["bytes"],
                             ratio=orig / size["bytes"], **_cost(res.model, shape, res.assignment)))
            if on_row:
                on_row(rows[-1])
    return rows


def recipe_rows(model, splits, recipe, config: PTQConfig | None = None, *, seed: int = 0, meta: dict | None = None,
                label: str | None = None) -> list[dict]:
    """Rows for FP32 and ``model`` quantized by the mixed-precision ``recipe`` (a :class:`lowbit.nn.Recipe`,
    e.g. ``Recipe.from_yaml`` of ``lowbit search``'s recipe.yaml), calibrated as in :func:`ptq_sweep`.
    The recipe row has ``weights`` = ``label`` (default the recipe's name, else "recipe") and
    ``acts`` = "recipe" (per-layer formats), plus ``recipe_hash``."""
    cfg = config or PTQConfig()
    with use_backend(cfg.backend):
        return _recipe_rows(model, splits, recipe, cfg, seed, meta, label)


def _recipe_rows(model, splits, recipe, cfg, seed, meta, label) -> list[dict]:
    rows = ptq_sweep(model, splits, [], [], cfg, seed=seed, meta=meta)
    base = {k: v for k, v in rows[0].items()
            if k not in ("weights", "acts", "acc", "drop", "packed_bytes", "ratio", "cost_bytes", "bitops",
                         "energy_pj", "energy_is_model")}
    shape = (1, splits.in_chans, splits.img_size, splits.img_size)
    calib = calibration_inputs(splits, cfg.calib_samples, seed)
    res = quantize_ptq(model, None, None, calib, cfg, recipe=recipe)
    acc = accuracy(res.model, splits)
    size = packed_size(res.model)
    rows.append(dict(base, weights=label or recipe.name or "recipe", acts="recipe", recipe_hash=recipe.hash(),
                     acc=acc, drop=base["fp32_acc"] - acc, packed_bytes=size["bytes"],
                     ratio=base["orig_bytes"] / size["bytes"], **_cost(res.model, shape, res.assignment)))
    return rows


def select_row(rows: list[dict], max_drop: float = 0.01) -> dict | None:
    """The quantized row to show in detail: the smallest packed size with drop <= ``max_drop``
    (fraction), else the most accurate; None when there is no quantized row."""
    q = [r for r in rows[1:]]
    if not q:
        return None
    ok = [r for r in q if r["drop"] <= max_drop]
    return min(ok, key=lambda r: r["packed_bytes"]) if ok else max(q, key=lambda r: r["acc"])


def layer_costs(model, input_shape, recipe, energy=None) -> list[dict]:
    """Per-layer lowbit.cost rows of ``model`` under ``recipe`` (on a copy), with ``layer`` and ``format``
    columns as :func:`lowbit.report.plots_search.plot_energy_breakdown` expects."""
    import copy

    from lowbit.cost import EnergyModel
    from lowbit.nn import quantize_model
    m = copy.deepcopy(model).eval()
    asg = quantize_model(m, recipe)
    layers = profile_layers(m, input_shape)
    rep = model_cost(layers, plan_from_assignment(asg), energy or EnergyModel.horowitz())
    names = {li.name for li in layers}
    return [{"layer": r["name"], "format": f"{r.get('weight') or 'fp32'}/{r.get('act') or 'fp32'}", **r}
            for r in rep.rows if r.get("name") in names]


def _none(f):
    return None if f is None or str(f).lower() in ("none", "fp32") else f


COLUMNS = (("W", "weights"), ("A", "acts"), ("acc %", "acc"), ("drop", "drop"), ("orig {u}", "orig_bytes"),
           ("packed {u}", "packed_bytes"), ("ratio", "ratio"), ("cost-model {u}", "cost_bytes"))


def _cell(key, v, unit=MB) -> str:
    if key in ("acc", "drop"):
        return f"{100 * v:.2f}"
    if key.endswith("_bytes"):
        return f"{v / unit:.4f}" if unit == MB else f"{v / unit:.2f}"
    if key == "ratio":
        return f"{v:.2f}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    """The MobileNet tool's table: W, A, accuracy, drop, original / compressed MB, ratio (+ cost model).

    Sizes in MiB (2^20 bytes, the seed's "MB"), or KiB when the original model is below 1 MiB."""
    unit, name = (MB, "MiB") if not rows or rows[0]["orig_bytes"] >= MB else (1024, "KiB")
    head = [h.format(u=name) for h, _ in COLUMNS]
    body = [[_cell(k, r[k], unit) for _, k in COLUMNS] for r in rows]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]
    line = lambda cells: " | ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                    for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), "-+-".join("-" * w for w in widths)] + [line(b) for b in body])


def write_csv(rows: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in keys})
    os.replace(tmp, path)
    return path

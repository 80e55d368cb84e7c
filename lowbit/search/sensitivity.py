"""Per-layer sensitivity to quantization: one row per (weight layer, candidate choice).

Only that layer is quantized (its weight, and its input when the choice has an activation format);
every other layer stays fp32. Methods (``METHODS``) and their columns:

``l2``       mean over samples of ||z - z_q||_2 with, by ``on``: ``"logits"`` (default) z the float
             model's logits and z_q the logits with the layer quantized; ``"output"`` z the layer's own
             output y_l and z_q its output with its weight (and input) quantized, every earlier layer
             float: the energy-aware seed's S_l = ||y_l^full - y_l^quant||_2 (per sample, flattened,
             averaged). Output norms are not comparable across layers of different scale; logits are.
``sqnr``     10 log10(sum z^2 / sum (z - z_q)^2) in dB over the whole eval set (inf when equal), z as l2.
``acc``      ``acc``, ``acc_drop`` (float accuracy minus quantized, a fraction) and ``loss_delta``
             (mean cross-entropy increase) on the eval set.
``hessian``  HAWQ-style  trace(H_l) / n_l * ||Q(W_l) - W_l||^2, with trace(H_l) of the loss Hessian
             block of W_l estimated by Hutchinson's method: E[v^T H v] over ``hessian_probes``
             Rademacher vectors v, H v by double backward (``torch.autograd.grad`` of the gradient).
             One probe spans all layers at once; the cross-layer terms vanish in expectation.
``fisher``   sum(F_l * (Q(W_l) - W_l)^2), F_l the empirical Fisher diagonal: the mean over
             mini-batches of ``fisher_batch`` samples of the squared gradient of the mean loss
             (equivalently sum_b (g_b * dW)^2 / B). Cheap: one backward per mini-batch.

Hessian and Fisher scores see the weight perturbation only (an activation format in the choice does
not change them). The loss and its curvature use the first ``calib_samples`` samples of the data.

:func:`score` maps a method to one number per row where larger = more sensitive: l2, noise power
10^(-sqnr/10), loss_delta, hessian, fisher; these drive the percentile and ILP strategies and
:func:`rank_agreement` (Spearman rho and Kendall tau between methods, scipy.stats).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.nn import Recipe, Rule, quantize_model
from lowbit.nn.defaults import resolve
from lowbit.nn.specs import slot
from lowbit.ops import quantize
from lowbit.ops.backend import backend as use_backend

METHODS = ("l2", "sqnr", "acc", "hessian", "fisher")
SENSITIVITY_ON = ("logits", "output")


def check_on(on: str) -> str:
    if on not in SENSITIVITY_ON:
        raise ValueError(f"sensitivity on={on!r} is not allowed; allowed: {', '.join(SENSITIVITY_ON)} "
                         f"(what l2 and sqnr compare: the model's logits or the layer's own output)")
    return on


def check_methods(methods) -> tuple:
    items = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    for m in items:
        if m not in METHODS:
            raise ValueError(f"sensitivity method {m!r} is not allowed; allowed: {', '.join(METHODS)}")
    if not items:
        raise ValueError(f"methods='' is not allowed; allowed: a comma-separated subset of {', '.join(METHODS)}")
    return tuple(dict.fromkeys(items))


def quantized_weight(weight: torch.Tensor, choice) -> torch.Tensor:
    """Q(W) exactly as quantize_model quantizes a weight in this choice's format (default scaling)."""
    return quantize(weight.detach(), resolve(slot(choice.weight), "weight"))


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def _output_metrics(ref, q, y) -> dict:
    diff = ref - q
    noise = float((diff ** 2).sum())
    return {"l2": float(diff.norm(dim=1).mean()),
            "sqnr_db": float("inf") if noise == 0 else 10 * np.log10(float((ref ** 2).sum()) / noise),
            "loss": float(F.cross_entropy(q, y)), "acc": float((q.argmax(1) == y).float().mean())}


def hutchinson_traces(model: nn.Module, names, x, y, probes: int = 4, seed: int = 0) -> dict:
    """{layer: Hutchinson estimate of trace(d^2 loss / dW^2)} with ``probes`` Rademacher vectors."""
    mods = dict(model.named_modules())
    params = [mods[n].weight for n in names]
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        traces = [0.0] * len(params)
        for _ in range(probes):
            vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            traces = [t + float((v * h).sum()) for t, v, h in zip(traces, vs, hv)]
    model.train(was)
    return {n: t / probes for n, t in zip(names, traces)}


def fisher_diagonals(model: nn.Module, names, x, y, batch: int = 16) -> dict:
    """{layer: empirical Fisher diagonal of W} from mini-batch gradients (module docstring)."""
    mods = dict(model.named_modules())
    params = [mods[n].weight for n in names]
    acc = [torch.zeros_like(p) for p in params]
    was = model.training
    model.eval()
    nb = 0
    with torch.enable_grad():
        for i in range(0, len(x), batch):
            loss = F.cross_entropy(model(x[i:i + batch]).float(), y[i:i + batch])
            for a, g in zip(acc, torch.autograd.grad(loss, params)):
                a += g.detach() ** 2
            nb += 1
    model.train(was)
    return {n: a / max(nb, 1) for n, a in zip(names, acc)}


def layer_sensitivity(model: nn.Module, space, data, methods=METHODS, *, batch_size: int = 512,
                      hessian_probes: int = 4, calib_samples: int = 256, fisher_batch: int = 16,
                      seed: int = 0, backend: str | None = None, on: str = "logits") -> pd.DataFrame:
    """The sensitivity table of ``space``'s free layers x choices on ``data`` (an EvalData).
    ``backend``: the fake-quant kernels (None: the current ``lowbit.backend``); ``on``: what l2 and
    sqnr compare, ``"logits"`` or ``"output"`` (the layer's own output; module docstring). The table's
    ``attrs["sensitivity_on"]`` and its ``sensitivity_on`` column say which."""
    methods = check_methods(methods)
    check_on(on)
    with use_backend(backend):
        df = _sensitivity_table(model, space, data, methods, batch_size, hessian_probes, calib_samples,
                                fisher_batch, seed, on)
    if {"l2", "sqnr"} & set(methods):
        df.insert(len(df.columns), "sensitivity_on", on)
    df.attrs["sensitivity_on"] = on
    return df


@torch.no_grad()
def _layer_output_metrics(model, qmodel, name: str, x, batch_size: int) -> dict:
    """l2 and sqnr_db between the output of layer ``name`` in ``model`` (float) and in ``qmodel``
    (that layer quantized), streamed over batches (no whole-set activations kept)."""
    got = {}

    def grab(key):
        return lambda mod, inp, out: got.__setitem__(key, out.detach().float().flatten(1))

    hooks = [dict(model.named_modules())[name].register_forward_hook(grab("ref")),
             dict(qmodel.named_modules())[name].register_forward_hook(grab("q"))]
    norms, noise, signal = [], 0.0, 0.0
    was = model.training
    model.eval()
    qmodel.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
            qmodel(x[i:i + batch_size])
            diff = got["ref"] - got["q"]
            norms.append(diff.norm(dim=1))
            noise += float((diff ** 2).sum())
            signal += float((got["ref"] ** 2).sum())
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {"l2": float(torch.cat(norms).mean()),
            "sqnr_db": float("inf") if noise == 0 else 10 * np.log10(signal / noise)}


def _sensitivity_table(model, space, data, methods, batch_size, hessian_probes, calib_samples, fisher_batch,
                       seed, on="logits") -> pd.DataFrame:
    names = space.free
    mods = dict(model.named_modules())
    x, y = data.normalized(), data.y
    xc, yc = x[:calib_samples], y[:calib_samples]
    ref = _logits(model, x, batch_size) if {"l2", "sqnr", "acc"} & set(methods) else None
    base = _output_metrics(ref, ref, y) if ref is not None else None
    traces = hutchinson_traces(model, names, xc, yc, hessian_probes, seed) if "hessian" in methods else {}
    fisher = fisher_diagonals(model, names, xc, yc, fisher_batch) if "fisher" in methods else {}
    info = {li.name: li for li in space.layers}
    rows = []
    for n in names:
        w = mods[n].weight
        for c in space.choices:
            dw = quantized_weight(w, c) - w.detach()
            r = {"layer": n, "type": info[n].type, "macs": info[n].macs, "params": info[n].params,
                 "format": c.label, "weight_bits": c.weight_bits, "perturbation": float((dw ** 2).sum()),
                 "rel_perturbation": float((dw ** 2).sum() / max(float((w.detach() ** 2).sum()), 1e-30))}
            recipe = Recipe((Rule(pattern=_escape(n), spec=c.layer_spec()),))
            if ref is not None:
                asg = quantize_model(model, recipe)
                try:
                    m = _output_metrics(ref, _logits(model, x, batch_size), y)
                finally:
                    asg.undo()
                if on == "output" and {"l2", "sqnr"} & set(methods):
                    qmodel = quantize_model(model, recipe, inplace=False).model
                    m.update(_layer_output_metrics(model, qmodel, n, x, batch_size))
                if "l2" in methods:
                    r["l2"] = m["l2"]
                if "sqnr" in methods:
                    r["sqnr_db"] = m["sqnr_db"]
                if "acc" in methods:
                    r.update(acc=m["acc"], acc_drop=base["acc"] - m["acc"], loss_delta=m["loss"] - base["loss"])
            if "hessian" in methods:
                r["hessian_trace"] = traces[n]
                r["hessian"] = traces[n] / w.numel() * r["perturbation"]
            if "fisher" in methods:
                r["fisher"] = float((fisher[n] * dw ** 2).sum())
            rows.append(r)
    df = pd.DataFrame(rows)
    df.attrs["methods"] = list(methods)
    return df


def _escape(name: str) -> str:
    import glob
    return glob.escape(name)


def methods_in(df: pd.DataFrame) -> list:
    cols = {"l2": "l2", "sqnr": "sqnr_db", "acc": "loss_delta", "hessian": "hessian", "fisher": "fisher"}
    return [m for m in METHODS if cols[m] in df]


def score(df: pd.DataFrame, method: str) -> pd.Series:
    """One sensitivity number per row, larger = more sensitive (module docstring)."""
    if method == "l2":
        return df["l2"]
    if method == "sqnr":
        return 10.0 ** (-df["sqnr_db"].astype(float) / 10)
    if method == "acc":
        return df["loss_delta"]
    if method in ("hessian", "fisher"):
        return df[method]
    raise ValueError(f"sensitivity method {method!r} is not allowed; allowed: {', '.join(METHODS)}")


def score_matrix(df: pd.DataFrame, method: str, space) -> np.ndarray:
    """(free layers, choices) array of :func:`score` in the space's order."""
    s = df.assign(_s=score(df, method)).pivot(index="layer", columns="format", values="_s")
    return s.loc[list(space.free), list(space.labels)].to_numpy(float)


def layer_scores(df: pd.DataFrame, method: str, fmt: str | None = None) -> pd.Series:
    """Per-layer score at choice ``fmt`` (default: the cheapest, i.e. lowest weight bits)."""
    fmt = fmt or df.sort_values("weight_bits")["format"].iloc[0]
    sub = df[df["format"] == fmt]
    return pd.Series(score(sub, method).to_numpy(float), index=sub["layer"].to_numpy(), name=method)


def rank_agreement(df: pd.DataFrame, fmt: str | None = None) -> pd.DataFrame:
    """Spearman rho and Kendall tau (with p-values) between every pair of methods, over layers."""
    from scipy import stats
    ms = methods_in(df)
    scores = {m: layer_scores(df, m, fmt) for m in ms}
    rows = []
    for i, a in enumerate(ms):
        for b in ms[i + 1:]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho, p_rho = stats.spearmanr(scores[a], scores[b])
                tau, p_tau = stats.kendalltau(scores[a], scores[b])
            rows.append({"method_a": a, "method_b": b, "spearman": float(rho), "spearman_p": float(p_rho),
                         "kendall": float(tau), "kendall_p": float(p_tau), "n_layers": len(scores[a])})
    return pd.DataFrame(rows, columns=["method_a", "method_b", "spearman", "spearman_p", "kendall",
                                       "kendall_p", "n_layers"])


DISPLAY = {"l2": ["l2"], "sqnr": ["sqnr_db"], "acc": ["acc_drop", "loss_delta"], "hessian": ["hessian"],
           "fisher": ["fisher"]}


def ranking(df: pd.DataFrame, fmt: str | None = None) -> pd.DataFrame:
    """Per layer at choice ``fmt`` (default: the cheapest): each method's readable value (l2, sqnr_db,
    acc_drop and loss_delta, hessian, fisher) and its rank (1 = most sensitive, by :func:`score`)."""
    ms = methods_in(df)
    fmt = fmt or df.sort_values("weight_bits")["format"].iloc[0]
    sub = df[df["format"] == fmt].set_index("layer")
    out = pd.DataFrame(index=sub.index)
    for m in ms:
        for c in DISPLAY[m]:
            out[c] = sub[c]
    for m in ms:
        out[f"rank_{m}"] = layer_scores(df, m, fmt).rank(ascending=False, method="min").astype(int)
    return out.reset_index()


def write_sensitivity(df: pd.DataFrame, out_dir, fmt: str | None = None) -> dict:
    """sensitivity.csv, ranking.csv and rank_agreement.csv into ``out_dir``; {name: path}. (The figures:
    :func:`lowbit.report.plots_search.render_search_report` draws them from these files.)"""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sensitivity": out / "sensitivity.csv", "ranking": out / "ranking.csv",
             "rank_agreement": out / "rank_agreement.csv"}
    df.to_csv(paths["sensitivity"], index=False)
    ranking(df, fmt).to_csv(paths["ranking"], index=False)
    rank_agreement(df, fmt).to_csv(paths["rank_agreement"], index=False)
    return paths

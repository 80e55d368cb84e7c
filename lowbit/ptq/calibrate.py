"""Post-training quantization of a trained model: :func:`quantize_ptq`.

Steps (on a deep copy; the float model is never changed):

1. optionally fold BatchNorm into the preceding convolution / linear layer (:func:`fold_bn`);
2. ``lowbit.nn.quantize_model`` with a recipe quantizing the weights and the inputs of every weight
   layer (``keep_first_last`` keeps the first and last weight layer in fp32). Integer and minifloat
   weights get one scale per tensor, or per output channel with ``per_channel``; activations one
   per tensor; block formats (MX, NVFP4) their block scales; fp16/bf16 are direct casts.
   ``direct_cast`` casts minifloats (FP8/FP6/FP4) with no scale at all;
3. weights: a FIXED scale from the weight observer (:mod:`lowbit.ptq.observers`);
4. activations: observers at every quantized layer input record max |x| and min/max over the
   calibration samples (pass 1), then a histogram of |x| (pass 2); the method turns it into a FIXED
   per-tensor scale. Observation runs with the weights already quantized and activations in float.
   Block formats compute their block scales from the data by design (OCP MX): no calibration;
5. optionally bias correction (Nagel et al., "Data-free quantization through weight equalization
   and bias correction", ICCV 2019, empirical variant): layer by layer in order, the mean output
   shift E[y_float - y_quant] per output channel over the calibration data is added to the bias
   (a zero bias is created where a layer has none); later layers see the corrected earlier ones.

Every quantizer in the result is a :class:`CalibratedQuantizer` (spec + fixed scale, kept in the
buffers ``scale`` / ``zero_point`` so that the quantized model's state dict carries them).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lowbit.formats.registry import get_format
from lowbit.nn import Recipe, make_recipe, quantize_model
from lowbit.nn.modules import QuantLayer
from lowbit.ops import quantize
from lowbit.ops.backend import backend as use_backend, check_backend

from .observers import METHODS, hist_threshold, threshold_scale, weight_scale


@dataclass(frozen=True)
class PTQConfig:
    """``calib``: activation observer; ``weight_calib``: weight observer (both from METHODS)."""

    calib: str = "minmax"
    weight_calib: str = "minmax"
    percentile: float = 99.99
    calib_samples: int = 256
    per_channel: bool = False
    bias_correction: bool = False
    keep_first_last: bool = False
    fold_bn: bool = False
    direct_cast: bool = False
    bins: int = 2048
    batch_size: int = 256
    backend: str | None = None        # fake-quant kernels; None: the current lowbit.backend

    def __post_init__(self):
        for k in ("calib", "weight_calib"):
            if getattr(self, k) not in METHODS:
                raise ValueError(f"{k}={getattr(self, k)!r} is not allowed; allowed: {', '.join(METHODS)}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile={self.percentile!r} is not allowed; allowed: a number in (0, 100]")
        for k in ("calib_samples", "bins", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k}={v!r} is not allowed; allowed: an integer >= 1")
        if self.backend is not None:
            check_backend(self.backend)


class CalibratedQuantizer(nn.Module):
    """x -> lowbit.quantize(x, spec, scale=FIXED scale); ``scale=None``: the spec's own (block /
    direct cast) scaling. ``cache=True`` (weights) reuses the result while the input is unchanged.
    ``backend``: None (default) runs the current ``lowbit.backend``; a name pins this quantizer."""

    def __init__(self, spec, scale=None, backend: str | None = None, cache: bool = False):
        super().__init__()
        self.spec, self.backend, self.cache = spec, backend, cache
        s, zp = scale if isinstance(scale, tuple) else (scale, None)
        self.register_buffer("scale", None if s is None else s.detach().clone().float())
        self.register_buffer("zero_point", None if zp is None else zp.detach().clone().float())
        self._memo = None

    def fixed_scale(self):
        if self.scale is None:
            return None
        return self.scale if self.zero_point is None else (self.scale, self.zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cache or (torch.is_grad_enabled() and x.requires_grad):
            return quantize(x, self.spec, scale=self.fixed_scale(), backend=self.backend)
        key = (x.data_ptr(), x._version, tuple(x.shape), x.device)
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, quantize(x, self.spec, scale=self.fixed_scale(), backend=self.backend))
        return self._memo[1]

    def extra_repr(self) -> str:
        s = "dynamic" if self.scale is None else f"fixed scale {tuple(self.scale.shape) or 'per tensor'}"
        return f"{self.spec.format.name}/{self.spec.scaling}, {s}"


class _Observer(nn.Module):
    """Pass-through that records max |x|, min, max (phase 'range') or a histogram of |x| ('hist')."""

    def __init__(self, bins: int):
        super().__init__()
        self.bins, self.phase = bins, "range"
        self.amax, self.lo, self.hi = 0.0, math.inf, -math.inf
        self.hist = torch.zeros(bins, dtype=torch.float64)

    def forward(self, x):
        xf = x.detach().float()
        xf = xf[torch.isfinite(xf)]
        if xf.numel() == 0:
            return x
        if self.phase == "range":
            self.lo, self.hi = min(self.lo, float(xf.min())), max(self.hi, float(xf.max()))
            self.amax = max(abs(self.lo), abs(self.hi))
        elif self.amax > 0:
            self.hist += torch.histc(xf.abs(), self.bins, 0.0, self.amax).double()
        return x


@dataclass
class PTQResult:
    model: nn.Module
    assignment: object
    weights: str | None
    acts: str | None
    config: PTQConfig
    act_thresholds: dict = field(default_factory=dict)   # layer -> (amax, chosen threshold)
    bias_shift: dict = field(default_factory=dict)       # layer -> mean |correction|


def fold_bn(model: nn.Module) -> nn.Module:
    """Fold each BatchNorm that directly follows a Conv/Linear in an nn.Sequential into it (in place,
    eval-mode statistics); the BatchNorm becomes nn.Identity. Returns ``model``."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            lin, bn = seq._modules[a], seq._modules[b]
            if isinstance(lin, (nn.Conv1d, nn.Conv2d, nn.Linear)) and \
                    isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and bn.track_running_stats:
                _fold(lin, bn)
                seq._modules[b] = nn.Identity()
    return model


@torch.no_grad()
def _fold(lin, bn):
    g = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    k = g / torch.sqrt(bn.running_var + bn.eps)
    lin.weight.mul_(k.reshape(-1, *([1] * (lin.weight.dim() - 1))))
    b = lin.bias if lin.bias is not None else torch.zeros_like(bn.running_mean)
    lin.bias = nn.Parameter((b - bn.running_mean) * k + beta)


def ptq_recipe(weights, acts, weight_scaling: str | None = None, direct_cast: bool = False,
               keep_first_last: bool = False) -> Recipe:
    """The recipe quantizing every weight layer's weight to ``weights`` and input to ``acts`` (format
    names; None / "none" / "fp32" = keep fp32). ``weight_scaling``: None (lowbit.nn's defaults),
    "tensor" or "channel" for integer, minifloat and codebook weights (block formats keep their
    blocks, fp16/bf16 stay direct casts). ``direct_cast``: minifloats get no scale at all."""
    w, a = _format(weights), _format(acts)
    if w is not None and weight_scaling is not None:
        if w.role_scaling("weight") not in ("none", "block"):  # scaled by tensor/channel by default
            w = {"format": w, "scaling": weight_scaling}
    if direct_cast:
        w, a = _direct(w), _direct(a)
    return make_recipe(weights=w, inputs=a, keep_first_last=keep_first_last)


def _format(fmt):
    """The format object (parsed once here), or None to keep fp32."""
    if fmt is None or (isinstance(fmt, str) and fmt.lower() in ("none", "fp32")):
        return None
    return get_format(fmt)


def _direct(entry):
    if entry is None:
        return None
    f = get_format(entry["format"] if isinstance(entry, dict) else entry)
    return {"format": f, "scaling": "none"} if f.direct_cast_ok else entry


def _qlayers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]


def _batches(x, bs):
    for i in range(0, len(x), bs):
        yield x[i:i + bs]


@torch.no_grad()
def _run(model, x, bs):
    for xb in _batches(x, bs):
        model(xb)


def quantize_ptq(model: nn.Module, weights, acts, calib_x: torch.Tensor, config: PTQConfig | None = None,
                 recipe: Recipe | None = None) -> PTQResult:
    """Quantize a copy of ``model`` (see the module docstring). ``weights`` / ``acts``: format names or
    None (fp32); ``calib_x``: model inputs, preprocessed as in training (the first
    ``config.calib_samples`` are used). ``recipe``: a mixed-precision recipe (e.g. the recipe.yaml of
    ``lowbit search``) used as is instead of the uniform ``weights`` x ``acts`` one; its per-layer
    formats and scalings are kept, tensor / channel scales become FIXED calibrated scales
    (``per_channel``, ``direct_cast`` and ``keep_first_last`` of the config do not apply)."""
    cfg = config or PTQConfig()
    with use_backend(cfg.backend):
        return _quantize_ptq(model, weights, acts, calib_x, cfg, recipe)


def _quantize_ptq(model, weights, acts, calib_x, cfg, recipe) -> PTQResult:
    if recipe is None:
        recipe = ptq_recipe(weights, acts, "channel" if cfg.per_channel else "tensor", cfg.direct_cast,
                            cfg.keep_first_last)
    fmodel = copy.deepcopy(model).eval()
    if cfg.fold_bn:
        fold_bn(fmodel)
    qmodel = copy.deepcopy(fmodel)
    asg = quantize_model(qmodel, recipe)
    qmodel.eval()
    x = calib_x[:cfg.calib_samples]
    res = PTQResult(qmodel, asg, weights, acts, cfg)
    layers = _qlayers(qmodel)
    for name, m in layers:
        if m.weight_quantizer is not None:
            spec = m.weight_quantizer.spec
            try:
                s = weight_scale(m.weight, spec, cfg.weight_calib, cfg.percentile, cfg.bins) \
                    if spec.scaling in ("tensor", "channel") else None
            except ValueError as exc:
                raise ValueError(f"layer {name!r}: {exc}") from None
            m.weight_quantizer = CalibratedQuantizer(spec, s, cfg.backend, cache=True)
    _calibrate_inputs(layers, x, qmodel, cfg, res)
    if cfg.bias_correction:
        _bias_correct(qmodel, fmodel, x, cfg, res)
    return res


def _calibrate_inputs(layers, x, qmodel, cfg, res):
    observed = {}
    for name, m in layers:
        q = m.input_quantizer
        if q is None:
            continue
        if q.spec.scaling == "tensor":
            observed[name] = (m, q.spec, _Observer(cfg.bins))
            m.input_quantizer = observed[name][2]
        else:
            m.input_quantizer = CalibratedQuantizer(q.spec, None, cfg.backend)
    if not observed:
        return
    _run(qmodel, x, cfg.batch_size)
    if cfg.calib != "minmax":
        for _, _, ob in observed.values():
            ob.phase = "hist"
        _run(qmodel, x, cfg.batch_size)
    for name, (m, spec, ob) in observed.items():
        amax = ob.amax
        t = hist_threshold(ob.hist, amax, spec, cfg.calib, cfg.percentile) if amax > 0 else 0.0
        lo, hi = (ob.lo, ob.hi) if amax > 0 else (0.0, 0.0)
        s = threshold_scale(spec, torch.tensor(amax), torch.tensor(t), torch.tensor(lo), torch.tensor(hi))
        m.input_quantizer = CalibratedQuantizer(spec, s, cfg.backend)
        res.act_thresholds[name] = (amax, t)


@torch.no_grad()
def _output_means(model, modules, x, bs):
    sums, counts = [None] * len(modules), [0] * len(modules)

    def hook(i, mod, out):
        dim = 1 if isinstance(mod, (nn.Conv1d, nn.Conv2d)) else -1
        o = out.detach().float().movedim(dim, -1).reshape(-1, out.shape[dim])
        sums[i] = o.sum(0) if sums[i] is None else sums[i] + o.sum(0)
        counts[i] += o.shape[0]

    hs = [m.register_forward_hook(lambda mod, a, out, i=i: hook(i, mod, out)) for i, m in enumerate(modules)]
    try:
        _run(model, x, bs)
    finally:
        for h in hs:
            h.remove()
    return [s / max(c, 1) if s is not None else None for s, c in zip(sums, counts)]


def _bias_correct(qmodel, fmodel, x, cfg, res):
    fmods = dict(fmodel.named_modules())
    targets = [(n, m) for n, m in _qlayers(qmodel)
               if m.weight_quantizer is not None and not isinstance(m, nn.Embedding)]
    means_f = _output_means(fmodel, [fmods[n] for n, _ in targets], x, cfg.batch_size)
    for (name, m), mf in zip(targets, means_f):
        if mf is None:
            continue
        mq = _output_means(qmodel, [m], x, cfg.batch_size)[0]
        delta = (mf - mq).to(m.weight.dtype)
        with torch.no_grad():
            if m.bias is None:
                m.bias = nn.Parameter(torch.zeros_like(delta))
            m.bias += delta
        res.bias_shift[name] = float(delta.abs().mean())

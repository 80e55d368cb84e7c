"""``lowbit.quantize``: fake quantization (quantize-dequantize) of a tensor, with autograd.

The numeric contract of each piece lives where it is implemented: element casts in
:mod:`lowbit.ops.cast`, scales and block formats in :mod:`lowbit.ops.scaling`. This module validates
the request, lays the tensor out in groups/blocks, picks the eager or compiled kernel (identical
results, tested) and attaches the gradient rule:

    ``ste``      straight-through estimator: dL/dx = dL/dq.
    ``clipped``  dL/dx = dL/dq where the scaled input was within the format's range (where the
                 saturating clamp did not act: up to half a gap beyond +-max), else 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from lowbit.formats.registry import get_format

from . import kernels
from .shared_scales import shared_scale
from lowbit.formats.cast import ROUNDINGS

SCALINGS = ("none", "tensor", "channel", "group", "block")
GRADS = ("ste", "clipped")


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized: a format plus rounding, overflow, scaling and gradient rule.

    ``scaling=None`` takes the format's default: ``none`` for floats (a direct cast), ``tensor`` for
    integers, ``block`` for MX/NVFP4, the codebook's own choice for codebooks. ``axis`` is the channel
    axis for ``channel`` and the axis that groups/blocks run along for ``group``/``block``.
    ``block_size`` overrides a block format's block size. ``pad=True`` allows an axis that the
    group/block size does not divide (padded with zeros, which do not change any scale).
    """

    format: object
    rounding: str = "nearest"
    saturate: bool = True
    scaling: str | None = None
    axis: int = -1
    group_size: int | None = None
    block_size: int | None = None
    pow2_scale: bool = False
    pad: bool = False
    grad: str = "ste"

    def __post_init__(self):
        fmt = get_format(self.format)
        object.__setattr__(self, "format", fmt)
        _check(self.rounding, ROUNDINGS, "rounding")
        _check(self.grad, GRADS, "grad")
        for key in ("saturate", "pow2_scale", "pad"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}={getattr(self, key)!r} is not allowed; allowed: True, False")
        for key in ("axis", "group_size", "block_size"):
            if isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}={getattr(self, key)!r} is not allowed; allowed: an integer")
        if self.scaling is None:
            object.__setattr__(self, "scaling", fmt.default_scaling)
        _check(self.scaling, SCALINGS, "scaling")
        if not fmt.holds_tensors:
            raise ValueError(f"format {fmt.name!r} is a scale format; it cannot fake-quantize tensors")
        if self.scaling not in fmt.scalings:
            raise ValueError(f"scaling={self.scaling!r} does not fit format {fmt.name!r}; "
                             f"allowed: {', '.join(fmt.scalings)}")
        if self.scaling == "group":
            if not isinstance(self.group_size, int) or self.group_size < 1:
                raise ValueError(f"scaling='group' needs group_size, a positive integer (got {self.group_size!r})")
        elif self.group_size is not None:
            raise ValueError(f"group_size={self.group_size} is only used with scaling='group' "
                             f"(got scaling={self.scaling!r})")
        if self.block_size is not None:
            object.__setattr__(self, "format", fmt.with_block_size(self.block_size))
            object.__setattr__(self, "block_size", None)
        if not isinstance(self.axis, int):
            raise ValueError(f"axis={self.axis!r} is not allowed; allowed: an integer")

    @property
    def chunk(self) -> int | None:
        """Elements per scale along ``axis`` for group/block scaling."""
        if self.scaling == "group":
            return self.group_size
        if self.scaling == "block":
            return self.format.block_size
        return None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["format"] = self.format.name
        return d

    def replace(self, **kw) -> "QuantSpec":
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(kw)
        return QuantSpec(**d)


def _check(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"{what}={value!r} is not allowed; allowed: {', '.join(allowed)}")


def make_spec(fmt, **kw) -> QuantSpec:
    fields = [f.name for f in dataclasses.fields(QuantSpec) if f.name != "format"]
    unknown = [k for k in kw if k not in fields]
    if unknown:
        raise TypeError(f"unknown keyword {unknown[0]!r}; allowed: the QuantSpec fields {', '.join(fields)}")
    if isinstance(fmt, QuantSpec):
        return fmt.replace(**kw) if kw else fmt
    return QuantSpec(fmt, **kw)


_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _validate(x: torch.Tensor, spec: QuantSpec):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"input dtype {x.dtype} is not allowed; allowed: float32, float16, bfloat16")
    if spec.scaling in ("channel", "group", "block"):
        if x.dim() == 0:
            raise ValueError(f"scaling={spec.scaling!r} needs a tensor with at least 1 dim (got a scalar)")
        if not -x.dim() <= spec.axis < x.dim():
            raise ValueError(f"axis={spec.axis} is out of range for a tensor of shape {list(x.shape)}")
    n = spec.chunk
    if n is not None and x.dim() > 0:
        size = x.shape[spec.axis]
        if size % n and not spec.pad:
            what = "group_size" if spec.scaling == "group" else "block size"
            raise ValueError(f"{what} {n} does not divide axis {spec.axis} of size {size} "
                             f"(shape {list(x.shape)}); allowed: a size divisible by {n}, or pad=True")


def _bad_values(t, ok_fn) -> str | None:
    """The first value of number/tensor ``t`` that ``ok_fn`` rejects (as text), or None."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"a scale must be a number or a torch.Tensor, got {type(t).__name__}")
    v = torch.as_tensor(t, dtype=torch.float32) if not isinstance(t, torch.Tensor) else t.detach().float()
    bad = ~ok_fn(v)
    if not bool(bad.any()):
        return None
    first = v[bad].reshape(-1)[0].item()
    return f"{first!r}" if v.dim() == 0 else f"{first!r} (one of {int(bad.sum())} such values of {v.numel()})"


def _check_scale(scale, spec: QuantSpec):
    """A given scale must be finite and > 0 ((scale, zero point) for unsigned ints: zero point an
    integer in [0, qmax]). A scale that requires grad (a learnable scale) is the training loop's:
    a NaN there is a divergence, reported by the loss, not a bad argument."""
    fmt = spec.format
    asym = fmt.asymmetric
    if asym:
        if not (isinstance(scale, (tuple, list)) and len(scale) == 2):
            raise ValueError(f"scale for unsigned format {fmt.name!r} must be a pair (scale, zero point); "
                             f"got {type(scale).__name__}")
        s, zp = scale
    elif isinstance(scale, (tuple, list)):
        raise ValueError(f"scale=(scale, zero point) is only for unsigned integer formats; {fmt.name!r} takes "
                         f"one scale (a number or a tensor)")
    else:
        s, zp = scale, None
    if not (isinstance(s, torch.Tensor) and s.requires_grad):
        bad = _bad_values(s, lambda v: torch.isfinite(v) & (v > 0))
        if bad is not None:
            raise ValueError(f"scale={bad} is not allowed; allowed: finite numbers > 0")
    if zp is not None:
        bad = _bad_values(zp, lambda v: (v >= 0) & (v <= fmt.qmax) & (v == torch.round(v)))
        if bad is not None:
            raise ValueError(f"zero point={bad} is not allowed for {fmt.name!r}; allowed: integers 0..{fmt.qmax}")


def _check_extras(spec: QuantSpec, generator, out, values):
    """Types of quantize's optional arguments ``generator``, ``out`` and ``values``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if out is not None and not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
    if values is not None:
        if spec.format.kind != "codebook":
            raise ValueError(f"values= is only for codebook formats (got {spec.format.name!r}); allowed: values=None")
        if not (isinstance(values, torch.Tensor) and values.is_floating_point() and values.dim() == 1
                and values.numel() >= 2):
            what = f"a {type(values).__name__}" if not isinstance(values, torch.Tensor) else \
                f"a {values.dtype} tensor of shape {list(values.shape)}"
            raise ValueError(f"values must be a 1-D float tensor of at least 2 sorted values; got {what}")


def _check_scale_shape(scale, spec: QuantSpec, x: torch.Tensor):
    """A scale tensor must broadcast against ``x`` (for group scaling: x laid out (..., n_groups, G))."""
    shape = list(x.shape)
    if spec.scaling == "group":
        axis, n = spec.axis % x.dim(), spec.group_size
        shape.append(shape.pop(axis))
        shape[-1:] = [-(-shape[-1] // n), n]
    for t in scale if isinstance(scale, (tuple, list)) else (scale,):
        if isinstance(t, torch.Tensor):
            try:
                out = torch.broadcast_shapes(tuple(t.shape), tuple(shape))
            except RuntimeError:
                out = None
            if out != tuple(shape):
                raise ValueError(f"scale of shape {list(t.shape)} does not broadcast to the input laid out for "
                                 f"scaling={spec.scaling!r}, {shape}; allowed: a shape that broadcasts to it, "
                                 f"e.g. {_example_shape(spec, shape)}")


def _example_shape(spec, shape) -> list:
    if spec.scaling == "channel":
        ax = spec.axis % len(shape)
        return [s if i == ax else 1 for i, s in enumerate(shape)]
    if spec.scaling == "group":
        return shape[:-1] + [1]
    return []


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec, scale, noise, values, backend):
        out, mask = kernels.run(x, spec, scale, noise, values, want_mask=spec.grad == "clipped", backend=backend)
        if mask is not None:
            ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.saved_tensors:
            (mask,) = ctx.saved_tensors
            g = torch.where(mask, g, 0)
        return g, None, None, None, None, None


def quantize(x: torch.Tensor, fmt, *, scale=None, generator: torch.Generator | None = None,
             out: torch.Tensor | None = None, backend: str | None = None, values=None, **kw) -> torch.Tensor:
    """Fake-quantize ``x`` to ``fmt`` (a name, a format or a :class:`QuantSpec`; ``kw`` are spec fields).

    Shape and dtype are preserved; fp16/bf16 inputs are computed in fp32 and cast back (the result
    is representable whenever the format is narrower than the input dtype). ``scale`` gives a fixed
    scale (calibrated, or delayed scaling) instead of computing it from ``x``; it must broadcast
    against ``x`` laid out for the spec's granularity. ``generator`` seeds stochastic rounding.
    ``out`` writes into an existing tensor (no autograd). ``backend``: ``auto``, ``eager``, ``compiled`` or
    ``native``; None (default) takes the current one (``with lowbit.backend(...)``, else
    ``LOWBIT_BACKEND``, else ``auto``: :mod:`lowbit.ops.backend`). ``values`` overrides a
    codebook's values with a tensor (used by learnable codebooks).
    """
    spec = make_spec(fmt, **kw)
    _validate(x, spec)
    _check_extras(spec, generator, out, values)
    if scale is not None and spec.scaling == "block":
        raise ValueError(f"scale= is not supported for block format {spec.format.name!r}; allowed: scale=None "
                         f"(block scales are computed per block)")
    if scale is not None and spec.scaling == "none":
        raise ValueError(f"scale= is not used with scaling='none' (a direct cast of {spec.format.name!r}); "
                         f"allowed: scaling='tensor', 'channel' or 'group' with scale=, or no scale")
    if scale is not None:
        _check_scale(scale, spec)
        _check_scale_shape(scale, spec, x)
    else:  # inside ``with shared_scales(...)`` (data parallel): the whole batch's scale
        scale = shared_scale(x, spec)
    noise = None
    if spec.rounding == "stochastic":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    if values is None:
        values = spec.format.cast_values(x.device)
    if out is not None:
        if out.shape != x.shape or out.dtype != x.dtype:
            raise ValueError(f"out has shape {list(out.shape)} and dtype {out.dtype}; "
                             f"allowed: the input's shape {list(x.shape)} and dtype {x.dtype}")
        if torch.is_grad_enabled() and x.requires_grad:
            raise ValueError("out= is not supported when x requires grad; call without out=")
        return kernels.run(x, spec, scale, noise, values, out=out, backend=backend)[0]
    if torch.is_grad_enabled() and x.requires_grad:
        return _FakeQuant.apply(x, spec, scale, noise, values, backend)
    return kernels.run(x, spec, scale, noise, values, backend=backend)[0]

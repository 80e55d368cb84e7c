"""Quantization operators: element casts, scaling, fake-quantize with autograd, kernel backends."""
from lowbit.formats.cast import ROUNDINGS

from .backend import BACKENDS, backend, current_backend
from .quantize import GRADS, SCALINGS, QuantSpec, make_spec, quantize

__all__ = ["BACKENDS", "GRADS", "ROUNDINGS", "SCALINGS", "QuantSpec", "backend", "current_backend", "make_spec",
           "quantize"]

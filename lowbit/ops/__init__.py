"""Quantization operators: element casts, scaling, fake-quantize with autograd, kernel backends."""
from .quantize import GRADS, SCALINGS, QuantSpec, make_spec, quantize
from lowbit.formats.cast import ROUNDINGS

__all__ = ["GRADS", "ROUNDINGS", "SCALINGS", "QuantSpec", "make_spec", "quantize"]

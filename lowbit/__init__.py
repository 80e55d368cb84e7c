"""lowbit: a precision laboratory for PyTorch.

Bit-exact number formats (minifloats ExMy, integers, codebooks, OCP MX, NVFP4), fast fake
quantization with autograd, and the layers built on them.
"""
from lowbit.formats import (BlockFormat, CodebookFormat, E8M0Format, FloatFormat, IntFormat, codebook,
                            get_format, list_formats)
from lowbit.formats.codec import pack, unpack
from lowbit.ops.encode import Encoded, decode, encode
from lowbit.ops import BACKENDS, QuantSpec, backend, current_backend, quantize

__version__ = "0.1.0"

# Higher layers, loaded on first use so that ``import lowbit`` stays light.
_LAZY = {
    "quantize_model": "lowbit.nn", "dequantize_model": "lowbit.nn", "make_recipe": "lowbit.nn",
    "recipe_for_precision": "lowbit.nn", "Recipe": "lowbit.nn", "Rule": "lowbit.nn", "LayerSpec": "lowbit.nn",
    "footprint": "lowbit.nn", "convert": "lowbit.nn", "create_model": "lowbit.models", "list_models": "lowbit.models",
    "load_dataset": "lowbit.data", "list_datasets": "lowbit.data",
}  # (training: ``from lowbit.train import train, evaluate``; ``lowbit.train`` is the module)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")

__all__ = ["BACKENDS", "BlockFormat", "CodebookFormat", "E8M0Format", "Encoded", "FloatFormat", "IntFormat",
           "QuantSpec", "backend", "codebook", "current_backend", "decode", "encode", "get_format", "list_formats", "pack", "quantize", "unpack", "__version__",
           *_LAZY]


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

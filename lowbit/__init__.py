"""lowbit: a precision laboratory for PyTorch.

Bit-exact number formats (minifloats ExMy, integers, codebooks, OCP MX, NVFP4), fast fake
quantization with autograd, and the layers built on them.
"""
from lowbit.formats import (BlockFormat, CodebookFormat, E8M0Format, FloatFormat, IntFormat, codebook,
                            get_format, list_formats)
from lowbit.formats.codec import pack, unpack
from lowbit.ops.encode import Encoded, decode, encode
from lowbit.ops import QuantSpec, quantize

__version__ = "0.1.0"

__all__ = ["BlockFormat", "CodebookFormat", "E8M0Format", "Encoded", "FloatFormat", "IntFormat", "QuantSpec", "codebook",
           "decode", "encode", "get_format", "list_formats", "pack", "quantize", "unpack", "__version__"]

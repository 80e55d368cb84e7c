"""Integer-only C export: float model -> C99 for the host, RV32IMC, and RV32IMC + Xlbmac.

graph (torch.fx -> op list), integer (calibration, quantized layers, plain packing), reference
(golden numpy int64 model), xlbmac (the packed-SIMD extension: semantics, encodings, packing),
reference_ext (the extension program's arithmetic in Python), kernels / codegen (generated C),
build (host cc, riscv gcc, QEMU), emulator (unicorn + the extension hook), cycles (instruction
classes and the cycle table), export (the library API), measure (measured instruction/cycle tables).
The command ``lowbit export c`` is :mod:`lowbit.cli.export_c`.
"""
from .export import export_c
from .graph import UnsupportedLayerError

__all__ = ["UnsupportedLayerError", "export_c"]

"""Default scaling per role and layer: how a format name becomes a full :class:`lowbit.QuantSpec`.

Fields a :class:`~lowbit.nn.specs.SlotSpec` gives explicitly always win. For the others:

===================  ===========================================  =====================================
format               weights                                      activations, softmax, attention, grads
===================  ===========================================  =====================================
intN / uintN         per channel (axis 0: output channels)        per tensor, dynamic (amax each call)
minifloat <= 8 bit   per tensor (amax -> format max)              per tensor, dynamic
codebook (nf4, ...)  per tensor                                   per tensor, dynamic
fp16 / bf16          direct cast (no scale)                       direct cast
MX / NVFP4           block (axis 1: the reduction axis), padded   block along the reduction axis, padded
===================  ===========================================  =====================================

Why: per-channel integer weights are the standard (TFLite, PyTorch) and cost one scale per row.
Minifloats and codebooks get a per-tensor scale so that formats with a tiny range (fp2 = {0, +-2},
fp3 = {0, +-1, +-2, +-4}) still cover the tensor; for fp8 the scale only shifts the exponent window
(as Transformer Engine's per-tensor scaling). Dynamic per-tensor activation scales need no
calibration. Block formats follow OCP MX: blocks run along the axis the next matmul reduces over.

The "axis hint" is the reduction / channel axis of the tensor in its layer: 1 for conv inputs and
outputs (NCHW), -1 for linear inputs and outputs, the softmax dim for softmax stages, -1 / -2 for the
left / right operand of an attention matmul. It is used for channel, group and block scaling.
Activation and other leaf modules do not know their layout in advance: their default axis is -1,
and 1 for 4-D (NCHW) tensors at run time (:func:`lowbit.nn.quantizers.spec_for`).
"""
from __future__ import annotations

from lowbit.ops import QuantSpec

from .specs import SlotSpec

ROLES = ("weight", "act", "grad")


def default_scaling(fmt, role: str) -> str:
    """Default ``scaling`` for a format in a role (see the module table; each family's ``role_scaling``)."""
    return fmt.role_scaling(role)


def follows_rank(s: SlotSpec | None) -> bool:
    """Whether an activation slot's axis is a default (so it may follow the tensor's layout)."""
    return s is not None and "axis" not in dict(s.fields)


def resolve(s: SlotSpec | None, role: str, axis_hint: int = -1) -> QuantSpec | None:
    """Fill the fields ``s`` leaves out for ``role`` ('weight', 'act' or 'grad') and build the QuantSpec.

    Weights: channel axis 0, group/block axis 1 (the input-channel axis of Linear, Conv and the
    feature axis of Embedding). Others: ``axis_hint``. Group/block scaling pads a ragged axis.
    """
    if s is None:
        return None
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not allowed; allowed: {', '.join(ROLES)}")
    fmt = s.format
    fields = dict(s.fields)
    scaling = fields.setdefault("scaling", default_scaling(fmt, role))
    if "axis" not in fields:
        if role == "weight":
            fields["axis"] = 0 if scaling == "channel" else 1 if scaling in ("group", "block") else -1
        else:
            fields["axis"] = axis_hint
    if scaling in ("group", "block"):
        fields.setdefault("pad", True)
    return QuantSpec(s.format, **fields)

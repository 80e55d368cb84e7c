"""Quantized weight layers: QLinear, QConv1d, QConv2d, QEmbedding.

Each is a subclass of its torch layer, built by :meth:`QuantLayer.from_float` from an existing
module: it SHARES the original's Parameter and buffer objects (state_dict keys, optimizers and
parameter identities stay valid) and adds up to four quantizer children, any of which may be None:

    weight_quantizer  applied to the weight on every forward (bias stays fp32, as in integer
                      inference where the bias is int32 in the accumulator's scale)
    input_quantizer   applied to the layer input (not for Embedding, whose input is indices)
    output_quantizer  applied to the layer output
    grad_quantizer    fake-quantizes the gradient flowing back into the layer output

Forward: y = layer(Q_in(x), Q_w(W), b); y = Q_out(y); y = Q_grad(y). Fixed quantizers own no
state; learnable ones (LSQ, codebooks) add their own parameters under their child names.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZER_NAMES = ("weight_quantizer", "input_quantizer", "output_quantizer", "grad_quantizer")


class QuantLayer:
    """Mixin with the quantizer plumbing shared by the quantized layers."""

    float_type: type = nn.Module

    @classmethod
    def from_float(cls, mod: nn.Module, weight=None, input=None, output=None, grad=None):
        """A quantized copy of ``mod`` sharing its parameters, buffers and hooks dict contents."""
        if type(mod) is not cls.float_type:
            raise TypeError(f"{cls.__name__}.from_float expects a {cls.float_type.__name__}, "
                            f"got {type(mod).__name__}")
        q = cls.__new__(cls)
        q.__dict__.update({k: (copy.copy(v) if isinstance(v, (dict, set)) else v)
                           for k, v in mod.__dict__.items()})
        for name, m in zip(QUANTIZER_NAMES, (weight, input, output, grad)):
            q.register_module(name, m)
        q.hits = {}  # slot -> times its quantizer ran (Assignment.live)
        return q

    def hit(self, slot: str):
        self.hits[slot] = self.hits.get(slot, 0) + 1

    def sync_to(self, mod: nn.Module) -> nn.Module:
        """Copy parameter/buffer objects and the training flag back onto the original ``mod``."""
        for k in mod._parameters:
            mod._parameters[k] = self._parameters[k]
        for k in mod._buffers:
            mod._buffers[k] = self._buffers[k]
        mod.train(self.training)
        return mod

    def _q_in(self, x):
        if self.input_quantizer is None:
            return x
        self.hit("input")
        return self.input_quantizer(x)

    def _q_w(self):
        if self.weight_quantizer is None:
            return self.weight
        self.hit("weight")
        return self.weight_quantizer(self.weight)

    def _q_out(self, y):
        if self.output_quantizer is not None:
            self.hit("output")
            y = self.output_quantizer(y)
        if self.grad_quantizer is None:
            return y
        if torch.is_grad_enabled() and y.requires_grad:
            self.hit("grad")  # counted when attached; it runs in the backward pass
        return self.grad_quantizer(y)


class QLinear(QuantLayer, nn.Linear):
    float_type = nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._q_out(F.linear(self._q_in(x), self._q_w(), self.bias))


class QConv1d(QuantLayer, nn.Conv1d):
    float_type = nn.Conv1d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._q_out(self._conv_forward(self._q_in(x), self._q_w(), self.bias))


class QConv2d(QuantLayer, nn.Conv2d):
    float_type = nn.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._q_out(self._conv_forward(self._q_in(x), self._q_w(), self.bias))


class QEmbedding(QuantLayer, nn.Embedding):
    float_type = nn.Embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(x, self._q_w(), self.padding_idx, self.max_norm, self.norm_type,
                        self.scale_grad_by_freq, self.sparse)
        return self._q_out(y)


QUANTIZED = {nn.Linear: QLinear, nn.Conv1d: QConv1d, nn.Conv2d: QConv2d, nn.Embedding: QEmbedding}


def is_hf_conv1d(m: nn.Module) -> bool:
    """Hugging Face's ``transformers.pytorch_utils.Conv1D`` (GPT-2's projections): a Linear whose
    weight is stored transposed, (in_features, out_features), applied as ``addmm(b, x, W)``.
    Recognised by class name and module (exact type), so lowbit does not import transformers."""
    t = type(m)
    return t.__name__ == "Conv1D" and t.__module__.startswith("transformers.")


def _hf_conv1d_forward(self, x: torch.Tensor) -> torch.Tensor:
    size_out = x.size()[:-1] + (self.nf,)
    x = self._q_in(x)
    y = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self._q_w())
    return self._q_out(y.view(size_out))


def quantized_class(m: nn.Module) -> type | None:
    """The quantized subclass for ``m``'s exact type (None: not a quantizable weight layer). The one
    for HF's Conv1D is made on first use; its weight spec has its channel axis on dim 1."""
    t = type(m)
    if t not in QUANTIZED and is_hf_conv1d(m):
        QUANTIZED[t] = type("QHFConv1D", (QuantLayer, t), {"float_type": t, "forward": _hf_conv1d_forward,
                                                           "__module__": __name__, "__qualname__": "QHFConv1D"})
    return QUANTIZED.get(t)

"""The export floor's one graph tracer: torch.fx, over lowbit's one module walker.

:func:`lowbit.nn.walker.walk` says what every layer is (its :class:`~lowbit.nn.walker.LayerInfo`);
an exporter also needs the dataflow between the layers, which only tracing ``forward`` gives. Every
exporter (the integer C export, the hand-built ONNX graph, its BatchNorm folding) traces here, so
they share:

* one leaf rule: lowbit's quantized layers and torch.nn's own modules are leaves (a float model and
  its quantized copy trace to the same graph);
* one error: a model torch.fx cannot trace (data-dependent control flow, ...) raises the caller's
  error type with one line naming the model and fx's reason;
* one naming: a ``call_module`` node's target is the module path the walker reports
  (``features.0.0``; fx names the node ``features_0_0``), and recipes are matched against it with
  the walker's tags (``lowbit.nn.walker.tags_of``), so a rule names the same layers in export as in
  ``quantize_model``;
* one recorder: :func:`record` runs the traced graph and keeps chosen node outputs (shapes, float
  activations for calibration).
"""
from __future__ import annotations

import torch
from torch import fx, nn

__all__ = ["UntraceableModelError", "record", "trace"]


class UntraceableModelError(ValueError):
    """torch.fx cannot trace the model's forward."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from lowbit.nn.modules import QuantLayer
        return isinstance(m, QuantLayer) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, error: type[Exception] = UntraceableModelError) -> fx.GraphModule:
    """``model`` traced into a GraphModule that shares its modules (the caller sets train/eval)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises TraceError, TypeError, NotImplementedError, ...
        msg = " ".join(str(exc).split())[:200]
        raise error(f"model {type(model).__name__} cannot be traced by torch.fx "
                    f"(data-dependent control flow?): {msg}") from None
    return fx.GraphModule(model, graph)


@torch.no_grad()
def record(gm: fx.GraphModule, x: torch.Tensor, want=None) -> dict[str, torch.Tensor]:
    """Run ``gm`` on ``x``; the tensor output of every node (or of the node names in ``want``)."""
    out: dict[str, torch.Tensor] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n):
            r = super().run_node(n)
            if isinstance(r, torch.Tensor) and (want is None or n.name in want):
                out[n.name] = r.detach()
            return r

    Rec(gm).run(x)
    return out

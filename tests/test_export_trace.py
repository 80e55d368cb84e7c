"""lowbit.export.trace: the one graph tracer of every exporter (C, ONNX, BatchNorm folding)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lowbit.export.c.graph import UnsupportedLayerError
from lowbit.export.onnx import UnsupportedOpError
from lowbit.export.onnx_deploy import fold_batchnorm
from lowbit.export.trace import UntraceableModelError, record, trace
from lowbit.nn import quantize_model, recipe_for_precision


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:                      # data-dependent control flow: fx cannot trace it
            return self.fc(x)
        return x


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))


def test_float_and_quantized_models_trace_to_the_same_graph():
    float_nodes = [(n.op, n.target) for n in trace(_net().eval()).graph.nodes]
    quant_nodes = [(n.op, n.target) for n in trace(_quantized()).graph.nodes]
    assert float_nodes == quant_nodes
    assert ("call_module", "0") in float_nodes            # module paths, the walker's layer names


def _quantized():
    m = _net().eval()
    quantize_model(m, recipe_for_precision("int8"))
    return m


def test_quantized_layers_are_leaves():
    m = _quantized()
    gm = trace(m)
    mods = dict(m.named_modules())
    called = [type(mods[n.target]).__name__ for n in gm.graph.nodes if n.op == "call_module"]
    assert called[0] != "Conv2d" and "Conv" in called[0]   # lowbit's quantized conv, not traced through
    assert len(called) == 5


@pytest.mark.parametrize("error", [UntraceableModelError, UnsupportedLayerError, UnsupportedOpError])
def test_untraceable_model_raises_the_callers_error_in_one_line(error):
    with pytest.raises(error) as e:
        trace(Branchy(), error)
    msg = str(e.value)
    assert "\n" not in msg and "Branchy cannot be traced by torch.fx" in msg


def test_every_exporter_reports_an_untraceable_model():
    with pytest.raises(UnsupportedOpError, match="Branchy cannot be traced"):
        fold_batchnorm(Branchy())
    from lowbit.export.c.graph import trace as c_trace
    with pytest.raises(UnsupportedLayerError, match="Branchy cannot be traced"):
        c_trace(Branchy(), (4, 1, 1))


def test_record_keeps_the_wanted_outputs_and_matches_forward():
    m = _net().eval()
    x = torch.randn(2, 1, 8, 8)
    gm = trace(m)
    out = record(gm, x)
    last = [n.name for n in gm.graph.nodes if n.op == "call_module"][-1]
    assert torch.equal(out[last], m(x))
    some = record(gm, x, want={last})
    assert set(some) == {last}

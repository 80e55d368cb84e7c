"""One model walker and one per-layer record: surgery, cost, search and the assignment share them."""
import torch
from torch import nn

from lowbit.cost import LayerInfo as CostLayerInfo
from lowbit.cost import profile_layers
from lowbit.models import create_model
from lowbit.nn import discover, make_recipe, quantize_model
from lowbit.nn.walker import LayerInfo, walk


def test_discover_and_profile_are_views_of_one_walk():
    model = create_model("cnn", num_classes=10, in_chans=1, img_size=8, channels=[4, 8])
    records = walk(model)
    prof = profile_layers(model, (2, 1, 8, 8))
    assert CostLayerInfo is LayerInfo and all(isinstance(li, LayerInfo) for li in prof)
    assert [li.name for li in discover(model)] == [li.name for li in records if li.kind is not None]
    assert [li.name for li in prof] == [li.name for li in records if li.is_weight]
    by_name = {li.name: li for li in records}
    for li in prof:                                  # the walked record, with the work filled in
        base = by_name[li.name]
        assert (li.type, li.params, li.weight_shape, li.kind) == (base.type, base.params, base.weight_shape, base.kind)
        assert li.module is base.module and li.macs > 0 and base.macs == 0


def test_assignment_rows_hold_the_walked_record():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    before = {li.name: li for li in walk(model)}
    asg = quantize_model(model, make_recipe(weights="int4", inputs="int8"))
    for r in asg.rows:
        assert isinstance(r.layer, LayerInfo) and r.layer == before[r.name]
    conv = asg["0"]
    assert (conv.type, conv.kind, conv.weight_shape, conv.params) == ("Conv2d", "weight", (4, 1, 3, 3), 4 * 9 + 4)
    # the quantized model walks to the same weight layers (QConv2d / QLinear count as weight layers)
    after = profile_layers(model, (1, 1, 8, 8))
    assert [(li.name, li.type, li.kind) for li in after] == [("0", "Conv2d", "weight"), ("3", "Linear", "weight")]


def test_layers_inside_multihead_attention_are_costed_but_not_quantized():
    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x)[0]

    m = Att()
    rec = {li.name: li for li in walk(m)}
    assert rec["mha.out_proj"].is_weight and rec["mha.out_proj"].kind is None
    assert "mha.out_proj" not in {li.name for li in discover(m)}
    assert "mha.out_proj" in {li.name for li in profile_layers(m, (1, 3, 8))}
    assert torch.isfinite(m(torch.randn(1, 3, 8))).all()

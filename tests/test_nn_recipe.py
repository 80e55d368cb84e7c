"""Recipe types: normalisation, validation messages, first-match lookup, serialisation, hashing, presets."""
import json

import pytest

from lowbit import QuantSpec, get_format
from lowbit.nn import (LayerSpec, MatmulSpec, Recipe, Rule, SlotSpec, SoftmaxSpec, make_recipe,
                       recipe_for_precision, resolve)
from lowbit.nn.recipe import expand_single


def test_slot_entries_normalise():
    assert LayerSpec(weight="fp8").weight == SlotSpec("fp8_e4m3")
    assert LayerSpec(weight={"format": "int4", "rounding": "stochastic"}).weight.fields == (("rounding", "stochastic"),)
    assert LayerSpec(weight="fp32").weight is None          # fp32 is "keep full precision"
    q = QuantSpec("int4", scaling="group", group_size=32)
    s = LayerSpec(weight=q).weight
    assert resolve(s, "weight") == q                          # a QuantSpec is used verbatim
    assert resolve(s, "act", 1) == q                         # ...whatever the role and layer


def test_block_size_override_round_trips():
    q = QuantSpec("mxfp4", block_size=16)
    s = LayerSpec(weight=q).weight
    assert s.format is get_format("mxfp4") and dict(s.fields)["block_size"] == 16
    assert resolve(s, "weight").format == q.format


def test_composite_entries():
    ls = LayerSpec(softmax="fp8_e5m2", attn_qk="fp8", attn_av={"lhs": "fp8", "out": "bf16"})
    assert ls.softmax == SoftmaxSpec.all("fp8_e5m2")
    assert ls.attn_qk == MatmulSpec("fp8", "fp8", None)
    assert ls.attn_av.rhs is None and ls.attn_av.out == SlotSpec("bf16")
    assert LayerSpec(softmax={"exp": "fp8_e5m2"}).softmax.parts() == {
        "input": None, "exp": SlotSpec("fp8_e5m2"), "sum": None, "output": None}


@pytest.mark.parametrize("bad,match", [
    (dict(weight="fp9"), "unknown format 'fp9'"),
    (dict(weight={"format": "int4", "rnd": 1}), "unknown quantization field 'rnd'; allowed: format, rounding"),
    (dict(weight={"rounding": "zero"}), "needs a 'format' key"),
    (dict(weight={"format": "int4", "rounding": "up"}), "rounding='up' is not allowed; allowed: nearest"),
    (dict(weight={"format": "int4", "scaling": "group"}), "needs group_size"),
    (dict(softmax={"exps": "fp8"}), "unknown SoftmaxSpec key 'exps'; allowed: input, exp, sum, output"),
    (dict(learn_weight="adam"), "learn_weight='adam' is not allowed; allowed: None, lsq, codebook"),
    (dict(weight=3.5), "is not allowed; allowed: a format name, a QuantSpec"),
])
def test_validation_messages(bad, match):
    with pytest.raises(ValueError, match=match):
        LayerSpec(**bad)


@pytest.mark.parametrize("d,match", [
    ({"rulez": []}, "unknown recipe key 'rulez'; allowed: rules, keep_first_last, name"),
    ({"rules": [{"pattern": "x", "kind": "Linear"}]}, "unknown rule key 'kind'; allowed: pattern, types, spec"),
    ({"rules": [{"types": ["linearr"], "spec": "int8"}]}, "unknown layer type 'linearr'; allowed: weight"),
    ({"rules": [{"types": "Linear", "spec": {"wieght": "int8"}}]}, "unknown LayerSpec key 'wieght'"),
    ({"keep_first_last": "yes"}, "keep_first_last='yes' is not allowed; allowed: true, false"),
    ({"rules": "int8"}, "recipe rules must be a list"),
])
def test_recipe_validation_messages(d, match):
    with pytest.raises(ValueError, match=match) as e:
        Recipe.from_dict(d)
    assert "\n" not in str(e.value)


def test_first_match_wins_and_none_keeps_float():
    r = Recipe([Rule(pattern="head", spec=None), Rule(types="Linear", spec={"weight": "int4"}),
                Rule(pattern="*", spec="int8")])
    assert r.lookup("head", {"Linear", "weight"}, "weight") is None
    assert r.lookup("fc1", {"Linear", "weight"}, "weight") == LayerSpec(weight="int4")
    assert r.lookup("conv", {"Conv2d", "weight"}, "weight") == LayerSpec(weight="int8", input="int8")
    assert r.lookup("act", {"ReLU", "activation"}, "activation") == LayerSpec(output="int8")
    assert Recipe().lookup("x", {"Linear"}, "weight") is None


def test_pattern_and_types_both_must_match():
    rule = Rule(pattern="features.*", types=("conv",), spec="int8")
    assert rule.matches("features.0.0", {"Conv2d", "conv"})
    assert not rule.matches("features.0.2", {"ReLU", "activation"})
    assert not rule.matches("head", {"Conv2d", "conv"})
    assert Rule(pattern="*attn*").matches("blocks.0.attn.qkv", {"Linear"})


def test_expand_single_per_kind():
    s = SlotSpec("fp8_e4m3")
    assert expand_single(s, "weight") == LayerSpec(weight=s, input=s)
    assert expand_single(s, "activation") == LayerSpec(output=s)
    assert expand_single(s, "softmax").softmax == SoftmaxSpec.all(s)
    att = expand_single(s, "attention")
    assert att.attn_qk == att.attn_av == MatmulSpec(s, s, None)
    assert expand_single(s, "other").is_float


def _rich_recipe():
    return Recipe([
        Rule(pattern="head", spec=None),
        Rule(types=("Linear", "Conv2d"), spec=LayerSpec(weight={"format": "int4", "scaling": "group", "group_size": 8},
                                                        input="fp8_e4m3", grad="fp8_e5m2", learn_weight="lsq")),
        Rule(types="softmax", spec={"softmax": {"input": "fp8", "exp": "fp8_e5m2", "sum": "bf16"}}),
        Rule(types="attention", spec={"attn_qk": "fp8", "attn_av": {"lhs": "fp8", "rhs": "fp8", "out": "bf16"}}),
        Rule(pattern="*", spec=QuantSpec("mxfp4", block_size=16)),
    ], keep_first_last=True, name="rich")


def test_dict_json_yaml_round_trips(tmp_path):
    r = _rich_recipe()
    assert Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe.from_yaml(r.to_yaml()) == r
    p = tmp_path / "r.yaml"
    p.write_text(r.to_yaml())
    assert Recipe.from_yaml(p) == r and Recipe.from_yaml(str(p)) == r
    assert hash(r) == hash(Recipe.from_yaml(p))


def test_yaml_by_hand():
    r = Recipe.from_yaml("""
keep_first_last: true
rules:
  - {pattern: "head", spec: null}
  - types: [Linear, Conv2d]
    spec: {weight: int4, input: fp8_e4m3}
  - types: softmax
    spec: fp8_e5m2
""")
    assert r.keep_first_last and len(r.rules) == 3
    assert r.rules[1].spec == LayerSpec(weight="int4", input="fp8_e4m3")
    assert r.rules[2].spec == SlotSpec("fp8_e5m2")


def test_hash_stable_and_sensitive():
    r = _rich_recipe()
    assert r.hash() == _rich_recipe().hash() == Recipe.from_json(r.to_json()).hash()
    assert len(r.hash()) == 16
    assert r.replace(name="other").hash() == r.hash()                 # the label is not the config
    assert r.replace(keep_first_last=False).hash() != r.hash()
    assert make_recipe(weights="int8").hash() != make_recipe(weights="int4").hash()
    assert make_recipe(weights="int8", activations="fp8_e4m3").hash() == make_recipe(
        weights="int8", activations="fp8").hash()                    # shorthands resolve first
    # pinned: a change to the canonical form would silently orphan the results of resumable sweeps
    assert make_recipe(weights="int8", activations="fp8_e4m3").hash() == "34fbdb9e0bb46154"


def test_str_is_printable():
    s = str(_rich_recipe())
    assert "rich" in s and "keep_first_last=True" in s and "pattern=head -> float" in s
    assert "int4(group_size=8, scaling=group)" in s and "learn_weight=lsq" in s
    assert str(LayerSpec()) == "float"


def test_make_recipe_targets():
    r = make_recipe(weights="fp4_e2m1", activations="fp8_e4m3", softmax="fp8_e5m2", grads="fp8_e5m2")
    kinds = [rule.types[0] for rule in r.rules]
    assert kinds == ["weight", "activation", "softmax", "attention", "functional"]
    w = r.lookup("fc", {"Linear", "weight"}, "weight")
    assert w.weight == SlotSpec("fp4_e2m1") and w.input is None and w.grad == SlotSpec("fp8_e5m2")
    assert make_recipe().rules == ()
    sr = make_recipe(weights="int4", rounding="stochastic").lookup("fc", {"weight"}, "weight")
    assert resolve(sr.weight, "weight").rounding == "stochastic"
    assert make_recipe(weights={"format": "int4", "scaling": "tensor"}).rules[0].spec.weight.fields == (
        ("scaling", "tensor"),)


def test_recipe_for_precision():
    assert recipe_for_precision("fp32").rules == ()
    sm_only = recipe_for_precision("fp32", softmax="fp8_e5m2")
    assert [r.types[0] for r in sm_only.rules] == ["softmax", "attention", "functional"]
    r = recipe_for_precision("fp8", softmax="fp8_e5m2")
    assert r.lookup("fc", {"weight"}, "weight") == LayerSpec(weight="fp8_e4m3")
    assert r.lookup("act", {"activation"}, "activation") == LayerSpec(output="fp8_e4m3")
    assert r.lookup("sm", {"softmax"}, "softmax").softmax == SoftmaxSpec.all("fp8_e5m2")
    for name in ("fp4", "fp3", "fp2", "int8", "mxfp4", "nvfp4", "nf4", "e3m2", "int4_narrow"):
        assert recipe_for_precision(name).rules
    with pytest.raises(ValueError, match="unknown target 'weight'; allowed: weights"):
        recipe_for_precision("int8", targets=("weight",))
    with pytest.raises(ValueError, match="unknown format 'fp5'"):
        recipe_for_precision("fp5")


@pytest.mark.parametrize("fmt,role,hint,scaling,axis", [
    ("int8", "weight", -1, "channel", 0),
    ("int8", "act", 1, "tensor", 1),
    ("fp8_e4m3", "weight", -1, "tensor", -1),
    ("fp2", "act", -1, "tensor", -1),
    ("nf4", "weight", -1, "tensor", -1),
    ("bf16", "act", -1, "none", -1),
    ("mxfp4", "weight", -1, "block", 1),
    ("mxfp4", "act", 1, "block", 1),
    ("nvfp4", "act", -1, "block", -1),
])
def test_default_scalings(fmt, role, hint, scaling, axis):
    q = resolve(SlotSpec(fmt), role, hint)
    assert (q.scaling, q.axis) == (scaling, axis)
    assert q.pad == (scaling == "block")

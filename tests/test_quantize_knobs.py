"""lowbit.quantize: autograd (STE and clipped STE), every knob changes the numbers ("knob liveness"),
and error messages that name the bad value and the allowed ones.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import NUMPY_NAN_WARNINGS, F32, same_bits
from lowbit import QuantSpec, quantize
from lowbit.formats import get_format, list_formats

pytestmark = [pytest.mark.filterwarnings(w) for w in NUMPY_NAN_WARNINGS]

# ---- autograd ----------------------------------------------------------------------------------------------
GRAD_SPECS = [("fp8_e4m3", {}), ("fp4_e2m1", dict(scaling="tensor")), ("int8", {}), ("uint4", {}), ("nf4", {}),
              ("int4", dict(scaling="group", group_size=16)), ("mxfp4", {}), ("nvfp4", {}), ("mxint8", {})]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,kw", GRAD_SPECS, ids=[n for n, _ in GRAD_SPECS])
def test_ste_gradient_is_the_incoming_gradient(name, kw, dtype):
    x = (torch.randn(4, 64) * 600).to(dtype).requires_grad_()
    gout = torch.randn(4, 64).to(dtype)
    y = quantize(x, name, **kw)
    assert y.dtype == dtype and y.requires_grad
    assert torch.equal(y.detach(), quantize(x.detach(), name, **kw))
    y.backward(gout)
    assert x.grad.dtype == dtype and torch.equal(x.grad, gout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_clipped_gradient_zero_exactly_where_saturated(dtype):
    g = torch.Generator().manual_seed(13)
    gout = torch.randn(8, 64, generator=g)
    # direct cast: saturated where |x| rounds beyond 448 (half a gap, 16, past max)
    x = torch.randn(8, 64, generator=g) * 300
    x[0, :4] = torch.tensor([463.9, 464.1, -1e4, float("inf")])
    x = x.to(dtype).requires_grad_()
    quantize(x, "fp8_e4m3", grad="clipped").backward(gout.to(dtype))
    sat = x.detach().float().abs() > 464
    assert sat.any() and (~sat).any()
    assert torch.equal(x.grad, torch.where(sat, 0.0, gout).to(dtype))
    # per tensor with a computed scale: nothing saturates, every gradient passes
    for name in ("fp8_e4m3", "fp4_e2m1", "int8", "int4", "nf4", "uint4"):
        for i in range(20):
            xi = (torch.randn(64, generator=g) * torch.exp(torch.randn(1, generator=g) * 2)).to(dtype).requires_grad_()
            q = quantize(xi, name, scaling="tensor" if name != "uint4" else None, grad="clipped")
            q.backward(torch.ones(64, dtype=dtype))
            assert (xi.grad == 1).all(), (name, i)
    # per tensor with a fixed scale: saturated where |x / s| rounds beyond 127
    x = (torch.randn(8, 64, generator=g) * 10).to(dtype).requires_grad_()
    quantize(x, "int8", scale=torch.tensor(0.05), grad="clipped").backward(gout.to(dtype))
    y = x.detach().float() / 0.05
    sat = (y > 127.5) | (y < -128.5)                # int8 holds -128
    assert sat.any() and torch.equal(x.grad, torch.where(sat, 0.0, gout).to(dtype))


def test_clipped_gradient_mx():
    g = torch.Generator().manual_seed(14)
    x = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 1, generator=g) * 4)
    x[0, :32] = 0.5
    x[0, 0] = 1.999                  # saturates every element format under the floor rule
    x = x.requires_grad_()
    for name in ("mxfp4", "mxfp8_e4m3", "mxint8"):
        fmt = get_format(name)
        for rule in ("floor", "rceil"):
            f = dataclasses.replace(fmt, scale_rule=rule)
            x.grad = None
            quantize(x, f, grad="clipped").backward(torch.ones_like(x))
            xb = x.detach().double().view(16, 2, 32)
            amax = xb.abs().amax(-1, keepdim=True)
            fl = torch.frexp(amax)[1] - 1                                  # floor(log2(amax)), exact
            e = fl - fmt.element.emax
            if rule == "rceil":                                            # smallest e: amax <= max * 2^e
                e = fl - int(np.frexp(fmt.element.max)[1])
                e = e + (fmt.element.max * 2.0 ** e < amax).long()
                e = e + (fmt.element.max * 2.0 ** e < amax).long()
            X = 2.0 ** e.double()
            el = fmt.element
            half_gap = 0.5 * el.step if el.kind == "int" else 2.0 ** (el.emax - el.man_bits - 1)
            sat = (xb.abs() / X > el.max + half_gap).view(16, 64)
            if rule == "rceil":
                assert not sat.any()                                    # rceil never saturates
            else:
                assert sat.any()
            assert torch.equal(x.grad, (~sat).float()), (name, rule)


# ---- knob liveness: every option changes the numbers somewhere -----------------------------------------------
def _rich(seed=15):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 1, generator=g) * 2)
    return x * torch.exp(torch.randn(1, 64, generator=g))


def test_every_format_changes_the_numbers():
    x = _rich()
    outs = {}
    for name in list_formats():
        if get_format(name).kind == "scale":
            continue
        q = quantize(x, name, backend="eager")
        if name == "fp32":
            assert torch.equal(q, x)                          # the identity format
            continue
        assert not torch.equal(q, x), name
        outs[name] = q
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.equal(outs[a], outs[b]), (a, b)


def _differ(a, b):
    return not bool(same_bits(a, b).all())


def test_rounding_saturate_scaling_knobs():
    x = _rich()
    for name in ("fp8_e4m3", "int8", "nf4", "mxfp4", "fp4_e2m1"):
        r = {m: quantize(x, name, rounding=m, generator=torch.Generator().manual_seed(0))
             for m in ("nearest", "zero", "stochastic")}
        assert _differ(r["nearest"], r["zero"]) and _differ(r["nearest"], r["stochastic"])
        assert _differ(r["zero"], r["stochastic"])
    big = torch.tensor([1e5, -7e4, 500.0, 1.0])
    for name in ("fp8_e5m2", "fp8_e4m3"):
        assert _differ(quantize(big, name, saturate=True), quantize(big, name, saturate=False)), name
    for name in ("int8", "fp8_e4m3", "int4"):
        s = {sc: quantize(x, name, scaling=sc, **({"group_size": 16} if sc == "group" else {}))
             for sc in ("none", "tensor", "channel", "group")}
        keys = list(s)
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                assert _differ(s[a], s[b]), (name, a, b)
        assert _differ(quantize(x, name, scaling="tensor"), quantize(x, name, scaling="tensor", pow2_scale=True))
        assert _differ(quantize(x, name, scaling="channel", axis=0), quantize(x, name, scaling="channel", axis=1))
        assert _differ(quantize(x, name, scaling="group", group_size=16),
                       quantize(x, name, scaling="group", group_size=32))
        assert _differ(quantize(x, name, scaling="group", group_size=16, axis=-1),
                       quantize(x, name, scaling="group", group_size=16, axis=0))


def test_block_knobs():
    x = _rich()
    g = torch.Generator().manual_seed(16)       # heavy tails: elements in the element format's subnormals
    heavy = torch.randn(16, 64, generator=g) * torch.exp(torch.randn(16, 64, generator=g) * 6)
    heavy[0, :32] = 0.3
    heavy[0, 0] = 1.999             # significand above MXINT8's 127/64: floor saturates, rceil does not
    for name in ("mxfp4", "mxfp8_e4m3", "mxint8", "nvfp4"):
        assert _differ(quantize(x, name), quantize(x, name, block_size=16 if name != "nvfp4" else 32)), name
        assert _differ(quantize(x, name), quantize(x, name, axis=0, pad=True)), name
    for name in ("mxfp4", "mxfp8_e5m2", "mxint8"):
        fmt = get_format(name)
        r = {rule: quantize(heavy, dataclasses.replace(fmt, scale_rule=rule)) for rule in ("floor", "ceil", "rceil")}
        assert _differ(r["floor"], r["ceil"]) and _differ(r["floor"], r["rceil"]), name
        assert _differ(r["ceil"], r["rceil"]), name


def test_grad_and_narrow_knobs():
    x = (_rich() * 300).requires_grad_()
    grads = {}
    for gname in ("ste", "clipped"):
        x.grad = None
        quantize(x, "fp8_e4m3", grad=gname).sum().backward()
        grads[gname] = x.grad.clone()
    assert not torch.equal(grads["ste"], grads["clipped"])
    m128 = torch.tensor([-128.0, 127.0])
    assert quantize(m128, "int8", scaling="none").tolist() == [-128, 127]
    assert quantize(m128, "int8_narrow", scaling="none").tolist() == [-127, 127]
    s = torch.tensor(0.01)                      # (with amax scaling |x / s| <= 7: the narrow code never shows)
    assert _differ(quantize(_rich(), "int4", scale=s), quantize(_rich(), "int4_narrow", scale=s))


# ---- errors: the message names the bad value and the allowed ones ----------------------------------------------
ERRORS = [
    (dict(fmt="fp7"), ["'fp7'", "fp8_e4m3"]),
    (dict(fmt="e8m7fn"), ["e8m7fn", "ieee"]),
    (dict(fmt="int8", rounding="round"), ["rounding='round'", "nearest, zero, stochastic"]),
    (dict(fmt="int8", scaling="row"), ["scaling='row'", "none, tensor, channel, group, block"]),
    (dict(fmt="int8", grad="none"), ["grad='none'", "ste, clipped"]),
    (dict(fmt="int8", scaling="group"), ["group_size", "positive integer", "None"]),
    (dict(fmt="int8", scaling="group", group_size=0), ["group_size", "0"]),
    (dict(fmt="int8", scaling="tensor", group_size=16), ["group_size=16", "scaling='group'"]),
    (dict(fmt="mxfp4", scaling="tensor"), ["scaling='tensor'", "mxfp4", "allowed: block"]),
    (dict(fmt="int8", scaling="block"), ["scaling='block'", "int8", "none, tensor, channel, group"]),
    (dict(fmt="int8", block_size=16), ["block_size", "int8"]),
    (dict(fmt="mxfp4", block_size=0), ["block_size=0", "positive integer"]),
    (dict(fmt="e8m0"), ["e8m0", "scale format"]),
    (dict(fmt="int8", axis=1.5), ["axis=1.5", "integer"]),
]


@pytest.mark.parametrize("kw,needles", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_spec_errors(kw, needles):
    kw = dict(kw)
    fmt = kw.pop("fmt")
    with pytest.raises(ValueError) as e:
        QuantSpec(fmt, **kw)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    with pytest.raises(ValueError):
        quantize(torch.ones(4, 32), fmt, **kw)


@pytest.mark.parametrize("call,needles", [
    (lambda: quantize(torch.ones(4, 40), "mxfp4"), ["block size 32", "40", "pad=True"]),
    (lambda: quantize(torch.ones(4, 40), "int8", scaling="group", group_size=16), ["group_size 16", "40", "pad=True"]),
    (lambda: quantize(torch.ones(4, 32), "int8", scaling="channel", axis=2), ["axis=2", "[4, 32]"]),
    (lambda: quantize(torch.ones(4, 32), "mxfp4", axis=-3), ["axis=-3"]),
    (lambda: quantize(torch.ones(4, dtype=torch.int32), "int8"), ["torch.int32", "float32, float16, bfloat16"]),
    (lambda: quantize(torch.ones(4, dtype=torch.float64), "int8"), ["torch.float64", "float32, float16, bfloat16"]),
    (lambda: quantize(torch.tensor(1.0), "int8", scaling="channel"), ["scalar"]),
    (lambda: quantize(torch.ones(4), "int8", backend="fast"), ["backend='fast'", "auto, eager, compiled"]),
    (lambda: quantize(torch.ones(4), "int8", out=torch.ones(5)), ["[5]", "[4]"]),
    (lambda: quantize(torch.ones(4), "int8", out=torch.ones(4, dtype=torch.float16)), ["float16", "float32"]),
    (lambda: quantize(torch.ones(4, requires_grad=True), "int8", out=torch.ones(4)), ["out=", "requires grad"]),
])
def test_call_errors(call, needles):
    with pytest.raises(ValueError) as e:
        call()
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_backend_env_error(monkeypatch):
    monkeypatch.setenv("LOWBIT_BACKEND", "gpu")
    with pytest.raises(ValueError) as e:
        quantize(torch.ones(4), "int8")
    assert "LOWBIT_BACKEND='gpu'" in str(e.value) and "auto, eager, compiled" in str(e.value)


def test_non_tensor_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        quantize(np.ones(4, F32), "int8")


def test_spec_is_frozen_hashable_and_serialisable():
    s = QuantSpec("fp4", scaling="group", group_size=32)
    assert s.format is get_format("fp4_e2m1") and hash(s) == hash(QuantSpec("fp4_e2m1", scaling="group", group_size=32))
    assert s.to_dict()["format"] == "fp4_e2m1" and s.replace(group_size=16).group_size == 16
    assert QuantSpec("mxfp4", block_size=16).format.block_size == 16
    with pytest.raises(Exception):
        s.rounding = "zero"
    assert QuantSpec("int8").scaling == "tensor" and QuantSpec("fp8").scaling == "none"
    assert QuantSpec("mxfp4").scaling == "block" and QuantSpec("nf4").scaling == "tensor"


def test_backend_context_is_scoped_and_declared_once(monkeypatch):
    """``with lowbit.backend(name)`` sets the default backend of every quantize call inside the
    block (nested blocks too) and restores it after, also after an error; the argument still wins."""
    import lowbit
    from lowbit.experiments.schema import QUANT_BACKENDS
    from lowbit.ops import kernels
    from lowbit.ptq.calibrate import PTQConfig

    monkeypatch.delenv("LOWBIT_BACKEND", raising=False)
    assert QUANT_BACKENDS is lowbit.BACKENDS is kernels.BACKENDS     # one declaration
    seen = []
    real = kernels._choose
    monkeypatch.setattr(kernels, "_choose", lambda *a: seen.append(a[-1] or kernels.default_backend()) or real(*a))
    x = torch.randn(64)
    assert lowbit.current_backend() == "auto"
    with lowbit.backend("eager"):
        lowbit.quantize(x, "int8")
        with lowbit.backend("compiled"):
            assert lowbit.current_backend() == "compiled"
        lowbit.quantize(x, "int8", backend="native")
        assert lowbit.current_backend() == "eager"
    with pytest.raises(RuntimeError), lowbit.backend("native"):
        raise RuntimeError("boom")
    assert lowbit.current_backend() == "auto" and seen == ["eager", "native"]
    monkeypatch.setenv("LOWBIT_BACKEND", "eager")                # the documented default still works
    assert lowbit.current_backend() == "eager"
    with lowbit.backend(None):                                   # None keeps the current one
        assert lowbit.current_backend() == "eager"
    with pytest.raises(ValueError, match=r"^backend='gpu' is not allowed; allowed: auto, eager, compiled, native$"):
        lowbit.backend("gpu").__enter__()
    with pytest.raises(ValueError, match="backend='gpu' is not allowed"):
        PTQConfig(backend="gpu")
    from lowbit.search.evaluate import Evaluator                 # worker pools get the creator's backend
    with lowbit.backend("compiled"):
        assert Evaluator(torch.nn.Linear(2, 2), None).backend == "compiled"
    assert Evaluator(torch.nn.Linear(2, 2), None, backend="native").backend == "native"
